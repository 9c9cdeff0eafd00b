"""Activation by code and by link, and the seed 003 order (link first, then the password)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from broker.models import AuditEvent, LoginSession, Verification, utcnow

from .accounts_support import (
    DK,
    ES,
    GOOD_PASSWORD,
    NO,
    code_in,
    db_session,
    last_mail,
    link_in,
    log_in,
    mails_to,
    make_app,
    register,
    user,
    without_csrf,
)

EMAIL = "kari@example.no"


@pytest.fixture
def broker_app(database_url):  # type: ignore[no-untyped-def]
    """On both databases: the counters and single-use updates are the subject here."""
    application = make_app(database_url, fjordvarme={"resend_cooldown_seconds": 60})
    yield application
    application.extensions["broker"].engine.dispose()


def _activate(client, code: str, email: str = EMAIL):  # type: ignore[no-untyped-def]
    return client.post(f"/t/{NO}/activate", data={"email": email, "code": code})


def _expire_verifications(app) -> None:  # type: ignore[no-untyped-def]
    with db_session(app) as session, session.begin():
        session.execute(update(Verification).values(
            expires_at=utcnow() - timedelta(seconds=1),
            last_sent_at=utcnow() - timedelta(hours=1)))


def test_register_then_activate_by_code_logs_in_and_later_logins_work(broker_app):
    client = broker_app.test_client()
    page = register(client, NO, EMAIL).get_data(as_text=True)
    assert 'autocomplete="one-time-code"' in page
    assert log_in(client, NO, EMAIL).status_code == 403  # not activated yet
    response = _activate(client, code_in(last_mail(broker_app, EMAIL)))
    assert response.status_code == 302 and response.location.endswith(f"/t/{NO}/signed-in")
    assert "bsid_fjordvarme" in response.headers["Set-Cookie"]
    stored = user(broker_app, EMAIL)
    assert stored.status == "active" and stored.email_verified
    with db_session(broker_app) as session:
        assert session.scalar(select(AuditEvent.id).where(
            AuditEvent.event == "account_activated")) is not None
    fresh = broker_app.test_client()
    assert log_in(fresh, NO, EMAIL).status_code == 302


def test_an_unactivated_login_is_told_how_to_activate(broker_app):
    client = broker_app.test_client()
    register(client, NO, EMAIL)
    page = log_in(client, NO, EMAIL).get_data(as_text=True)
    assert "not activated yet" in page and "/activation/resend" in page


def test_register_then_activate_by_link_then_log_in(broker_app):
    client = broker_app.test_client()
    email = "jens@example.dk"
    register(client, DK, email, name="Jens Hansen", password="Aarhus#Vand7")
    link = link_in(last_mail(broker_app, email))
    confirm = client.get(link)  # a mail scanner's GET does not spend the link
    assert confirm.status_code == 200 and user(broker_app, email).status == "pending"
    done = client.post(link)
    assert done.status_code == 200 and "Your account is active" in done.get_data(as_text=True)
    assert log_in(client, DK, email, "Aarhus#Vand7").status_code == 302


def test_an_activation_link_works_once(broker_app):
    client = broker_app.test_client()
    register(client, DK, "jens@example.dk", name="Jens Hansen", password="Aarhus#Vand7")
    link = link_in(last_mail(broker_app, "jens@example.dk"))
    assert client.post(link).status_code == 200
    assert client.post(link).status_code == 410
    assert client.get(link).status_code == 410


def test_an_expired_or_tampered_activation_link_is_refused(broker_app):
    client = broker_app.test_client()
    register(client, DK, "jens@example.dk", name="Jens Hansen", password="Aarhus#Vand7")
    link = link_in(last_mail(broker_app, "jens@example.dk"))
    assert client.post(link[:-3] + "abc").status_code == 410
    _expire_verifications(broker_app)
    response = client.post(link)
    assert response.status_code == 410 and "expired" in response.get_data(as_text=True)
    assert user(broker_app, "jens@example.dk").status == "pending"


def test_seed_003_activation_link_leads_to_create_your_password_then_login(broker_app):
    client = broker_app.test_client()
    email = "cliente@example.es"
    register(client, ES, email, password=None, name="Lucía Pérez",
             registration_type="private")
    link = link_in(last_mail(broker_app, email))
    step = client.post(link)
    assert step.status_code == 302 and "/activate/password?step=" in step.location
    page = client.get(step.location).get_data(as_text=True)
    assert "Create your password" in page and "harder to guess" in page
    weak = client.post(f"/t/{ES}/activate/password", data={
        "step": step.location.split("step=")[1], "password": "password",
        "password_confirmation": "password"})
    assert weak.status_code == 400 and "commonly used" in weak.get_data(as_text=True)
    done = client.post(f"/t/{ES}/activate/password", data={
        "step": step.location.split("step=")[1], "password": GOOD_PASSWORD,
        "password_confirmation": GOOD_PASSWORD})
    assert done.status_code == 302 and "bsid_aguas-del-valle" in done.headers["Set-Cookie"]
    # The step is spent: it cannot set the password a second time.
    again = client.post(f"/t/{ES}/activate/password", data={
        "step": step.location.split("step=")[1], "password": "Other-Pass-99",
        "password_confirmation": "Other-Pass-99"})
    assert again.status_code == 410
    assert log_in(broker_app.test_client(), ES, email).status_code == 302


def test_a_used_code_does_not_work_again(broker_app):
    client = broker_app.test_client()
    register(client, NO, EMAIL)
    code = code_in(last_mail(broker_app, EMAIL))
    assert _activate(client, code).status_code == 302
    assert _activate(broker_app.test_client(), code).status_code == 400


def test_an_expired_code_is_refused(broker_app):
    client = broker_app.test_client()
    register(client, NO, EMAIL)
    code = code_in(last_mail(broker_app, EMAIL))
    _expire_verifications(broker_app)
    response = _activate(client, code)
    assert response.status_code == 400 and "no longer valid" in response.get_data(as_text=True)
    assert user(broker_app, EMAIL).status == "pending"


def test_after_five_wrong_codes_even_the_right_code_is_refused(broker_app):
    client = broker_app.test_client()
    register(client, NO, EMAIL)
    code = code_in(last_mail(broker_app, EMAIL))
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    answers = [_activate(client, wrong).status_code for _ in range(5)]
    assert answers == [400, 400, 400, 400, 429]
    response = _activate(client, code)
    assert response.status_code == 429 and "Too many wrong codes" in response.get_data(as_text=True)
    assert user(broker_app, EMAIL).status == "pending"


def test_an_unknown_address_gets_the_same_answers_as_a_pending_one(broker_app):
    client = broker_app.test_client()
    register(client, NO, EMAIL)
    known = [_activate(client, "000000").get_data() for _ in range(5)]
    unknown = [_activate(client, "000000", "nobody@example.no").get_data() for _ in range(5)]
    assert [without_csrf(body).replace(EMAIL.encode(), b"X") for body in known] == \
        [without_csrf(body).replace(b"nobody@example.no", b"X") for body in unknown]


def test_resend_waits_for_the_cooldown_and_a_new_code_replaces_the_old(broker_app):
    client = broker_app.test_client()
    register(client, NO, EMAIL)
    old_code = code_in(last_mail(broker_app, EMAIL))
    first = client.post(f"/t/{NO}/activation/resend", data={"email": EMAIL})
    assert first.status_code == 200
    assert len(mails_to(broker_app, EMAIL)) == 1  # within the cooldown: nothing sent
    with db_session(broker_app) as session, session.begin():
        session.execute(update(Verification).values(
            last_sent_at=utcnow() - timedelta(seconds=61)))
    client.post(f"/t/{NO}/activation/resend", data={"email": EMAIL})
    assert len(mails_to(broker_app, EMAIL)) == 2
    new_code = code_in(last_mail(broker_app, EMAIL))
    if new_code != old_code:
        assert _activate(client, old_code).status_code == 400
    assert _activate(client, new_code).status_code == 302
    with db_session(broker_app) as session:
        assert session.scalar(select(LoginSession.id)) is not None


def test_resend_for_an_unknown_address_answers_the_same(broker_app):
    client = broker_app.test_client()
    register(client, NO, EMAIL)
    with db_session(broker_app) as session, session.begin():
        session.execute(update(Verification).values(
            last_sent_at=utcnow() - timedelta(seconds=61)))
    known = client.post(f"/t/{NO}/activation/resend", data={"email": EMAIL}).get_data()
    unknown = client.post(f"/t/{NO}/activation/resend",
                          data={"email": "nobody@example.no"}).get_data()
    assert known.replace(EMAIL.encode(), b"X") == unknown.replace(b"nobody@example.no", b"X")


def test_a_signup_started_from_a_portal_returns_to_the_portal_with_a_code(broker_app):
    client = broker_app.test_client()
    start = client.get(f"/t/{NO}/authorize", query_string={
        "response_type": "code", "client_id": "demo-portal",
        "redirect_uri": f"http://portal.test/{NO}/callback", "scope": "openid email",
        "state": "st-1", "nonce": "n-1",
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        "code_challenge_method": "S256"})
    assert start.status_code == 302
    flow_id = start.location.split("flow=")[1]
    register_page = client.get(start.location).get_data(as_text=True)
    assert f"register?flow={flow_id}" in register_page
    register(client, NO, EMAIL, flow=flow_id)
    activated = _activate(client, code_in(last_mail(broker_app, EMAIL)))
    assert activated.status_code == 302 and f"resume={flow_id}" in activated.location
    back = client.get(activated.location)
    assert back.status_code == 302
    assert back.location.startswith(f"http://portal.test/{NO}/callback?code=")
