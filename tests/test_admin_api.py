"""The JSON admin API: staff login with TOTP, every action, refusals, the audit log, staff
management, and the OpenAPI document that describes it all."""

from __future__ import annotations

import json

import pytest
from openapi_spec_validator import validate

from broker.staff.actions import ACTION_EVENTS, ACTIONS

from .staff_support import (
    ACTION_PARAMS,
    STAFF_PASSWORD,
    TENANT_A,
    TENANT_B,
    add_staff,
    audit_records,
    build_scene,
    check_effect,
    get_user,
    make_app,
    prepare,
    staff_records,
    staff_token,
    totp_now,
)

API = "/admin/api/v1"


@pytest.fixture
def staff_app(sqlite_url):  # type: ignore[no-untyped-def]
    application = make_app(sqlite_url)
    yield application
    application.extensions["broker"].engine.dispose()


@pytest.fixture
def both_app(database_url):  # type: ignore[no-untyped-def]
    """SQLite and PostgreSQL: for the rules that rest on atomic updates."""
    application = make_app(database_url)
    yield application
    application.extensions["broker"].engine.dispose()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def path_of(action: str) -> str:
    return action.replace("_", "-")


# --- Login -----------------------------------------------------------------------------------


def test_staff_login_needs_password_and_a_totp_code_that_works_only_once(both_app):
    member = add_staff(both_app, "agent@fjordvarme.test", ["support_agent"], [TENANT_A])
    client = both_app.test_client()
    no_code = client.post(f"{API}/login", json={"email": member.email, "password": STAFF_PASSWORD})
    assert no_code.status_code == 400
    code = totp_now(member)
    wrong = "000000" if code != "000000" else "111111"
    refused = client.post(f"{API}/login", json={
        "email": member.email, "password": STAFF_PASSWORD, "totp_code": wrong})
    assert refused.status_code == 401
    first = client.post(f"{API}/login", json={
        "email": member.email, "password": STAFF_PASSWORD, "totp_code": code})
    assert first.status_code == 200
    token = first.get_json()["access_token"]
    assert client.get(f"{API}/session", headers=bearer(token)).get_json()["staff"]["email"] == (
        member.email)
    replayed = client.post(f"{API}/login", json={
        "email": member.email, "password": STAFF_PASSWORD, "totp_code": code})
    assert replayed.status_code == 401
    outcomes = [(r.event, r.outcome, r.reason) for r in audit_records(both_app)]
    assert ("staff_totp", "refused", "invalid_code") in outcomes
    assert ("staff_totp", "refused", "replayed_code") in outcomes
    assert ("staff_login", "ok", "password and totp") in outcomes


def test_a_wrong_password_is_refused_before_any_code_is_looked_at(staff_app):
    member = add_staff(staff_app, "agent@fjordvarme.test", ["support_agent"], [TENANT_A])
    response = staff_app.test_client().post(f"{API}/login", json={
        "email": member.email, "password": "guess", "totp_code": totp_now(member)})
    assert response.status_code == 401
    assert response.get_json()["error"] == "login_invalid"


def test_without_a_token_or_with_a_forged_one_the_api_answers_401(staff_app):
    scene = build_scene(staff_app)
    client = staff_app.test_client()
    assert client.get(f"{API}/users/{scene.user_a}").status_code == 401
    assert client.get(f"{API}/users/{scene.user_a}",
                      headers=bearer("forged-token")).status_code == 401


@pytest.mark.parametrize("path", [
    "/users/2147483648", "/users/99999999999999999999/unlock", "/staff/2147483648/enable",
    "/users/0", "/users/not-a-number", "/users/-5/unlock",
])
def test_an_id_no_row_can_have_is_a_json_404_on_both_databases(both_app, path):
    """Found by the schemathesis run: an id past INTEGER's range reached PostgreSQL (500)."""
    scene = build_scene(both_app)
    client = both_app.test_client()
    headers = bearer(staff_token(both_app, scene.admin_a))
    method = client.get if path.count("/") == 2 else client.post
    answer = method(f"{API}{path}", headers=headers, json={"reason": "fuzz"})
    assert answer.status_code == 404
    assert answer.is_json and "error" in answer.json


