"""Forgotten password: same answer for unknown addresses, single-use expiring link, and a
reset that ends other sessions, revokes refresh tokens and lifts the lock."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from broker.models import LoginSession, Token, User, Verification, utcnow

from .accounts_support import (
    GOOD_PASSWORD,
    NO,
    db_session,
    last_mail,
    link_in,
    log_in,
    mails_to,
    register_and_activate,
    running_app,
    user,
    without_csrf,
)

EMAIL = "kari@example.no"
NEW_PASSWORD = "Nytt-Passord-2024"


@pytest.fixture
def broker_app(sqlite_url):  # type: ignore[no-untyped-def]
    yield from running_app(sqlite_url)

def _active_user(app) -> None:  # type: ignore[no-untyped-def]
    register_and_activate(app, NO, EMAIL)


def _forgot(client, email: str):  # type: ignore[no-untyped-def]
    return client.post(f"/t/{NO}/forgot-password", data={"email": email})


def test_the_login_page_links_to_forgotten_password_and_registration(broker_app):
    page = broker_app.test_client().get(f"/t/{NO}/login").get_data(as_text=True)
    assert f"/t/{NO}/forgot-password" in page and f"/t/{NO}/register" in page


def test_an_unknown_address_gets_a_byte_identical_page_and_no_email(broker_app):
    _active_user(broker_app)
    client = broker_app.test_client()
    known = _forgot(client, EMAIL)
    unknown = _forgot(client, "nobody@example.no")
    assert known.status_code == unknown.status_code == 200
    assert without_csrf(known.get_data()).replace(EMAIL.encode(), b"X") == \
        without_csrf(unknown.get_data()).replace(b"nobody@example.no", b"X")
    assert "reset-password" in last_mail(broker_app, EMAIL).body_text
    assert mails_to(broker_app, "nobody@example.no") == []


def test_reset_sets_the_password_ends_other_sessions_and_revokes_refresh_tokens(broker_app):
    _active_user(broker_app)
    other_device = broker_app.test_client()
    assert log_in(other_device, NO, EMAIL).status_code == 302
    with db_session(broker_app) as session, session.begin():
        stored = session.scalar(select(User).where(User.email == EMAIL))
        login = session.scalar(select(LoginSession).where(LoginSession.revoked_at.is_(None)))
        session.add(Token(tenant=NO, client_id="demo-portal", user_id=stored.id,
                          login_session_id=login.id, family_id="f1",
                          access_token_sha256="a" * 64, refresh_token_sha256="r" * 64,
                          scope="openid", auth_time=utcnow(),
                          access_expires_at=utcnow() + timedelta(minutes=10),
                          refresh_expires_at=utcnow() + timedelta(days=30)))
        stored.failed_logins = 2
    client = broker_app.test_client()
    _forgot(client, EMAIL)
    link = link_in(last_mail(broker_app, EMAIL))
    form = client.get(link).get_data(as_text=True)
    assert "Use at least 8 characters." in form
    short = client.post(link, data={"password": "kort", "password_confirmation": "kort"})
    assert short.status_code == 400 and "Use at least 8 characters." in short.get_data(
        as_text=True)
    done = client.post(link, data={"password": NEW_PASSWORD,
                                   "password_confirmation": NEW_PASSWORD})
    assert done.status_code == 200
    assert other_device.get(f"/t/{NO}/signed-in").status_code == 302  # logged out
    with db_session(broker_app) as session:
        assert session.scalar(select(LoginSession.id).where(
            LoginSession.revoked_at.is_(None))) is None
        assert session.scalar(select(Token.revoked_at)) is not None
        assert session.scalar(select(User.failed_logins)) == 0
    assert log_in(broker_app.test_client(), NO, EMAIL, GOOD_PASSWORD).status_code == 401
    assert log_in(broker_app.test_client(), NO, EMAIL, NEW_PASSWORD).status_code == 302


def test_a_reset_link_works_once(broker_app):
    _active_user(broker_app)
    client = broker_app.test_client()
    _forgot(client, EMAIL)
    link = link_in(last_mail(broker_app, EMAIL))
    form = {"password": NEW_PASSWORD, "password_confirmation": NEW_PASSWORD}
    assert client.post(link, data=form).status_code == 200
    again = client.post(link, data={"password": "Third-Pass-77",
                                    "password_confirmation": "Third-Pass-77"})
    assert again.status_code == 410
    assert log_in(broker_app.test_client(), NO, EMAIL, NEW_PASSWORD).status_code == 302


def test_an_expired_reset_link_is_refused(broker_app):
    _active_user(broker_app)
    client = broker_app.test_client()
    _forgot(client, EMAIL)
    link = link_in(last_mail(broker_app, EMAIL))
    with db_session(broker_app) as session, session.begin():
        session.execute(update(Verification).where(Verification.purpose == "password_reset")
                        .values(expires_at=utcnow() - timedelta(seconds=1)))
    assert client.get(link).status_code == 410
    response = client.post(link, data={"password": NEW_PASSWORD,
                                       "password_confirmation": NEW_PASSWORD})
    assert response.status_code == 410
    assert log_in(broker_app.test_client(), NO, EMAIL, NEW_PASSWORD).status_code == 401


def test_a_reset_lifts_a_lock(broker_app):
    _active_user(broker_app)
    for _ in range(3):
        log_in(broker_app.test_client(), NO, EMAIL, "wrong-password")
    assert user(broker_app, EMAIL).locked_until is not None
    client = broker_app.test_client()
    _forgot(client, EMAIL)
    reset = [m for m in mails_to(broker_app, EMAIL) if "reset-password" in m.body_text][-1]
    client.post(link_in(reset), data={"password": NEW_PASSWORD,
                                      "password_confirmation": NEW_PASSWORD})
    assert user(broker_app, EMAIL).locked_until is None
    assert log_in(broker_app.test_client(), NO, EMAIL, NEW_PASSWORD).status_code == 302
