"""Logging in through MitID, FTN, Google and Facebook, over real HTTP against the emulator:
first logins, linking to an existing account only after proof, national-id binding, and
forged, replayed and too-weak upstream answers."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator

import pytest
import requests
from sqlalchemy import func, select

from broker.customers.digests import national_id_hmac
from broker.models import (
    AuditEvent,
    Binding,
    CustomerAccount,
    FederatedIdentity,
    Flow,
    User,
    Verification,
)
from broker.passwords import hash_password
from providers import load_or_create_provider_keys

from .live import LiveBroker, live_broker
from .test_providers_support import RunningEmulator, emulator  # noqa: F401 - fixture
from .upstream_support import PortalLogin, broker_config, emailed_code

KAREN_CPR = "0101801234"
MATTI_HETU = "010180-9026"


@pytest.fixture(scope="module")
def ftn_keys_file(emulator: RunningEmulator,  # noqa: F811
                  tmp_path_factory: pytest.TempPathFactory) -> str:
    """Our FTN keys in a file, registered with the emulator as the demo does."""
    path = tmp_path_factory.mktemp("ftn") / "ftn-keys.json"
    keys = load_or_create_provider_keys(path)
    response = requests.post(f"{emulator.url}/ftn/register-client",
                             json={"client_id": "broker-ftn", "jwks": keys.public_jwks()},
                             timeout=5)
    assert response.status_code == 201
    return str(path)


def _broker(url: str, emulator: RunningEmulator,  # noqa: F811
            ftn_keys_file: str) -> Iterator[LiveBroker]:
    with live_broker(lambda public: broker_config(url, public, emulator.url,
                                                  ftn_keys_file)) as live:
        yield live


@pytest.fixture
def broker(database_url: str, emulator: RunningEmulator,  # noqa: F811
           ftn_keys_file: str) -> Iterator[LiveBroker]:
    yield from _broker(database_url, emulator, ftn_keys_file)


@pytest.fixture
def sqlite_broker(sqlite_url: str, emulator: RunningEmulator,  # noqa: F811
                  ftn_keys_file: str) -> Iterator[LiveBroker]:
    yield from _broker(sqlite_url, emulator, ftn_keys_file)


def _count(broker: LiveBroker, model: type, *where: object) -> int:
    state = broker.app.extensions["broker"]
    with state.sessions() as db:
        return db.scalar(select(func.count()).select_from(model).where(*where)) or 0


def _user(broker: LiveBroker, tenant: str, email: str) -> User | None:
    state = broker.app.extensions["broker"]
    with state.sessions() as db:
        return db.scalar(select(User).where(User.tenant == tenant, User.email == email))


def _local_user(broker: LiveBroker, tenant: str, email: str, password: str | None) -> int:
    state = broker.app.extensions["broker"]
    config = state.config.tenants[tenant]
    with state.sessions() as db, db.begin():
        user = User(tenant=tenant, subject=secrets.token_hex(16), email=email,
                    email_verified=True, name="Local Person", status="active",
                    password_hash=hash_password(config, password) if password else None)
        db.add(user)
        db.flush()
        return user.id


# --- MitID (seed 000) ---------------------------------------------------------------------------


def test_mitid_first_login_asks_for_an_email_and_the_portal_gets_amr_mitid_and_substantial(
        broker):
    trip = PortalLogin(broker, "aaro-vand")
    login_page = trip.authorize()
    assert f"/t/aaro-vand/login/mitid?flow={trip.flow_id}" in login_page.text

    ask_email = trip.login_with("mitid", "karen")
    assert "Your email address" in ask_email.text
    assert _count(broker, User) == 0

    enter_code = trip.submit(ask_email, "/email", email="Karen.Jensen@Example.dk")
    assert "We have sent a 6-digit code to karen.jensen@example.dk" in enter_code.text
    done = trip.submit(enter_code, "/code", code=emailed_code(broker, "karen.jensen@example.dk"))

    claims = trip.tokens(done)
    assert claims["amr"] == ["mitid"]
    assert claims["acr"] == "substantial"
    assert claims["email"] == "karen.jensen@example.dk"
    assert claims["name"] == "Karen Jensen"
    assert _count(broker, FederatedIdentity, FederatedIdentity.provider == "mitid") == 1

    # Seed 000: the next MitID login goes straight in, even from another browser.
    again = PortalLogin(broker, "aaro-vand")
    again.authorize()
    straight = again.login_with("mitid", "karen")
    second = again.tokens(straight)
    assert second["sub"] == claims["sub"]
    assert second["amr"] == ["mitid"]
    assert _count(broker, User) == 1


# --- Google and Facebook (seed 004) -------------------------------------------------------------


def test_google_first_login_with_a_verified_email_creates_the_user_and_goes_in(sqlite_broker):
    trip = PortalLogin(sqlite_broker, "norrnat")
    trip.authorize()
    claims = trip.tokens(trip.login_with("google", "anna"))

    assert claims["amr"] == ["google"]
    assert claims["acr"] == "low"
    assert trip.browser.get(f"{trip.issuer}/login/mitid").status_code == 404  # not offered here
    user = _user(sqlite_broker, "norrnat", "anna.svensson@gmail.example")
    assert user is not None and user.status == "active" and user.email_verified
    assert user.name == "Anna Svensson"
    assert claims["sub"] == user.subject
    assert _count(sqlite_broker, FederatedIdentity, FederatedIdentity.user_id == user.id,
                  FederatedIdentity.provider == "google") == 1


def test_facebook_without_email_asks_for_one_and_only_a_right_code_creates_the_user(
        sqlite_broker):
    trip = PortalLogin(sqlite_broker, "norrnat")
    trip.authorize()
    ask_email = trip.login_with("facebook", "nils")
    assert "Your email address" in ask_email.text

    enter_code = trip.submit(ask_email, "/email", email="nils.aberg@example.se")
    right = emailed_code(sqlite_broker, "nils.aberg@example.se")
    wrong = trip.submit(enter_code, "/code", code=f"{(int(right) + 1) % 1000000:06d}")
    assert wrong.status_code == 400
    assert "That code is not right" in wrong.text
    assert _count(sqlite_broker, User) == 0

    claims = trip.tokens(trip.submit(wrong, "/code", code=right))
    assert claims["email"] == "nils.aberg@example.se"
    assert claims["email_verified"] is True
    assert claims["amr"] == ["facebook"]


def test_a_code_tried_too_often_stops_working_even_when_right(sqlite_broker):
    trip = PortalLogin(sqlite_broker, "norrnat")
    trip.authorize()
    enter_code = trip.submit(trip.login_with("facebook", "nils"), "/email",
                             email="nils.aberg@example.se")
    right = emailed_code(sqlite_broker, "nils.aberg@example.se")
    tries = sqlite_broker.app.extensions["broker"].config.tenants["norrnat"].activation_max_tries
    page = enter_code
    for guess in range(tries):
        page = trip.submit(page, "/code", code=f"{(int(right) + 1 + guess) % 1000000:06d}")
        assert "That code is not right" in page.text
    spent = trip.submit(page, "/code", code=right)
    assert spent.status_code == 400
    assert "tried too many times" in spent.text
    assert _count(sqlite_broker, User) == 0


def test_the_first_login_pages_do_nothing_in_another_browser(sqlite_broker):
    trip = PortalLogin(sqlite_broker, "norrnat")
    trip.authorize()
    ask_email = trip.login_with("facebook", "nils")
    elsewhere = requests.Session()
    page = elsewhere.get(ask_email.url, timeout=5)
    assert page.status_code == 400
    assert "opened in another browser" in page.text
    posted = elsewhere.post(ask_email.url + "/email", data={"email": "x@example.se"}, timeout=5)
    assert posted.status_code == 400
    assert _count(sqlite_broker, Verification) == 0


def test_facebook_and_microsoft_personal_emails_are_not_trusted_without_a_code(sqlite_broker):
    for kind, persona in (("facebook", "maja"), ("microsoft", "personal")):
        trip = PortalLogin(sqlite_broker, "norrnat")
        trip.authorize()
        page = trip.login_with(kind, persona)
        assert "Your email address" in page.text, kind
    assert _count(sqlite_broker, User) == 0


# --- an existing account with the same email: proof before linking ------------------------------


def test_existing_account_is_linked_only_after_its_right_password(broker):
    owner_id = _local_user(broker, "aaro-vand", "anna.svensson@gmail.example", "Vand&Affald7")
    trip = PortalLogin(broker, "aaro-vand")
    trip.authorize()
    prove = trip.login_with("google", "anna")
    assert "already exists" in prove.text
    assert _count(broker, FederatedIdentity) == 0

    wrong = trip.submit(prove, "/password", password="Not-the-one-9")
    assert wrong.status_code == 400
    assert "That password is not right" in wrong.text
    assert _count(broker, FederatedIdentity) == 0

    claims = trip.tokens(trip.submit(wrong, "/password", password="Vand&Affald7"))
    assert _count(broker, User) == 1
    assert _count(broker, FederatedIdentity, FederatedIdentity.user_id == owner_id) == 1
    assert claims["sub"] == _user(broker, "aaro-vand", "anna.svensson@gmail.example").subject
    assert _count(broker, AuditEvent, AuditEvent.event == "identity_linked",
                  AuditEvent.target_user_id == owner_id) == 1


def test_existing_account_is_linked_only_after_the_code_sent_to_its_address(sqlite_broker):
    owner_id = _local_user(sqlite_broker, "norrnat", "anna.svensson@gmail.example", None)
    trip = PortalLogin(sqlite_broker, "norrnat")
    trip.authorize()
    prove = trip.login_with("google", "anna")
    assert 'name="password"' not in prove.text  # no password to prove with: a code only

    enter_code = trip.submit(prove, "/send-code")
    right = emailed_code(sqlite_broker, "anna.svensson@gmail.example")
    wrong = trip.submit(enter_code, "/code", code=f"{(int(right) + 7) % 1000000:06d}")
    assert wrong.status_code == 400
    assert _count(sqlite_broker, FederatedIdentity) == 0

    trip.tokens(trip.submit(wrong, "/code", code=right))
    assert _count(sqlite_broker, FederatedIdentity, FederatedIdentity.user_id == owner_id) == 1
    assert _count(sqlite_broker, User) == 1


def test_a_typed_email_of_an_existing_account_links_only_after_its_code(sqlite_broker):
    owner_id = _local_user(sqlite_broker, "norrnat", "nils@example.se", None)
    trip = PortalLogin(sqlite_broker, "norrnat")
    trip.authorize()
    ask_email = trip.login_with("facebook", "nils")
    enter_code = trip.submit(ask_email, "/email", email="nils@example.se")
    trip.tokens(trip.submit(enter_code, "/code", code=emailed_code(sqlite_broker,
                                                                   "nils@example.se")))
    assert _count(sqlite_broker, FederatedIdentity, FederatedIdentity.user_id == owner_id) == 1
    assert _count(sqlite_broker, User) == 1


# --- forged, replayed and too weak --------------------------------------------------------------


def test_a_forged_upstream_id_token_is_refused_and_creates_no_user(
        sqlite_broker, emulator):  # noqa: F811
    trip = PortalLogin(sqlite_broker, "norrnat")
    trip.authorize()
    emulator.next_token_defect("google", "forged_signature")
    page = trip.login_with("google", "anna")

    assert page.status_code == 400
    assert "We could not confirm the answer from Google" in page.text
    assert "Nothing was changed" in page.text
    assert _count(sqlite_broker, User) == 0
    assert _count(sqlite_broker, FederatedIdentity) == 0
    assert _count(sqlite_broker, AuditEvent, AuditEvent.event == "upstream_login_failed",
                  AuditEvent.reason == "bad_signature") == 1


def test_a_callback_works_once_and_only_in_the_browser_that_started_it(sqlite_broker):
    trip = PortalLogin(sqlite_broker, "norrnat")
    trip.authorize()
    callback = trip.upstream("google", "anna")

    elsewhere = requests.get(callback, allow_redirects=False, timeout=5)
    assert elsewhere.status_code == 400
    assert "started in another browser" in elsewhere.text

    trip.tokens(trip.open(callback))
    replay = trip.open(callback)
    assert replay.status_code == 400
    assert "already used" in replay.text
    assert _count(sqlite_broker, FederatedIdentity) == 1


def test_a_portal_demanding_substantial_refuses_a_google_login(sqlite_broker):
    trip = PortalLogin(sqlite_broker, "aaro-vand")
    trip.authorize(acr_values="substantial")
    page = trip.login_with("google", "anna")

    assert page.status_code == 400
    assert "needs a stronger login than Google" in page.text
    assert _count(sqlite_broker, User) == 0
    assert _count(sqlite_broker, AuditEvent, AuditEvent.reason == "acr_too_low") == 1


# --- FTN and the national identity (seed 002) ---------------------------------------------------


def _customer(broker: LiveBroker, number: str, national_id: str) -> None:
    state = broker.app.extensions["broker"]
    with state.sessions() as db, db.begin():
        db.add(CustomerAccount(
            tenant="stadsenergi", number=number, kind="private", name="Matti Virtanen",
            address_label="Esplanaden 5, Helsingfors", email="matti@example.fi",
            phone="+358 40 1234567",
            national_id_hmac=national_id_hmac(state.config.hmac_key, national_id, "FI"),
        ))


def test_ftn_login_binds_the_customer_with_that_identity_code_and_prefills_the_profile(
        sqlite_broker):
    _customer(sqlite_broker, "7700123", MATTI_HETU)
    trip = PortalLogin(sqlite_broker, "stadsenergi")
    trip.authorize()
    ask_email = trip.login_with("ftn", "matti")
    assert "Your email address" in ask_email.text
    state = sqlite_broker.app.extensions["broker"]
    with state.sessions() as db:
        stored = json.dumps([flow.data for flow in db.scalars(select(Flow))])
    assert MATTI_HETU not in stored and MATTI_HETU.replace("-", "") not in stored

    enter_code = trip.submit(ask_email, "/email", email="matti@example.fi")
    profile = trip.submit(enter_code, "/code",
                          code=emailed_code(sqlite_broker, "matti@example.fi"))
    assert "We found your customer account" in profile.text
    assert "7700123" in profile.text
    assert 'value="+358 40 1234567"' in profile.text

    claims = trip.tokens(trip.submit(profile, "/profile", name="Matti K. Virtanen",
                                     email="matti@example.fi", phone="+358 40 1234567"))
    assert claims["amr"] == ["ftn"]
    user = _user(sqlite_broker, "stadsenergi", "matti@example.fi")
    assert user.name == "Matti K. Virtanen" and user.phone == "+358401234567"
    assert _count(sqlite_broker, Binding, Binding.user_id == user.id,
                  Binding.proof == "national_id") == 1
    with state.sessions() as db:
        linked = db.scalar(select(FederatedIdentity).where(FederatedIdentity.user_id == user.id))
    assert linked.national_id_hmac == national_id_hmac(state.config.hmac_key, MATTI_HETU, "FI")


def test_ftn_login_without_a_matching_customer_shows_support_and_lets_the_user_continue(
        sqlite_broker):
    _customer(sqlite_broker, "7700123", MATTI_HETU)
    trip = PortalLogin(sqlite_broker, "stadsenergi")
    trip.authorize()
    ask_email = trip.login_with("ftn", "aino")
    enter_code = trip.submit(ask_email, "/email", email="aino@example.fi")
    profile = trip.submit(enter_code, "/code", code=emailed_code(sqlite_broker,
                                                                 "aino@example.fi"))
    assert "could not find a customer account" in profile.text
    assert "+358 9 617 8080" in profile.text

    trip.tokens(trip.submit(profile, "/profile", name="Aino Korhonen", email="aino@example.fi",
                            phone=""))
    assert _count(sqlite_broker, Binding) == 0


# --- the profile's linked logins ----------------------------------------------------------------


def test_the_last_login_cannot_be_unlinked_until_another_is_connected(sqlite_broker):
    trip = PortalLogin(sqlite_broker, "norrnat")
    trip.authorize()
    trip.tokens(trip.login_with("google", "anna"))
    page = trip.open(f"{trip.issuer}/profile/identities")
    assert "Google" in page.text and "Anna Svensson" in page.text

    refused = trip.submit(page, "/profile/identities")
    assert refused.status_code == 400
    assert "This is your only way to log in" in refused.text
    assert _count(sqlite_broker, FederatedIdentity) == 1

    link = re.search(r'href="([^"]*/login/facebook\?[^"]*link=1[^"]*)"', refused.text)
    assert link, refused.text
    linked = trip.open(trip.upstream_from(link.group(1), "maja"))
    assert "The login is now connected to your account" in linked.text
    assert "Facebook" in linked.text
    assert _count(sqlite_broker, FederatedIdentity) == 2

    unlinked = trip.submit(linked, "/profile/identities")  # the first row: Google
    assert "The login was disconnected" in unlinked.text
    user = _user(sqlite_broker, "norrnat", "anna.svensson@gmail.example")
    assert _count(sqlite_broker, FederatedIdentity, FederatedIdentity.user_id == user.id,
                  FederatedIdentity.provider == "facebook") == 1
    assert _count(sqlite_broker, FederatedIdentity) == 1
    assert _count(sqlite_broker, AuditEvent, AuditEvent.event == "identity_unlinked",
                  AuditEvent.outcome == "ok") == 1


def test_a_facebook_login_linked_to_one_account_cannot_be_linked_to_another(sqlite_broker):
    first = PortalLogin(sqlite_broker, "norrnat")
    first.authorize()
    first.tokens(first.login_with("google", "anna"))
    linked = first.open(first.upstream_from("/t/norrnat/login/facebook?link=1", "maja"))
    assert "now connected" in linked.text

    second = PortalLogin(sqlite_broker, "norrnat")
    second.authorize()
    ask_email = second.login_with("google", "olof")
    enter_code = second.submit(ask_email, "/email", email="olof@example.se")
    second.tokens(second.submit(enter_code, "/code",
                                code=emailed_code(sqlite_broker, "olof@example.se")))
    refused = second.open(second.upstream_from("/t/norrnat/login/facebook?link=1", "maja"))
    assert refused.status_code == 409
    assert "already connected to another account" in refused.text
    olof = _user(sqlite_broker, "norrnat", "olof@example.se")
    assert _count(sqlite_broker, FederatedIdentity, FederatedIdentity.user_id == olof.id) == 1
