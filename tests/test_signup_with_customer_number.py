"""Registration that asks for the customer number and PIN first (seed 001, fjordvarme).

The right PIN creates the user and its owner binding together; a wrong one refuses the whole
registration with an error on the PIN field, creates nothing, sends nothing, and still counts
toward the customer number's attempt limit.
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
import secrets
from urllib.parse import parse_qs, urlparse

import pytest
import requests
from joserfc import jwt
from joserfc.jwk import KeySet
from sqlalchemy import func, select

from broker.config import parse_config
from broker.customers.importer import import_stream
from broker.models import AttemptCounter, AuditEvent, Binding, OutboxMessage, User
from flows.binding import binding_attempt_key

from .accounts_support import (
    GOOD_PASSWORD,
    code_in,
    db_session,
    last_mail,
    mails_to,
    register,
    running_app,
    user,
    without_csrf,
)
from .conftest import PORTAL_SECRET, make_config
from .customers_support import as_csv, customer_rows
from .live import follow_to_portal, live_broker, submit_form

SLUG = "fjordvarme"
ROWS = customer_rows(3)
KARI = ROWS[1]  # customer 100001 with PIN KARI["pin"]
WRONG_PIN = "000000" if KARI["pin"] != "000000" else "111111"
REDIRECT = f"http://portal.test/{SLUG}/callback"


def _load_customers(app) -> None:  # type: ignore[no-untyped-def]
    state = app.extensions["broker"]
    import_stream(state.engine, state.config.tenants[SLUG], state.config.hmac_key,
                  io.StringIO(as_csv(ROWS)), "csv")


@pytest.fixture
def broker_app(sqlite_url):  # type: ignore[no-untyped-def]
    for application in running_app(sqlite_url):
        _load_customers(application)
        yield application


def _signup(client, email: str, pin: str, number: str = KARI["customer_number"], **extra: str):  # type: ignore[no-untyped-def]
    return register(client, SLUG, email, customer_number=number, proof_value=pin, **extra)


def _count(app, model, *where) -> int:  # type: ignore[no-untyped-def]
    with db_session(app) as session:
        return session.scalar(select(func.count()).select_from(model).where(*where)) or 0


def _failures(app, number: str = KARI["customer_number"]) -> int:  # type: ignore[no-untyped-def]
    with db_session(app) as session:
        return session.scalar(select(AttemptCounter.failures).where(
            AttemptCounter.key == binding_attempt_key(SLUG, number))) or 0


def test_the_form_asks_for_customer_number_and_pin_before_the_email(broker_app):
    page = broker_app.test_client().get(f"/t/{SLUG}/register").get_data(as_text=True)
    assert page.index('name="customer_number"') < page.index('name="proof_value"') \
        < page.index('name="email"') < page.index('name="password"')
    assert '<label for="proof_value">PIN code</label>' in page
    assert f'href="/t/{SLUG}/forgot-pin"' in page


def test_a_tenant_that_does_not_ask_at_signup_shows_no_customer_number(broker_app):
    page = broker_app.test_client().get("/t/aaro-vand/register").get_data(as_text=True)
    assert 'name="customer_number"' not in page


def test_the_right_pin_creates_a_pending_user_that_owns_the_customer_account(broker_app):
    response = _signup(broker_app.test_client(), "kari@example.no", KARI["pin"])
    assert response.status_code == 200
    assert "Check your email" in response.get_data(as_text=True)
    stored = user(broker_app, "kari@example.no")
    assert stored is not None and stored.status == "pending"
    with db_session(broker_app) as session:
        [binding] = session.scalars(select(Binding).where(Binding.user_id == stored.id)).all()
        assert (binding.role, binding.proof) == ("owner", "pin")
    assert len(mails_to(broker_app, "kari@example.no")) == 1


def test_a_wrong_pin_refuses_everything_with_an_error_on_the_pin_field(broker_app):
    response = _signup(broker_app.test_client(), "kari@example.no", WRONG_PIN)
    page = response.get_data(as_text=True)
    assert response.status_code == 400
    assert 'id="proof_value-error"' in page
    assert "The customer number and code do not match our records." in page
    assert f'value="{KARI["customer_number"]}"' in page and WRONG_PIN not in page
    assert user(broker_app, "kari@example.no") is None
    assert _count(broker_app, OutboxMessage) == 0
    assert _count(broker_app, Binding) == 0
    assert _failures(broker_app) == 1  # committed on its own, after the rollback
    assert _count(broker_app, AuditEvent, AuditEvent.event == "binding_failed") == 1


@pytest.fixture
def broker_app_on_each_database(database_url):  # type: ignore[no-untyped-def]
    for application in running_app(database_url):
        _load_customers(application)
        yield application


def test_an_overlong_customer_number_is_a_field_error_not_a_server_error(
        broker_app_on_each_database):
    """Its attempt counter's key would overflow on PostgreSQL: refused before any lookup."""
    app = broker_app_on_each_database
    response = _signup(app.test_client(), "kari@example.no", WRONG_PIN, number="7" * 5000)
    assert response.status_code == 400
    assert 'id="customer_number-error"' in response.get_data(as_text=True)
    assert user(app, "kari@example.no") is None and _count(app, OutboxMessage) == 0


def test_wrong_pins_at_signup_lock_the_customer_number_even_for_the_right_pin(broker_app):
    client = broker_app.test_client()
    limit = broker_app.extensions["broker"].config.tenants[SLUG].lockout.max_attempts
    for attempt in range(limit):
        assert _signup(client, f"guess{attempt}@example.no", WRONG_PIN).status_code == 400
    response = _signup(client, "kari@example.no", KARI["pin"])
    page = response.get_data(as_text=True)
    assert response.status_code == 400
    assert 'id="customer_number-error"' in page and "Too many wrong attempts" in page
    assert user(broker_app, "kari@example.no") is None
    assert _count(broker_app, User) == 0 and _count(broker_app, OutboxMessage) == 0


