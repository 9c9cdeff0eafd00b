"""The support console in a browser: sign-in with TOTP, search, a user's page, the main
actions through their forms, refusals, the audit log and its JSON Lines export."""

from __future__ import annotations

import json
import re

import pytest
from sqlalchemy import select

from broker.models import AttemptCounter
from broker.staff.actions import ACTION_EVENTS

from .staff_support import (
    STAFF_PASSWORD,
    TENANT_A,
    TENANT_B,
    add_staff,
    audit_records,
    bind,
    build_scene,
    check_effect,
    get_user,
    make_app,
    prepare,
    staff_records,
    staff_token,
    totp_now,
)


@pytest.fixture
def staff_app(sqlite_url):  # type: ignore[no-untyped-def]
    application = make_app(sqlite_url)
    yield application
    application.extensions["broker"].engine.dispose()


def signed_in(app, member):  # type: ignore[no-untyped-def]
    client = app.test_client()
    token = staff_token(app, member, kind="cookie")
    client.set_cookie("broker_staff", token, path="/console")
    return client


def test_staff_sign_in_takes_password_then_a_totp_code_that_cannot_be_replayed(staff_app):
    member = add_staff(staff_app, "agent@fjordvarme.test", ["support_agent"], [TENANT_A])
    client = staff_app.test_client()
    assert client.get("/console/users").headers["Location"].endswith("/console/login")
    wrong_password = client.post("/console/login", data={"email": member.email,
                                                         "password": "nope"})
    assert wrong_password.status_code == 401 and b"Wrong email or password" in wrong_password.data
    step_one = client.post("/console/login", data={"email": member.email,
                                                   "password": STAFF_PASSWORD})
    assert step_one.headers["Location"].endswith("/console/totp")
    # The password alone opens nothing.
    assert client.get("/console/users").status_code == 302
    code = totp_now(member)
    bad = client.post("/console/totp", data={"code": "000000" if code != "000000" else "111111"})
    assert bad.status_code == 401
    step_two = client.post("/console/totp", data={"code": code})
    assert step_two.headers["Location"].endswith("/console/users")
    cookies = step_two.headers.getlist("Set-Cookie")
    staff_cookies = [c for c in cookies if c.startswith("broker_staff=")]
    assert sorted(re.search(r"Path=(\S+?);?( |$)", c).group(1) for c in staff_cookies) == [
        "/admin", "/console"]
    for cookie in staff_cookies:
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert client.get("/console/users").status_code == 200

    # Signing in again from another browser with the same code is refused.
    other = staff_app.test_client()
    other.post("/console/login", data={"email": member.email, "password": STAFF_PASSWORD})
    replay = other.post("/console/totp", data={"code": code})
    assert replay.status_code == 401 and b"not valid" in replay.data


def test_search_and_the_user_page_show_what_support_needs(staff_app):
    scene = build_scene(staff_app)
    bind(staff_app, scene.user_a, scene.account_a)
    client = signed_in(staff_app, scene.agent_a)
    page = client.get("/console/users", query_string={"q": "100234"})
    assert f"/console/users/{scene.user_a}".encode() in page.data
    assert b"jens@example.com" not in client.get("/console/users",
                                                  query_string={"q": "example.com"}).data
    user_page = client.get(f"/console/users/{scene.user_a}")
    text = user_page.get_data(as_text=True)
    for expected in ("kari@example.com", "active", "100234", "owner", "Authenticator (TOTP)",
                     "Recent security events", "Linked identities"):
        assert expected in text
    assert "Disable account" not in text  # only a tenant administrator may
    assert client.get(f"/console/users/{scene.user_b}").status_code == 403


ACTION_FORMS = {
    "unlock": {},
    "send_password_reset": {},
    "bind_customer": {"customer_number": "100234", "role": "delegate"},
    "send_binding_pin": {"customer_number": "100234", "channel": "sms"},
    "disable": {},
    "revoke_sessions": {},
}


@pytest.mark.parametrize("action", ACTION_FORMS)
def test_main_actions_through_the_console_leave_one_audit_record(staff_app, action):
    scene = build_scene(staff_app)
    prepare(staff_app, scene, action)
    client = signed_in(staff_app, scene.admin_a)
    form = {"reason": "caller verified with customer number", **ACTION_FORMS[action]}
    response = client.post(f"/console/users/{scene.user_a}/actions/{action}", data=form)
    assert response.status_code == 200, response.data
    assert b"Done:" in response.data
    check_effect(staff_app, scene, action)
    records = staff_records(staff_app)
    assert [(r.event, r.actor_id, r.target_user_id, r.reason, r.outcome) for r in records] == [
        (ACTION_EVENTS[action], str(scene.admin_a.id), scene.user_a,
         "caller verified with customer number", "ok")]


def test_a_console_action_without_a_reason_is_refused_with_a_message(staff_app):
    scene = build_scene(staff_app)
    prepare(staff_app, scene, "unlock")
    client = signed_in(staff_app, scene.agent_a)
    response = client.post(f"/console/users/{scene.user_a}/actions/unlock", data={"reason": ""})
    assert response.status_code == 400
    assert b"Please write why" in response.data
    assert get_user(staff_app, scene.user_a).locked_until is not None
    assert staff_records(staff_app) == []