def test_an_audit_filter_id_out_of_range_is_400(both_app):
    scene = build_scene(both_app)
    client = both_app.test_client()
    headers = bearer(staff_token(both_app, scene.admin_a))
    for query in ("before_id=2147483648", "user_id=99999999999", "before_id=0"):
        answer = client.get(f"{API}/audit?{query}", headers=headers)
        assert answer.status_code == 400, query
        assert answer.json == {"error": "invalid_filter"}


def test_logout_ends_the_bearer_token(staff_app):
    scene = build_scene(staff_app)
    token = staff_token(staff_app, scene.agent_a)
    client = staff_app.test_client()
    assert client.post(f"{API}/logout", headers=bearer(token)).status_code == 200
    assert client.get(f"{API}/session", headers=bearer(token)).status_code == 401


def test_a_console_cookie_works_for_reads_but_writes_need_the_csrf_header(staff_app):
    scene = build_scene(staff_app)
    token = staff_token(staff_app, scene.agent_a, kind="cookie")
    client = staff_app.test_client()
    client.set_cookie("broker_staff", token, path="/admin")
    session = client.get(f"{API}/session")
    assert session.status_code == 200
    csrf = session.get_json()["csrf_token"]
    body = {"reason": "called from the office"}
    forged = client.post(f"{API}/users/{scene.user_a}/revoke-sessions", json=body)
    assert forged.status_code == 403 and forged.get_json()["error"] == (
        "csrf_token_missing_or_wrong")
    assert staff_records(staff_app) == []
    done = client.post(f"{API}/users/{scene.user_a}/revoke-sessions", json=body,
                       headers={"X-CSRF-Token": csrf})
    assert done.status_code == 200


# --- Users and actions -----------------------------------------------------------------------


@pytest.mark.parametrize("action", ACTIONS)
def test_each_action_through_the_api_leaves_one_audit_record(staff_app, action):
    scene = build_scene(staff_app)
    prepare(staff_app, scene, action)
    token = staff_token(staff_app, scene.admin_a)
    response = staff_app.test_client().post(
        f"{API}/users/{scene.user_a}/{path_of(action)}",
        json={"reason": "customer called, identity checked", **ACTION_PARAMS.get(action, {})},
        headers=bearer(token), environ_base={"REMOTE_ADDR": "198.51.100.4"},
    )
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["outcome"] == "ok"
    check_effect(staff_app, scene, action)
    records = staff_records(staff_app)
    assert [(r.event, r.actor_id, r.target_user_id, r.tenant, r.source_address, r.outcome)
            for r in records] == [(ACTION_EVENTS[action], str(scene.admin_a.id), scene.user_a,
                                   TENANT_A, "198.51.100.4", "ok")]
    assert records[0].reason == "customer called, identity checked"


@pytest.mark.parametrize("action", ACTIONS)
def test_an_action_on_a_user_of_another_utility_is_403_and_audited(staff_app, action):
    scene = build_scene(staff_app)
    token = staff_token(staff_app, scene.agent_a)
    response = staff_app.test_client().post(
        f"{API}/users/{scene.user_b}/{path_of(action)}",
        json={"reason": "trying my luck", **ACTION_PARAMS.get(action, {})},
        headers=bearer(token),
    )
    assert response.status_code == 403
    assert response.get_json()["error"] == "tenant_not_allowed"
    assert [(r.outcome, r.tenant, r.target_user_id) for r in staff_records(staff_app)] == [
        ("refused", TENANT_B, scene.user_b)]


