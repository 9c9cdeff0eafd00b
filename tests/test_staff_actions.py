"""Support actions as functions: each one audited exactly once, refusals across tenants and
roles, reasons required, the customer's own view, the append-only log, the staff rules."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from broker.cli import main as broker_cli
from broker.models import AuditEvent, Staff, User
from broker.staff import actions, support_actions_for
from broker.staff.actions import ACTIONS, Actor, perform
from broker.staff.audit_log import AuditLogIsAppendOnly, AuditQuery, export_json_lines
from policies.staff import check_reason, may_act, may_manage_staff

from .conftest import cli_config_file
from .staff_support import (
    ACTION_PARAMS,
    TENANT_A,
    TENANT_B,
    build_scene,
    check_effect,
    config,
    make_app,
    prepare,
    sessions,
    staff_records,
)


@pytest.fixture
def staff_app(sqlite_url):  # type: ignore[no-untyped-def]
    application = make_app(sqlite_url)
    yield application
    application.extensions["broker"].engine.dispose()


def _perform(app, staff_id: int, action: str, user_id: int, reason: str | None = "caller "
             "verified by phone", **params: str):  # type: ignore[no-untyped-def]
    with sessions(app).begin() as db:
        staff = db.get(Staff, staff_id)
        return perform(db, config(app), Actor(staff, "192.0.2.7"), action, user_id,
                       reason=reason, params=params)


@pytest.mark.parametrize("action", ACTIONS)
def test_each_action_works_and_leaves_exactly_one_audit_record(staff_app, action):
    scene = build_scene(staff_app)
    prepare(staff_app, scene, action)
    staff = scene.admin_a  # the administrator may take every action
    result = _perform(staff_app, staff.id, action, scene.user_a,
                      **ACTION_PARAMS.get(action, {}))
    assert result.outcome == "ok", result
    check_effect(staff_app, scene, action)
    records = staff_records(staff_app)
    assert len(records) == 1
    record = records[0]
    assert record.event == actions.ACTION_EVENTS[action]
    assert (record.actor_id, record.target_user_id, record.tenant) == (
        str(staff.id), scene.user_a, TENANT_A)
    assert (record.source_address, record.reason, record.outcome) == (
        "192.0.2.7", "caller verified by phone", "ok")


@pytest.mark.parametrize("action", ACTIONS)
def test_staff_of_another_utility_is_refused_and_the_refusal_is_audited(staff_app, action):
    scene = build_scene(staff_app)
    result = _perform(staff_app, scene.agent_b.id, action, scene.user_a,
                      **ACTION_PARAMS.get(action, {}))
    assert (result.outcome, result.error, result.http_status) == (
        "refused", "tenant_not_allowed", 403)
    records = staff_records(staff_app)
    assert [(r.outcome, r.actor_id, r.tenant) for r in records] == [
        ("refused", str(scene.agent_b.id), TENANT_A)]
    assert get_status(staff_app, scene.user_a) == "active"


def get_status(app, user_id: int) -> str:  # type: ignore[no-untyped-def]
    with sessions(app)() as db:
        return db.get(User, user_id).status


@pytest.mark.parametrize("action", ["disable", "enable"])
def test_a_support_agent_may_not_disable_or_enable_an_account(staff_app, action):
    scene = build_scene(staff_app)
    result = _perform(staff_app, scene.agent_a.id, action, scene.user_a)
    assert (result.outcome, result.error) == ("refused", "role_not_allowed")
    assert [r.outcome for r in staff_records(staff_app)] == ["refused"]
    assert get_status(staff_app, scene.user_a) == "active"


@pytest.mark.parametrize("reason", [None, "", "   "])
def test_an_action_without_a_reason_is_refused_and_changes_nothing(staff_app, reason):
    scene = build_scene(staff_app)
    prepare(staff_app, scene, "disable")
    result = _perform(staff_app, scene.admin_a.id, "disable", scene.user_a, reason=reason)
    assert (result.outcome, result.error, result.http_status) == (
        "invalid", "reason_required", 400)
    assert get_status(staff_app, scene.user_a) == "active"
    assert staff_records(staff_app) == []


def test_an_action_the_account_state_does_not_allow_fails_with_one_record(staff_app):
    scene = build_scene(staff_app)
    result = _perform(staff_app, scene.agent_a.id, "resend_activation", scene.user_a)
    assert (result.outcome, result.error) == ("failed", "not_pending")
    records = staff_records(staff_app)
    assert [(r.outcome, r.details["error"]) for r in records] == [("failed", "not_pending")]


def test_a_binding_pin_goes_only_to_the_contact_on_record(staff_app):
    scene = build_scene(staff_app)
    result = _perform(staff_app, scene.agent_a.id, "send_binding_pin", scene.user_a,
                      customer_number="100234", channel="email")
    assert result.ok
    from broker.models import OutboxMessage

    with sessions(staff_app)() as db:
        messages = list(db.scalars(select(OutboxMessage)))
    assert [m.recipient for m in messages] == ["kari@example.com"]
    assert "100234" in messages[0].body_text


def test_a_customer_account_of_another_utility_cannot_be_bound(staff_app):
    scene = build_scene(staff_app)
    from .staff_support import add_account

    add_account(staff_app, TENANT_B, "777")
    result = _perform(staff_app, scene.admin_a.id, "bind_customer", scene.user_a,
                      customer_number="777")
    assert (result.outcome, result.error) == ("failed", "no_such_customer_account")


def test_the_user_sees_support_actions_on_their_own_account_but_not_refusals(staff_app):
    scene = build_scene(staff_app)
    prepare(staff_app, scene, "unlock")
    _perform(staff_app, scene.agent_a.id, "unlock", scene.user_a, reason="locked out on phone")
    _perform(staff_app, scene.agent_b.id, "revoke_sessions", scene.user_a)
    with sessions(staff_app)() as db:
        seen = support_actions_for(db, scene.user_a)
        assert support_actions_for(db, scene.user_b) == []
    assert [(s["action"], s["label"], s["reason"]) for s in seen] == [
        ("unlock", "Account unlocked", "locked out on phone")]


def test_the_audit_log_refuses_changes_and_deletions(staff_app):
    scene = build_scene(staff_app)
    _perform(staff_app, scene.agent_a.id, "revoke_sessions", scene.user_a)
    with sessions(staff_app)() as db:
        record = db.scalars(select(AuditEvent)).first()
        record.reason = "rewritten"
        with pytest.raises(AuditLogIsAppendOnly):
            db.flush()
        db.rollback()
        db.delete(db.scalars(select(AuditEvent)).first())
        with pytest.raises(AuditLogIsAppendOnly):
            db.flush()


def test_the_json_lines_export_holds_only_the_staff_members_utilities(staff_app):
    scene = build_scene(staff_app)
    _perform(staff_app, scene.agent_a.id, "revoke_sessions", scene.user_a)
    _perform(staff_app, scene.agent_b.id, "revoke_sessions", scene.user_b)
    import json

    with sessions(staff_app)() as db:
        lines = list(export_json_lines(db, [TENANT_A], AuditQuery()))
    records = [json.loads(line) for line in lines]
    assert [(r["tenant"], r["event"], r["target_user_id"]) for r in records] == [
        (TENANT_A, "sessions_revoked", scene.user_a)]


def test_staff_rules_as_plain_functions():
    assert may_act(["support_agent"], [TENANT_A], "unlock", TENANT_A).allowed
    assert may_act(["support_agent"], [TENANT_A], "unlock", TENANT_B).reason == (
        "tenant_not_allowed")
    assert may_act(["support_agent"], [TENANT_A], "disable", TENANT_A).reason == (
        "role_not_allowed")
    assert may_act(["tenant_admin"], ["*"], "disable", TENANT_B).allowed
    assert may_act(["tenant_admin"], [TENANT_A], "set_password", TENANT_A).reason == (
        "unknown_action")
    assert may_manage_staff(["support_agent"], [TENANT_A], ["support_agent"], [TENANT_A]).reason \
        == "role_not_allowed"
    assert may_manage_staff(["tenant_admin"], [TENANT_A], ["support_agent"], [TENANT_B]).reason \
        == "tenant_not_allowed"
    assert may_manage_staff(["tenant_admin"], [TENANT_A], ["tenant_admin"], ["*"]).reason == (
        "tenant_not_allowed")
    assert check_reason(" \n").reason == "reason_required"
    assert check_reason("x" * 1001).reason == "reason_too_long"


def test_staff_create_prints_the_totp_uri_once_and_stores_no_plain_secret(sqlite_url, tmp_path):
    app = make_app(sqlite_url)  # creates the tenant rows
    app.extensions["broker"].engine.dispose()
    config_file = cli_config_file(tmp_path, sqlite_url)
    runner = CliRunner()
    result = runner.invoke(broker_cli, [
        "staff", "create", "--email", "First.Admin@Utility.test", "--name", "First Admin",
        "--role", "tenant_admin", "--tenant", "fjordvarme", "--config", str(config_file),
    ])
    assert result.exit_code == 0, result.output
    assert "otpauth://totp/" in result.output and "First%20Admin" not in result.output
    password = result.output.split("first password (shown once): ")[1].split()[0]
    engine_app = make_app(sqlite_url)
    with sessions(engine_app)() as db:
        staff = db.scalar(select(Staff))
        assert staff.email == "first.admin@utility.test"
        assert staff.roles == ["tenant_admin"] and staff.tenants == ["fjordvarme"]
        assert password not in staff.password_hash and staff.password_hash.startswith(
            "$argon2id$")
    again = runner.invoke(broker_cli, [
        "staff", "create", "--email", "first.admin@utility.test", "--role", "support_agent",
        "--tenant", "fjordvarme", "--config", str(config_file),
    ])
    assert again.exit_code == 1 and "exists" in again.output
    unknown = runner.invoke(broker_cli, [
        "staff", "create", "--email", "x@utility.test", "--role", "support_agent",
        "--tenant", "nowhere", "--config", str(config_file),
    ])
    assert unknown.exit_code == 2 and "unknown tenant" in unknown.output
    engine_app.extensions["broker"].engine.dispose()
