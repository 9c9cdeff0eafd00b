"""Hypothesis against the forms and the token endpoint: no input makes a server error, and an
input the broker refuses changes no row.

"Changes no row" compares every table's content before and after the request, apart from the
bookkeeping a refusal is meant to write (tests/fuzzing.py says which). Throttles are off and
the lock limit is high, so every example reaches the form's real logic instead of a 429.
"""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker import login_session

from .conftest import PORTAL_SECRET
from .fuzzing import (
    ANY_TEXT,
    ASCII,
    BILL_CODE,
    CUSTOMER_NUMBER,
    FUZZ,
    KNOWN_EMAIL,
    KNOWN_PASSWORD,
    PORTAL,
    REDIRECT,
    TENANT,
    make_fuzz_app,
    post_and_check,
)
from .fuzzing import form as _form


@pytest.fixture
def fuzz_app(database_url):  # type: ignore[no-untyped-def]
    app = make_fuzz_app(database_url)
    yield app
    app.extensions["broker"].engine.dispose()


def test_the_login_form_never_fails_and_a_refused_login_changes_nothing(fuzz_app):
    email = st.one_of(ANY_TEXT, st.just(KNOWN_EMAIL), st.just(" KNOWN@example.dk "))
    password = st.one_of(ANY_TEXT, st.just(KNOWN_PASSWORD))

    @FUZZ
    @given(_form(email=email, password=password, flow=ANY_TEXT, remember=ANY_TEXT))
    def check(form: dict[str, str]) -> None:
        post_and_check(fuzz_app, f"/t/{TENANT}/login", form,
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
        post_and_check(fuzz_app, f"/t/{TENANT}/register", form,
                        refused=lambda answer: answer.status_code >= 400)

    check()


def test_the_forgot_password_form_never_fails_and_a_refused_request_changes_nothing(fuzz_app):
    email = st.one_of(ANY_TEXT, st.emails().map(str), st.just(KNOWN_EMAIL))

    @FUZZ
    @given(_form(email=email))
    def check(form: dict[str, str]) -> None:
        post_and_check(fuzz_app, f"/t/{TENANT}/forgot-password", form,
                        refused=lambda answer: answer.status_code >= 400)

    check()


def test_the_binding_form_never_fails_and_a_refused_proof_binds_nothing(fuzz_app):
    number = st.one_of(ANY_TEXT, st.just(CUSTOMER_NUMBER))
    proof = st.one_of(ANY_TEXT, st.just(BILL_CODE))
    kind = st.one_of(ANY_TEXT, st.sampled_from(["bill_code", "pin", "invoice"]))

    @FUZZ
    @given(_form(customer_number=number, proof_kind=kind, proof_value=proof, flow=ANY_TEXT))
    def check(form: dict[str, str]) -> None:
        post_and_check(fuzz_app, f"/t/{TENANT}/customer-accounts", form,
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
        post_and_check(fuzz_app, f"/t/{TENANT}/token", form,
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