@pytest.mark.parametrize("body", [{}, {"reason": ""}, {"reason": "  "}, {"reason": 42}])
def test_an_action_without_a_reason_is_400_and_nothing_happens(staff_app, body):
    scene = build_scene(staff_app)
    prepare(staff_app, scene, "unlock")
    token = staff_token(staff_app, scene.agent_a)
    response = staff_app.test_client().post(
        f"{API}/users/{scene.user_a}/unlock", json=body, headers=bearer(token))
    assert response.status_code == 400
    assert response.get_json()["error"] == "reason_required"
    assert get_user(staff_app, scene.user_a).locked_until is not None
    assert staff_records(staff_app) == []


def test_only_a_tenant_admin_may_disable_an_account(staff_app):
    scene = build_scene(staff_app)
    token = staff_token(staff_app, scene.agent_a)
    response = staff_app.test_client().post(
        f"{API}/users/{scene.user_a}/disable", json={"reason": "fraud suspected"},
        headers=bearer(token))
    assert response.status_code == 403 and response.get_json()["error"] == "role_not_allowed"
    assert get_user(staff_app, scene.user_a).status == "active"


def test_search_finds_users_by_email_phone_name_and_customer_number_in_own_utility_only(
    staff_app,
):
    scene = build_scene(staff_app)
    from .staff_support import bind

    bind(staff_app, scene.user_a, scene.account_a)
    token = staff_token(staff_app, scene.agent_a)
    client = staff_app.test_client()

    def ids(q: str) -> list[int]:
        response = client.get(f"{API}/users", query_string={"q": q}, headers=bearer(token))
        assert response.status_code == 200
        return [u["id"] for u in response.get_json()["users"]]

    assert ids("KARI@example") == [scene.user_a]
    assert ids("91 23 45 67") == [scene.user_a]
    assert ids("nordmann") == [scene.user_a]
    assert ids("100 234") == [scene.user_a]
    assert ids("jens@example.com") == []  # tenant B's customer is invisible to tenant A
    assert ids("%") == []  # wildcards are literal


def test_the_user_view_shows_state_accounts_mfa_and_events_but_no_secrets(staff_app):
    scene = build_scene(staff_app)
    from .staff_support import bind, enrol_totp, lock

    bind(staff_app, scene.user_a, scene.account_a)
    enrol_totp(staff_app, scene.user_a)
    lock(staff_app, scene.user_a)
    token = staff_token(staff_app, scene.agent_a)
    client = staff_app.test_client()
    view = client.get(f"{API}/users/{scene.user_a}", headers=bearer(token)).get_json()
    assert view["status"] == "active" and view["lockout"]["locked"] is True
    assert view["customer_accounts"][0]["number"] == "100234"
    assert view["mfa"] == {"totp": True, "recovery_codes_left": 3}
    assert "password_hash" not in json.dumps(view) and "totp_secret" not in json.dumps(view)
    assert client.get(f"{API}/users/{scene.user_b}", headers=bearer(token)).status_code == 403


# --- Audit log -------------------------------------------------------------------------------


def test_the_audit_log_can_be_searched_and_exported_as_json_lines(staff_app):
    scene = build_scene(staff_app)
    token = staff_token(staff_app, scene.agent_a)
    client = staff_app.test_client()
    for action in ("revoke_sessions", "reset_totp"):
        client.post(f"{API}/users/{scene.user_a}/{path_of(action)}",
                    json={"reason": "asked by customer"}, headers=bearer(token))
    client.post(f"{API}/users/{scene.user_b}/reset-totp", json={"reason": "x"},
                headers=bearer(token))
    found = client.get(f"{API}/audit", query_string={"event": "totp_reset",
                                                     "user_id": scene.user_a},
                       headers=bearer(token)).get_json()["events"]
    assert [(e["event"], e["target_user_id"]) for e in found] == [("totp_reset", scene.user_a)]
    future = client.get(f"{API}/audit", query_string={"since": "2999-01-01T00:00"},
                        headers=bearer(token)).get_json()["events"]
    assert future == []
    export = client.get(f"{API}/audit/export", query_string={"tenant": TENANT_A},
                        headers=bearer(token))
    assert export.mimetype == "application/jsonl"
    lines = [json.loads(line) for line in export.get_data(as_text=True).splitlines()]
    export.close()
    assert [line["event"] for line in lines] == ["sessions_revoked", "totp_reset"]
    # The refused attempt on tenant B's user is in tenant B's log, which agent A cannot read.
    assert all(line["tenant"] == TENANT_A for line in lines)
    bad = client.get(f"{API}/audit", query_string={"since": "yesterday"}, headers=bearer(token))
    assert bad.status_code == 400


