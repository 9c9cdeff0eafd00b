"""Security review fixes: input that used to crash (a negative audit page size, an invitation
address the sender refuses) gets a 4xx page, and staff logins are throttled."""

from __future__ import annotations

import secrets

import pytest

from broker import login_session
from broker.models import Invitation, OutboxMessage, User

from .staff_support import (
    STAFF_PASSWORD,
    TENANT_A,
    add_account,
    add_staff,
    add_user,
    bind,
    count,
    make_app,
    sessions,
    staff_token,
)

API = "/admin/api/v1"


@pytest.fixture
def app(sqlite_url):  # type: ignore[no-untyped-def]
    application = make_app(sqlite_url)
    application.config["PROPAGATE_EXCEPTIONS"] = False
    yield application
    application.extensions["broker"].engine.dispose()


def test_a_negative_audit_page_size_is_answered_not_crashed(app):
    member = add_staff(app, "support@example.no", ["support"], [TENANT_A])
    token = staff_token(app, member)
    answer = app.test_client().get(f"{API}/audit?limit=-1",
                                   headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code < 500
    assert answer.status_code == 200 and len(answer.get_json()["events"]) <= 1


def test_an_invitation_to_an_address_the_sender_refuses_is_a_bad_email(app):
    anna = add_user(app, TENANT_A, "anna@example.no")
    account = add_account(app, TENANT_A, "100001")
    bind(app, anna, account)
    with sessions(app).begin() as db:
        _login, token = login_session.start(db, app.extensions["broker"].config.tenants[TENANT_A],
                                            db.get(User, anna), amr=["pwd"])
    client = app.test_client()
    client.set_cookie(login_session.cookie_name(TENANT_A), token, path=f"/t/{TENANT_A}")
    answer = client.post(f"/t/{TENANT_A}/customer-accounts/{account}/invite",
                         data={"email": "a(b@x.org"})
    assert answer.status_code == 400
    assert count(app, Invitation) == 0 and count(app, OutboxMessage) == 0


@pytest.mark.parametrize("path", ["/console/login", f"{API}/login"])
def test_the_third_staff_login_from_one_address_in_a_minute_gets_429(sqlite_url, path):
    application = make_app(sqlite_url, throttle={"key_prefix": "t" + secrets.token_hex(6),
                                                 "strategy": "moving-window",  # exact counts
                                                 "login": {"per_address": "2/minute"}})
    client = application.test_client()
    form = {"email": "nobody@example.no", "password": STAFF_PASSWORD}

    def attempt():  # type: ignore[no-untyped-def]
        if path.startswith(API):
            return client.post(path, json={**form, "totp_code": "123456"},
                               environ_base={"REMOTE_ADDR": "203.0.113.9"})
        return client.post(path, data=form, environ_base={"REMOTE_ADDR": "203.0.113.9"})

    answers = [attempt().status_code for _ in range(3)]
    assert answers[:2] == [401, 401] and answers[2] == 429
    application.extensions["broker"].engine.dispose()
