"""Hypothesis against the forms and the token endpoint: no input makes a server error, and an
input the broker refuses changes no row.

"Changes no row" is checked as the row count of every table before and after the request.
Two tables are the security bookkeeping a refusal is *meant* to write, and are left out: the
audit log (a failed login or proof is an audited event) and the attempt counters (a wrong
guess is counted). Throttles are off (their own tests cover them) and the lock limit is high,
so every example reaches the form's real logic instead of a 429; argon2 uses its smallest
parameters so fifty logins stay cheap.
"""

from __future__ import annotations

import base64
import secrets
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from broker import login_session
from broker.app import create_app
from broker.config import BrokerConfig, parse_config
from broker.customers.digests import proof_hmac
from broker.models import Base, CustomerAccount, User
from broker.passwords import hash_password

from .conftest import PORTAL_SECRET, make_config

TENANT = "aaro-vand"
PORTAL = "demo-portal"
REDIRECT = f"http://portal.test/{TENANT}/callback"
KNOWN_EMAIL = "known@example.dk"
KNOWN_PASSWORD = "Kendt-Adgang-2024!"
CUSTOMER_NUMBER = "5500123"
BILL_CODE = "ZX98YU76"
BOOKKEEPING = {"audit_events", "attempt_counters"}
FUZZ = settings(max_examples=50, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])

# Any text a browser could send: every Unicode character except lone surrogates (which no
# UTF-8 form can carry), NUL and control characters included.
NASTY = [
    "", " ", "\x00", "a\x00@example.dk", "known@example.dk\x00", "%00", "\r\nBcc: x@y.z",
    "' OR 1=1 --", "<script>alert(1)</script>", "{{7*7}}", "\u202e\u0000\ufeff", "ø" * 400,
    "x" * 5000, "😀@😀.dk", "100234\x00", "+45 00 00 00 00\x00",
]
ANY_TEXT = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=300), st.sampled_from(NASTY)
)
ASCII = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=120)


def _fuzz_app(database_url: str):  # type: ignore[no-untyped-def]
    data = make_config(database_url).model_dump()
    tenant = data["tenants"][TENANT]
    tenant["argon2_time_cost"] = 1
    tenant["argon2_memory_kib"] = 8 * 1024
    tenant["lockout"]["max_attempts"] = 100
    if "throttle" in BrokerConfig.model_fields:
        data["throttle"] = {"enabled": False}
    app = create_app(parse_config(data, "fuzz config"))
    app.config["TESTING"] = True
    state = app.extensions["broker"]
    tenant_config = state.config.tenants[TENANT]
    with state.sessions() as db, db.begin():
        user = User(tenant=TENANT, subject=secrets.token_hex(16), email=KNOWN_EMAIL,
                    email_verified=True, name="Known User", status="active",
                    password_hash=hash_password(tenant_config, KNOWN_PASSWORD))
        db.add(user)
        db.add(CustomerAccount(
            tenant=TENANT, number=CUSTOMER_NUMBER, kind="private", name="Known User",
            bill_code_hmac=proof_hmac(state.config.hmac_key, "bill_code", BILL_CODE),
        ))
        db.flush()
        _, token = login_session.start(db, tenant_config, user, amr=["pwd"])
    app.config["FUZZ_SESSION_TOKEN"] = token
    state.services["keys"].ring(TENANT)  # the signing key is made on first use, not by a request
    return app


@pytest.fixture
def fuzz_app(database_url):  # type: ignore[no-untyped-def]
    app = _fuzz_app(database_url)
    yield app
    app.extensions["broker"].engine.dispose()


def _row_counts(app) -> dict[str, int]:  # type: ignore[no-untyped-def]
    with app.extensions["broker"].sessions() as db:
        return {
            table.name: db.scalar(select(func.count()).select_from(table)) or 0
            for table in Base.metadata.sorted_tables
            if table.name not in BOOKKEEPING
        }


def _post_and_check(app, path: str, form: dict[str, str], *, refused: Any,  # type: ignore[no-untyped-def]
                    headers: dict[str, str] | None = None, cookie: bool = False) -> None:
    client = app.test_client()
    if cookie:
        client.set_cookie(login_session.cookie_name(TENANT), app.config["FUZZ_SESSION_TOKEN"],
                          path=f"/t/{TENANT}")
    before = _row_counts(app)
    answer = client.post(path, data=form, headers=headers or {})
    assert answer.status_code < 500, (form, answer.get_data(as_text=True)[:500])
    if refused(answer):
        assert _row_counts(app) == before, (form, answer.status_code)


def _form(**fields: st.SearchStrategy[str]) -> st.SearchStrategy[dict[str, str]]:
    """Each field present or missing, holding any text."""
    return st.fixed_dictionaries({}, optional=fields)