# --- Staff management ------------------------------------------------------------------------


def test_a_support_agent_cannot_manage_staff(staff_app):
    scene = build_scene(staff_app)
    token = staff_token(staff_app, scene.agent_a)
    client = staff_app.test_client()
    assert client.get(f"{API}/staff", headers=bearer(token)).status_code == 403
    created = client.post(f"{API}/staff", headers=bearer(token), json={
        "email": "new@fjordvarme.test", "roles": ["tenant_admin"], "tenants": [TENANT_A],
        "reason": "promote myself"})
    assert created.status_code == 403
    disabled = client.post(f"{API}/staff/{scene.admin_a.id}/disable", headers=bearer(token),
                           json={"reason": "revenge"})
    assert disabled.status_code == 403
    assert [r.outcome for r in audit_records(staff_app, actor_type="staff")] == [
        "refused", "refused"]


def test_a_tenant_admin_adds_staff_only_for_their_own_utilities(staff_app):
    scene = build_scene(staff_app)
    token = staff_token(staff_app, scene.admin_a)
    client = staff_app.test_client()
    other = client.post(f"{API}/staff", headers=bearer(token), json={
        "email": "new@aarovand.test", "roles": ["support_agent"], "tenants": [TENANT_B],
        "reason": "help out"})
    assert other.status_code == 403
    created = client.post(f"{API}/staff", headers=bearer(token), json={
        "email": "New@Fjordvarme.test", "name": "New Agent", "roles": ["support_agent"],
        "tenants": [TENANT_A], "reason": "new hire"})
    assert created.status_code == 201
    body = created.get_json()
    assert body["totp_uri"].startswith("otpauth://totp/") and body["password"]
    listed = client.get(f"{API}/staff", headers=bearer(token)).get_json()["staff"]
    assert "new@fjordvarme.test" in [s["email"] for s in listed]
    assert "agent.b@aarovand.test" not in [s["email"] for s in listed]
    new_id = body["staff"]["id"]
    disabled = client.post(f"{API}/staff/{new_id}/disable", headers=bearer(token),
                           json={"reason": "left the company"})
    assert disabled.status_code == 200 and disabled.get_json()["staff"]["disabled"] is True


def test_a_disabled_staff_member_is_signed_out_at_once(staff_app):
    scene = build_scene(staff_app)
    agent_token = staff_token(staff_app, scene.agent_a)
    admin_token = staff_token(staff_app, scene.admin_a)
    client = staff_app.test_client()
    client.post(f"{API}/staff/{scene.agent_a.id}/disable", headers=bearer(admin_token),
                json={"reason": "left"})
    assert client.get(f"{API}/session", headers=bearer(agent_token)).status_code == 401


# --- OpenAPI ---------------------------------------------------------------------------------


def _openapi_path(rule: str) -> str:
    import re

    return re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.removeprefix(API))


def test_the_openapi_document_is_valid_and_lists_every_route_of_the_api(staff_app):
    document = staff_app.test_client().get(f"{API}/openapi.json").get_json()
    validate(document)
    assert document["openapi"].startswith("3.1")
    served = {
        (_openapi_path(rule.rule), method.lower())
        for rule in staff_app.url_map.iter_rules() if rule.rule.startswith(API)
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    described = {
        (path, method) for path, item in document["paths"].items() for method in item
    }
    assert served == described
    for action in ACTIONS:
        operation = document["paths"][f"/users/{{user_id}}/{path_of(action)}"]["post"]
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
        assert "reason" in schema["required"]
