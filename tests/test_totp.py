"""TOTP: enrolment from the profile with a server-rendered QR code, the login step, replay,
recovery codes, the attempt limit, and a tenant that requires it."""

from __future__ import annotations

import re
import time

import pyotp
import pytest
from sqlalchemy import select

from broker.models import LoginSession, RecoveryCode

from .accounts_support import (
    GOOD_PASSWORD,
    NO,
    db_session,
    last_mail,
    link_in,
    log_in,
    make_app,
    register_and_activate,
    user,
)

EMAIL = "kari@example.no"


def _app(sqlite_url, totp: str):  # type: ignore[no-untyped-def]
    application = make_app(sqlite_url, fjordvarme={"totp": totp})
    register_and_activate(application, NO, EMAIL)
    return application


@pytest.fixture
def optional_app(sqlite_url):  # type: ignore[no-untyped-def]
    application = _app(sqlite_url, "optional")
    yield application
    application.extensions["broker"].engine.dispose()


def _secret(page: str) -> str:
    match = re.search(r'id="totp-secret">([A-Z2-7]+)<', page)
    assert match, page
    return match.group(1)


def _enrol(app) -> tuple[str, list[str]]:  # type: ignore[no-untyped-def]
    """Log in with the password, turn TOTP on in the profile; returns secret and codes."""
    client = app.test_client()
    assert log_in(client, NO, EMAIL).status_code == 302
    page = client.get(f"/t/{NO}/profile/totp").get_data(as_text=True)
    assert 'src="data:image/svg+xml;base64,' in page and "<script" not in page
    secret = _secret(page)
    enrol_id = re.search(r'name="enrol" value="([^"]+)"', page).group(1)
    wrong = client.post(f"/t/{NO}/profile/totp", data={
        "enrol": enrol_id, "code": "000000", "current_password": GOOD_PASSWORD})
    assert wrong.status_code == 400 and user(app, EMAIL).totp_secret is None
    done = client.post(f"/t/{NO}/profile/totp", data={
        "enrol": enrol_id, "code": pyotp.TOTP(secret).now(), "current_password": GOOD_PASSWORD})
    codes = re.findall(r"<li><code>([a-z0-9-]+)</code></li>", done.get_data(as_text=True))
    assert len(codes) == 10
    return secret, codes


def test_a_stolen_session_alone_cannot_turn_on_a_second_factor_of_its_own(optional_app):
    """The owner, locked out by the attacker's authenticator, would find it still on after
    resetting the password: turning TOTP on asks for the current password."""
    client = optional_app.test_client()
    assert log_in(client, NO, EMAIL).status_code == 302
    page = client.get(f"/t/{NO}/profile/totp").get_data(as_text=True)
    assert 'name="current_password"' in page
    enrol_id = re.search(r'name="enrol" value="([^"]+)"', page).group(1)
    code = pyotp.TOTP(_secret(page)).now()
    without = client.post(f"/t/{NO}/profile/totp", data={"enrol": enrol_id, "code": code})
    wrong = client.post(f"/t/{NO}/profile/totp", data={
        "enrol": enrol_id, "code": code, "current_password": "Not-The-One-1"})
    assert without.status_code == 401 and wrong.status_code == 401
    assert 'id="current_password-error"' in wrong.get_data(as_text=True)
    assert user(optional_app, EMAIL).totp_secret is None


def test_a_pending_login_dies_with_the_password_that_started_it(sqlite_url):
    """Whoever knew the old password is past the password step; the owner resets it. Where
    TOTP is required and not yet set up, finishing the step would enrol the intruder's own
    authenticator: the pending login must be gone."""
    app = _app(sqlite_url, "required")
    try:
        intruder = app.test_client()
        assert log_in(intruder, NO, EMAIL).location.endswith(f"/t/{NO}/login/totp")
        owner = app.test_client()
        owner.post(f"/t/{NO}/forgot-password", data={"email": EMAIL})
        new = "Helt-Ny-Fjell-77"
        assert owner.post(link_in(last_mail(app, EMAIL)), data={
            "password": new, "password_confirmation": new}).status_code == 200
        page = intruder.get(f"/t/{NO}/login/totp")
        assert page.status_code == 302 and page.location.endswith(f"/t/{NO}/login")
        finish = intruder.post(f"/t/{NO}/login/totp", data={"code": "123456"})
        assert finish.status_code == 302 and "bsid_" not in finish.headers.get("Set-Cookie", "")
        assert user(app, EMAIL).totp_secret is None
    finally:
        app.extensions["broker"].engine.dispose()


