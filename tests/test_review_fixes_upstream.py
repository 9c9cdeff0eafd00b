"""Security review fixes for upstream logins, over real HTTP against the emulator: linking an
account keeps its second factor, email codes cannot be brute-forced across journeys, a pending
account proven by a code loses a squatter's password, each start gets its own browser token,
and a malformed identity id is a 400."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pyotp
import pytest
from sqlalchemy import func, select

from broker.models import FederatedIdentity, LoginSession, User
from broker.passwords import hash_password

from .live import LiveBroker, live_broker
from .test_providers_support import RunningEmulator, emulator  # noqa: F401 - fixture
from .test_upstream_login import ftn_keys_file  # noqa: F401 - fixture
from .upstream_support import PortalLogin, broker_config, emailed_code


@pytest.fixture
def live(sqlite_url: str, emulator: RunningEmulator,  # noqa: F811
         ftn_keys_file: str) -> Iterator[LiveBroker]:  # noqa: F811
    with live_broker(lambda public: broker_config(sqlite_url, public, emulator.url,
                                                  ftn_keys_file)) as running:
        running.app.config["PROPAGATE_EXCEPTIONS"] = False
        yield running


def _add_user(live: LiveBroker, tenant: str, email: str, **fields: object) -> int:
    state = live.app.extensions["broker"]
    with state.sessions.begin() as db:
        user = User(tenant=tenant, subject=secrets.token_hex(16), email=email, name="Anna",
                    **{"status": "active", "email_verified": True, **fields})
        db.add(user)
        db.flush()
        return user.id


def _count(live: LiveBroker, model: type, *where: object) -> int:
    with live.app.extensions["broker"].sessions() as db:
        return db.scalar(select(func.count()).select_from(model).where(*where)) or 0


def _email_code_reaches_totp(live: LiveBroker):  # type: ignore[no-untyped-def]
    """Google as Anna, her account found by address, its emailed code given: the TOTP step."""
    trip = PortalLogin(live, "norrnat")
    trip.authorize()
    enter_code = trip.submit(trip.login_with("google", "anna"), "/send-code")
    return trip, trip.submit(enter_code, "/code",
                             code=emailed_code(live, "anna.svensson@gmail.example"))


def test_linking_an_account_with_totp_by_its_email_code_still_asks_for_the_totp_code(live):
    secret = pyotp.random_base32()
    _add_user(live, "norrnat", "anna.svensson@gmail.example", totp_secret=secret)
    trip, after_code = _email_code_reaches_totp(live)
    assert after_code.status_code == 200 and "/login/totp" in after_code.url
    assert _count(live, LoginSession) == 0  # no session on one factor
    claims = trip.tokens(trip.submit(after_code, "/login/totp",
                                     code=pyotp.TOTP(secret).now()))
    assert "otp" in claims.get("amr", ["otp"])


def _reaches_the_portal(answer) -> bool:  # type: ignore[no-untyped-def]
    return answer.status_code == 302 and answer.headers["Location"].startswith(
        "http://portal.test")


def test_an_abandoned_totp_step_leaves_no_link_to_log_in_through(live):
    """The attacker holds the mailbox, not the TOTP device: the email code links nothing."""
    secret = pyotp.random_base32()
    _add_user(live, "norrnat", "anna.svensson@gmail.example", totp_secret=secret)
    trip, after_code = _email_code_reaches_totp(live)
    assert "/login/totp" in after_code.url  # the attacker stops here
    assert _count(live, FederatedIdentity) == 0

    again = PortalLogin(live, "norrnat")
    again.authorize()
    answer = again.login_with("google", "anna")
    assert not _reaches_the_portal(answer)  # the journey asks for proof again
    assert _count(live, LoginSession) == 0 and _count(live, FederatedIdentity) == 0


def test_the_link_is_made_by_the_right_totp_code_and_then_skips_the_journey(live):
    secret = pyotp.random_base32()
    user_id = _add_user(live, "norrnat", "anna.svensson@gmail.example", totp_secret=secret)
    trip, after_code = _email_code_reaches_totp(live)
    first = trip.tokens(trip.submit(after_code, "/login/totp", code=pyotp.TOTP(secret).now()))
    assert _count(live, FederatedIdentity, FederatedIdentity.user_id == user_id,
                  FederatedIdentity.provider == "google") == 1

    again = PortalLogin(live, "norrnat")
    again.authorize()
    answer = again.login_with("google", "anna")
    assert _reaches_the_portal(answer)  # a linked upstream login is the user's own factor
    assert again.tokens(answer)["sub"] == first["sub"]


def test_linking_by_password_also_asks_for_the_totp_code(live):
    tenant = live.app.extensions["broker"].config.tenants["aaro-vand"]
    _add_user(live, "aaro-vand", "anna.svensson@gmail.example",
              password_hash=hash_password(tenant, "Vand&Affald7"),
              totp_secret=pyotp.random_base32())
    trip = PortalLogin(live, "aaro-vand")
    trip.authorize()
    after = trip.submit(trip.login_with("google", "anna"), "/password", password="Vand&Affald7")
    assert after.status_code == 200 and "/login/totp" in after.url
    assert _count(live, LoginSession) == 0


def test_new_journeys_buy_no_extra_guesses_at_one_mailbox(live):
    email = "nils.aberg@example.se"
    tries = live.app.extensions["broker"].config.tenants["norrnat"].activation_max_tries
    trip = PortalLogin(live, "norrnat")
    trip.authorize()
    page = trip.submit(trip.login_with("facebook", "nils"), "/email", email=email)
    right = emailed_code(live, email)
    for guess in range(tries):
        page = trip.submit(page, "/code", code=f"{(int(right) + 1 + guess) % 1000000:06d}")
    fresh = PortalLogin(live, "norrnat")
    fresh.authorize()
    page = fresh.submit(fresh.login_with("facebook", "nils"), "/email", email=email)
    refused = fresh.submit(page, "/code", code=emailed_code(live, email))  # even the right one
    assert refused.status_code == 400 and "tried too many times" in refused.text
    assert _count(live, User) == 0


def test_a_code_proof_activates_a_pending_account_without_the_squatters_password(live):
    tenant = live.app.extensions["broker"].config.tenants["norrnat"]
    user_id = _add_user(live, "norrnat", "nils@example.se", status="pending",
                        email_verified=False,
                        password_hash=hash_password(tenant, "Squatter-Owns-It-42"))
    trip = PortalLogin(live, "norrnat")
    trip.authorize()
    page = trip.submit(trip.login_with("facebook", "nils"), "/email", email="nils@example.se")
    trip.tokens(trip.submit(page, "/code", code=emailed_code(live, "nils@example.se")))
    with live.app.extensions["broker"].sessions() as db:
        user = db.get(User, user_id)
        assert user.status == "active" and user.password_hash is None


def test_every_upstream_start_sets_a_new_browser_token(live):
    trip = PortalLogin(live, "norrnat")
    trip.authorize()
    start = f"{trip.issuer}/login/google?flow={trip.flow_id}"
    first = trip.browser.get(start, allow_redirects=False).cookies.get("upstream_browser")
    second = trip.browser.get(start, allow_redirects=False).cookies.get("upstream_browser")
    assert first and second and first != second


def test_a_superscript_identity_id_is_a_bad_request_not_a_crash(live):
    trip = PortalLogin(live, "norrnat")
    trip.authorize()
    trip.tokens(trip.login_with("google", "anna"))
    page = trip.open(f"{trip.issuer}/profile/identities")
    answer = trip.submit(page, "/profile/identities", identity_id="²")
    assert answer.status_code == 400
    assert _count(live, FederatedIdentity) == 1