def test_guesses_spread_over_many_addresses_and_numbers_count_per_customer_number(broker_app):
    client = broker_app.test_client()
    _signup(client, "a@example.no", WRONG_PIN)
    _signup(client, "b@example.no", WRONG_PIN)
    _signup(client, "c@example.no", WRONG_PIN, number="999999")  # no such customer
    assert _failures(broker_app) == 2
    assert _failures(broker_app, "999999") == 1


def test_a_known_address_with_a_wrong_pin_gets_the_same_page_as_a_new_address(broker_app):
    client = broker_app.test_client()
    register(client, SLUG, "kari@example.no")  # registered earlier, without a number
    known = _signup(client, "kari@example.no", WRONG_PIN)
    fresh = _signup(client, "ola@example.no", WRONG_PIN)
    assert known.status_code == fresh.status_code == 400
    assert without_csrf(known.get_data()) == \
        without_csrf(fresh.get_data()).replace(b"ola@example.no", b"kari@example.no")
    assert len(mails_to(broker_app, "kari@example.no")) == 1  # only the first registration's
    assert _failures(broker_app) == 2


def test_a_known_address_with_the_right_pin_binds_nothing_and_its_owner_is_told(broker_app):
    client = broker_app.test_client()
    register(client, SLUG, "kari@example.no")
    response = _signup(client, "kari@example.no", KARI["pin"], name="Someone Else")
    assert response.status_code == 200 and "Check your email" in response.get_data(as_text=True)
    assert _count(broker_app, Binding) == 0
    assert len(mails_to(broker_app, "kari@example.no")) == 2


def test_a_customer_number_without_a_pin_is_an_error_on_the_pin_field(broker_app):
    response = _signup(broker_app.test_client(), "kari@example.no", "")
    assert response.status_code == 400
    assert 'id="proof_value-error"' in response.get_data(as_text=True)
    assert user(broker_app, "kari@example.no") is None and _failures(broker_app) == 0


def test_a_pin_sent_by_the_forgot_pin_page_registers_once(broker_app):
    client = broker_app.test_client()
    client.post(f"/t/{SLUG}/forgot-pin", data={"channel": "sms", "phone": KARI["phone"]})
    [sms] = [m for m in mails_to(broker_app, "+4790000001") if m.channel == "sms"]
    pin = re.search(r"PIN(?:-kode)? (\d{6})", sms.body_text).group(1)
    assert _signup(client, "kari@example.no", pin).status_code == 200
    assert _signup(client, "ola@example.no", pin).status_code == 400  # spent
    assert _count(broker_app, Binding) == 1


# --- End to end over real HTTP: register, activate, log in at the portal, read the ID token --


def _config(database_url: str, url: str):  # type: ignore[no-untyped-def]
    data = make_config(database_url, public_url=url, csrf_protection=True).model_dump()
    data["tenants"][SLUG].update(argon2_time_cost=1, argon2_memory_kib=8192)
    return parse_config(data)


def _portal_login(broker, email: str) -> dict:  # type: ignore[no-untyped-def]
    """A portal's code + PKCE login with the password; returns the ID token's claims."""
    issuer = broker.issuer(SLUG)
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    browser = requests.Session()
    login_page = follow_to_portal(browser, browser.get(f"{issuer}/authorize", params={
        "response_type": "code", "client_id": "demo-portal", "redirect_uri": REDIRECT,
        "scope": "openid profile customer_accounts", "state": "s", "nonce": "n",
        "code_challenge": challenge.rstrip(b"=").decode(), "code_challenge_method": "S256",
    }, allow_redirects=False))
    done = follow_to_portal(browser, submit_form(browser, login_page, "/login", email=email,
                                    password=GOOD_PASSWORD))
    assert done.headers["Location"].startswith(REDIRECT), done.text
    code = parse_qs(urlparse(done.headers["Location"]).query)["code"][0]
    token = requests.post(f"{issuer}/token", auth=("demo-portal", PORTAL_SECRET), data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
        "code_verifier": verifier}).json()
    keys = KeySet.import_key_set(requests.get(f"{issuer}/jwks").json())
    return jwt.decode(token["id_token"], keys).claims


def test_fjordvarme_signup_with_pin_then_the_portals_id_token_lists_the_account(database_url):
    with live_broker(lambda url: _config(database_url, url)) as broker:
        _load_customers(broker.app)
        browser = requests.Session()
        form = browser.get(f"{broker.issuer(SLUG)}/register")
        refused = submit_form(browser, form, "/register", customer_number="100 001",
                          proof_value=WRONG_PIN, email="kari@example.no", name="Kari Nordmann",
                          password=GOOD_PASSWORD, password_confirmation=GOOD_PASSWORD,
                          privacy="on")
        assert refused.status_code == 400 and "do not match our records" in refused.text
        assert user(broker.app, "kari@example.no") is None

        sent = submit_form(browser, refused, "/register", customer_number="100 001",
                       proof_value=KARI["pin"], email="kari@example.no", name="Kari Nordmann",
                       password=GOOD_PASSWORD, password_confirmation=GOOD_PASSWORD,
                       privacy="on")
        assert sent.status_code == 200 and "Check your email" in sent.text
        activated = submit_form(browser, sent, "/activate", email="kari@example.no",
                            code=code_in(last_mail(broker.app, "kari@example.no")))
        assert activated.status_code in (302, 303)

        claims = _portal_login(broker, "kari@example.no")
        assert claims["customer_accounts"] == [
            {"number": "100001", "kind": "private", "role": "owner", "name": KARI["name"]}
        ]