def _password_step(app):  # type: ignore[no-untyped-def]
    client = app.test_client()
    response = log_in(client, NO, EMAIL)
    assert response.status_code == 302 and response.location.endswith(f"/t/{NO}/login/totp")
    assert "bsid_" not in response.headers.get("Set-Cookie", "")
    return client


def _code(client, code: str):  # type: ignore[no-untyped-def]
    return client.post(f"/t/{NO}/login/totp", data={"code": code})


def _next_step_code(secret: str) -> str:
    return pyotp.TOTP(secret).at(time.time() + 30)


def test_enrolment_stores_the_secret_and_ten_recovery_codes_as_hmacs(optional_app):
    secret, codes = _enrol(optional_app)
    assert user(optional_app, EMAIL).totp_secret == secret
    with db_session(optional_app) as session:
        stored = list(session.scalars(select(RecoveryCode.code_hmac)))
    assert len(stored) == 10 and not set(codes) & set(stored)


def test_login_asks_for_the_code_and_the_session_records_both_factors(optional_app):
    secret, _ = _enrol(optional_app)
    client = _password_step(optional_app)
    page = client.get(f"/t/{NO}/login/totp").get_data(as_text=True)
    assert 'autocomplete="one-time-code"' in page
    assert _code(client, "123456" if _next_step_code(secret) != "123456" else "654321"
                 ).status_code == 401
    done = _code(client, _next_step_code(secret))
    assert done.status_code == 302 and done.location.endswith(f"/t/{NO}/signed-in")
    assert client.get(f"/t/{NO}/signed-in").status_code == 200
    with db_session(optional_app) as session:
        amrs = [row for row in session.scalars(select(LoginSession.amr))]
    assert ["pwd", "otp"] in amrs


def test_a_code_is_refused_the_second_time(optional_app):
    secret, _ = _enrol(optional_app)
    code = _next_step_code(secret)
    assert _code(_password_step(optional_app), code).status_code == 302
    replay = _code(_password_step(optional_app), code)
    assert replay.status_code == 401 and "already used" in replay.get_data(as_text=True)


def test_a_recovery_code_works_once(optional_app):
    _, codes = _enrol(optional_app)
    assert _code(_password_step(optional_app), codes[0].upper()).status_code == 302
    assert _code(_password_step(optional_app), codes[0]).status_code == 401
    assert _code(_password_step(optional_app), codes[1]).status_code == 302


def test_wrong_codes_lock_the_second_factor_even_for_the_right_code(optional_app):
    secret, _ = _enrol(optional_app)
    client = _password_step(optional_app)
    right = _next_step_code(secret)
    wrong = "000000" if right != "000000" else "111111"
    assert [_code(client, wrong).status_code for _ in range(3)] == [401, 401, 429]
    refused = _code(client, right)
    assert refused.status_code == 429 and "Too many wrong codes" in refused.get_data(as_text=True)


def test_the_totp_step_cannot_be_skipped(optional_app):
    _enrol(optional_app)
    client = _password_step(optional_app)
    assert client.get(f"/t/{NO}/signed-in").status_code == 302  # no session yet
    assert client.get(f"/t/{NO}/profile").status_code == 302
    stranger = optional_app.test_client()
    assert stranger.post(f"/t/{NO}/login/totp", data={"code": "000000"}).status_code == 302


def test_a_tenant_that_requires_totp_has_the_user_enrol_at_the_next_login(sqlite_url):
    app = _app(sqlite_url, "required")
    client = _password_step(app)
    page = client.get(f"/t/{NO}/login/totp").get_data(as_text=True)
    assert "Set up two-step login" in page
    enrol_id = re.search(r'name="enrol" value="([^"]+)"', page).group(1)
    done = client.post(f"/t/{NO}/login/totp", data={
        "enrol": enrol_id, "code": pyotp.TOTP(_secret(page)).now()})
    assert done.status_code == 200 and "bsid_fjordvarme" in done.headers["Set-Cookie"]
    assert len(re.findall(r"<li><code>", done.get_data(as_text=True))) == 10
    assert client.get(f"/t/{NO}/signed-in").status_code == 200
    app.extensions["broker"].engine.dispose()


def test_a_tenant_with_totp_off_does_not_offer_it(sqlite_url):
    app = _app(sqlite_url, "off")
    client = app.test_client()
    assert log_in(client, NO, EMAIL).status_code == 302
    assert "Two-step login" not in client.get(f"/t/{NO}/profile").get_data(as_text=True)
    assert client.get(f"/t/{NO}/profile/totp").status_code == 404
    app.extensions["broker"].engine.dispose()