def test_the_login_form_never_fails_and_a_refused_login_changes_nothing(fuzz_app):
    email = st.one_of(ANY_TEXT, st.just(KNOWN_EMAIL), st.just(" KNOWN@example.dk "))
    password = st.one_of(ANY_TEXT, st.just(KNOWN_PASSWORD))

    @FUZZ
    @given(_form(email=email, password=password, flow=ANY_TEXT, remember=ANY_TEXT))
    def check(form: dict[str, str]) -> None:
        _post_and_check(fuzz_app, f"/t/{TENANT}/login", form,
                        refused=lambda answer: answer.status_code != 302)

    check()


def test_the_registration_form_never_fails_and_a_refused_signup_changes_nothing(fuzz_app):
    good = "Vandhane-Blaa-2024!"
    email = st.one_of(ANY_TEXT, st.emails().map(str), st.just(KNOWN_EMAIL))
    password = st.one_of(ANY_TEXT, st.just(good))

    @FUZZ
    @given(_form(email=email, name=ANY_TEXT, password=password,
                 password_confirmation=password, phone=ANY_TEXT, privacy=st.just("on") | ANY_TEXT,
                 registration_type=ANY_TEXT, ebill=ANY_TEXT, customer_number=ANY_TEXT,
                 proof_value=ANY_TEXT))
    def check(form: dict[str, str]) -> None:
        _post_and_check(fuzz_app, f"/t/{TENANT}/register", form,
                        refused=lambda answer: answer.status_code >= 400)

    check()


def test_the_forgot_password_form_never_fails_and_a_refused_request_changes_nothing(fuzz_app):
    email = st.one_of(ANY_TEXT, st.emails().map(str), st.just(KNOWN_EMAIL))

    @FUZZ
    @given(_form(email=email))
    def check(form: dict[str, str]) -> None:
        _post_and_check(fuzz_app, f"/t/{TENANT}/forgot-password", form,
                        refused=lambda answer: answer.status_code >= 400)

    check()


def test_the_binding_form_never_fails_and_a_refused_proof_binds_nothing(fuzz_app):
    number = st.one_of(ANY_TEXT, st.just(CUSTOMER_NUMBER))
    proof = st.one_of(ANY_TEXT, st.just(BILL_CODE))
    kind = st.one_of(ANY_TEXT, st.sampled_from(["bill_code", "pin", "invoice"]))

    @FUZZ
    @given(_form(customer_number=number, proof_kind=kind, proof_value=proof, flow=ANY_TEXT))
    def check(form: dict[str, str]) -> None:
        _post_and_check(fuzz_app, f"/t/{TENANT}/customer-accounts", form,
                        refused=lambda answer: answer.status_code >= 400, cookie=True)

    check()


def _basic(user: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


def test_the_token_endpoint_never_fails_and_a_refused_request_changes_nothing(fuzz_app):
    grant = st.one_of(ANY_TEXT, st.sampled_from(
        ["authorization_code", "refresh_token", "client_credentials", "password"]))
    authorization = st.one_of(
        st.none(), ASCII, st.just(_basic(PORTAL, PORTAL_SECRET)),
        st.builds(_basic, ASCII, ASCII),
    )

    @FUZZ
    @given(_form(grant_type=grant, code=ANY_TEXT, redirect_uri=st.just(REDIRECT) | ANY_TEXT,
                 code_verifier=ANY_TEXT, refresh_token=ANY_TEXT, client_id=ANY_TEXT,
                 client_secret=ANY_TEXT, scope=ANY_TEXT, client_assertion=ANY_TEXT,
                 client_assertion_type=ANY_TEXT),
           authorization)
    def check(form: dict[str, str], header: str | None) -> None:
        _post_and_check(fuzz_app, f"/t/{TENANT}/token", form,
                        headers={"Authorization": header} if header else None,
                        refused=lambda answer: answer.status_code >= 400)

    check()


def test_a_nul_in_a_flow_id_is_refused_not_a_server_error(fuzz_app):
    """Found by the fuzzing above on PostgreSQL, whose text columns cannot hold a NUL: every
    request with a NUL in a field is now refused up front (broker/app.py)."""
    client = fuzz_app.test_client()
    client.set_cookie(login_session.cookie_name(TENANT), fuzz_app.config["FUZZ_SESSION_TOKEN"],
                      path=f"/t/{TENANT}")
    answer = client.get(f"/t/{TENANT}/authorize", query_string={
        "response_type": "code", "client_id": PORTAL, "redirect_uri": REDIRECT,
        "scope": "openid", "resume": "\x00", "code_challenge": "x" * 43,
        "code_challenge_method": "S256"})
    assert answer.status_code == 400
    assert client.get(f"/t/{TENANT}/login", query_string={"flow": "a\x00"}).status_code == 400