def test_a_console_action_on_another_utilitys_user_is_403_and_audited(staff_app):
    scene = build_scene(staff_app)
    client = signed_in(staff_app, scene.agent_a)
    response = client.post(f"/console/users/{scene.user_b}/actions/revoke_sessions",
                           data={"reason": "curious"})
    assert response.status_code == 403
    assert [(r.outcome, r.tenant) for r in staff_records(staff_app)] == [("refused", TENANT_B)]


def test_a_support_agent_cannot_disable_or_open_staff_management(staff_app):
    scene = build_scene(staff_app)
    client = signed_in(staff_app, scene.agent_a)
    response = client.post(f"/console/users/{scene.user_a}/actions/disable",
                           data={"reason": "suspicious"})
    assert response.status_code == 403 and b"Your role does not allow" in response.data
    assert get_user(staff_app, scene.user_a).status == "active"
    assert client.get("/console/staff").status_code == 403
    assert client.post("/console/staff", data={
        "email": "x@fjordvarme.test", "role": "tenant_admin", "tenant": TENANT_A,
        "reason": "me"}).status_code == 403


def test_a_tenant_admin_adds_a_colleague_and_sees_the_secrets_once(staff_app):
    scene = build_scene(staff_app)
    client = signed_in(staff_app, scene.admin_a)
    response = client.post("/console/staff", data={
        "email": "colleague@fjordvarme.test", "name": "Colleague", "role": "support_agent",
        "tenant": TENANT_A, "reason": "new hire"})
    assert response.status_code == 200
    assert b"otpauth://totp/" in response.data
    again = client.get("/console/staff")
    assert b"colleague@fjordvarme.test" in again.data and b"otpauth://" not in again.data


def test_the_audit_log_page_searches_and_exports_json_lines(staff_app):
    scene = build_scene(staff_app)
    client = signed_in(staff_app, scene.agent_a)
    client.post(f"/console/users/{scene.user_a}/actions/revoke_sessions",
                data={"reason": "lost phone"})
    page = client.get("/console/audit", query_string={"user_id": scene.user_a,
                                                      "event": "sessions_revoked"})
    assert b"lost phone" in page.data
    empty = client.get("/console/audit", query_string={"until": "2000-01-01T00:00"})
    assert b"lost phone" not in empty.data
    export = client.get("/console/audit/export.jsonl", query_string={"tenant": TENANT_A})
    lines = [json.loads(line) for line in export.get_data(as_text=True).splitlines()]
    export.close()
    assert "attachment" in export.headers["Content-Disposition"]
    assert [(line["event"], line["reason"], line["source_address"]) for line in lines] == [
        ("sessions_revoked", "lost phone", "127.0.0.1")]
    assert audit_records(staff_app, tenant=TENANT_B) == []


def test_every_console_form_has_a_csrf_field_and_labels_tied_to_inputs(staff_app):
    scene = build_scene(staff_app)
    anonymous = staff_app.test_client()
    admin = signed_in(staff_app, scene.admin_a)
    pages = [anonymous.get("/console/login").get_data(as_text=True),
             admin.get(f"/console/users/{scene.user_a}").get_data(as_text=True),
             admin.get("/console/users", query_string={"q": "kari"}).get_data(as_text=True),
             admin.get("/console/audit").get_data(as_text=True),
             admin.get("/console/staff").get_data(as_text=True)]
    for html in pages:
        forms = re.findall(r"<form.*?</form>", html, re.S)
        assert forms
        for form in forms:
            if 'method="post"' in form:
                assert 'type="hidden" name="csrf_token"' in form
            for field_id in re.findall(r'<(?:input|select)[^>]*\bid="([^"]+)"', form):
                assert f'for="{field_id}"' in form, field_id
            for label_for in re.findall(r'<label for="([^"]+)"', form):
                assert f'id="{label_for}"' in form, label_for


def test_signing_out_ends_the_console_session(staff_app):
    scene = build_scene(staff_app)
    client = signed_in(staff_app, scene.agent_a)
    assert client.post("/console/logout").status_code == 302
    assert client.get("/console/users").status_code == 302


def test_with_csrf_protection_on_a_console_form_without_its_token_is_refused(sqlite_url):
    app = make_app(sqlite_url, csrf_protection=True)
    try:
        scene = build_scene(app)
        prepare(app, scene, "unlock")
        client = signed_in(app, scene.agent_a)
        page = client.get(f"/console/users/{scene.user_a}").get_data(as_text=True)
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        url = f"/console/users/{scene.user_a}/actions/unlock"
        forged = client.post(url, data={"reason": "from another site"})
        assert forged.status_code == 400
        assert staff_records(app) == []
        done = client.post(url, data={"reason": "verified", "csrf_token": token})
        assert done.status_code == 200
        assert get_user(app, scene.user_a).locked_until is None
    finally:
        app.extensions["broker"].engine.dispose()


def test_a_console_login_with_an_overlong_email_is_a_401_on_both_databases(database_url):
    """Found by tests/test_fuzz_more_forms.py: the attempt counter's key held the typed email,
    and one over 255 characters (e.g. 400 times "ø") was a 500 on PostgreSQL."""
    app = make_app(database_url, throttle={"enabled": False})
    try:
        answer = app.test_client().post("/console/login",
                                        data={"email": "ø" * 400, "password": "x"})
        assert answer.status_code == 401
        with app.extensions["broker"].sessions() as db:
            keys = db.scalars(select(AttemptCounter.key)).all()
        assert keys and all(len(key) < 100 and "ø" not in key for key in keys)
    finally:
        app.extensions["broker"].engine.dispose()
