"""broker purge: exactly what is past retention goes, twice in parallel without error."""

from __future__ import annotations

import secrets
import threading
from datetime import timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from broker import audit
from broker import db as database
from broker.cli import main
from broker.models import (
    AttemptCounter,
    AuditEvent,
    AuthorizationCode,
    CustomerAccount,
    Flow,
    Invitation,
    LoginSession,
    OutboxMessage,
    Staff,
    StaffSession,
    Tenant,
    Token,
    User,
    Verification,
    utcnow,
)
from broker.retention import WARNED_EVENT, purge

from .conftest import cli_config_file, make_config

NO = "fjordvarme"
NOW = utcnow()


def _config(database_url: str, **retention: int):  # type: ignore[no-untyped-def]
    config = make_config(database_url)
    data = config.model_dump()
    for tenant in data["tenants"].values():
        tenant["retention"].update(retention)
    return type(config).model_validate(data)


def _sessions(config):  # type: ignore[no-untyped-def]
    engine = database.make_engine(config.database_url)
    sessions = database.make_sessionmaker(engine)
    with database.transaction(sessions) as db:
        for slug, tenant in config.tenants.items():
            if db.get(Tenant, slug) is None:
                db.add(Tenant(slug=slug, name=tenant.name))
    return engine, sessions


def _ago(days: float):  # type: ignore[no-untyped-def]
    return NOW - timedelta(days=days)


def _seed(sessions) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """One row just past and one just within each period (defaults: see RetentionConfig)."""
    with database.transaction(sessions) as db:
        users = {}
        for key, status, created, last in (
            ("old_pending", "pending", 31, None), ("new_pending", "pending", 29, None),
            ("active", "active", 400, 1),
        ):
            user = User(tenant=NO, subject=secrets.token_hex(16), email=f"{key}@example.no",
                        name=key, status=status, created_at=_ago(created),
                        last_login_at=_ago(last) if last is not None else None)
            db.add(user)
            db.flush()
            users[key] = user.id
        active = users["active"]
        account = CustomerAccount(tenant=NO, number="555", kind="private")
        db.add(account)
        db.flush()
        for tag, days in (("old", 8), ("new", 6)):
            db.add(Verification(tenant=NO, user_id=active, purpose="password_reset",
                                method="link", target=f"{tag}@example.no",
                                secret_digest=secrets.token_hex(32), expires_at=_ago(days)))
            db.add(Invitation(tenant=NO, customer_account_id=account.id, email=f"{tag}@x.no",
                              token_sha256=secrets.token_hex(32),
                              expires_at=_ago(days + 23)))  # 31 and 29 days
            db.add(Flow(id=f"{tag}-flow", tenant=NO, kind="authorize", state="login",
                        expires_at=_ago(days / 4)))  # 2 and 1.5 days... see below
            db.add(AuthorizationCode(code_sha256=secrets.token_hex(32), tenant=NO,
                                     client_id="demo-portal", user_id=active,
                                     redirect_uri="http://p", scope="openid",
                                     auth_time=_ago(days), expires_at=_ago(days)))
            db.add(Token(tenant=NO, client_id="demo-portal", user_id=active,
                         family_id=secrets.token_hex(8),
                         access_token_sha256=secrets.token_hex(32), scope="openid",
                         auth_time=_ago(days), access_expires_at=_ago(days),
                         refresh_expires_at=_ago(days)))
            db.add(LoginSession(token_sha256=secrets.token_hex(32), tenant=NO, user_id=active,
                                expires_at=_ago(days)))
            db.add(OutboxMessage(tenant=NO, channel="email", recipient=f"{tag}@x.no",
                                 body_text="hi", message_key=secrets.token_hex(8),
                                 status="sent", sent_at=_ago(days + 23)))  # 31 / 29 days
            db.add(AttemptCounter(key=f"{tag}-counter", updated_at=_ago(days + 23)))
            db.add(AuditEvent(tenant=NO, event="login", actor_type="user",
                              at=_ago(days + 358)))  # 366 and 364 days
        staff = Staff(email="agent@fjordvarme.test", password_hash="x", roles=["support_agent"],
                      tenants=[NO])
        db.add(staff)
        db.flush()
        for tag, days, ending in (("old", 8, "expires_at"), ("old-idle", 8, "idle_until"),
                                  ("old-out", 8, "revoked_at"), ("new", 6, "expires_at")):
            times = {"idle_until": _ago(-1), "expires_at": _ago(-1), "revoked_at": None,
                     ending: _ago(days)}
            db.add(StaffSession(token_sha256=secrets.token_hex(32), staff_id=staff.id,
                                source_address=tag, **times))
        # Within every period, whatever its age: a pending message, a live token.
        db.add(OutboxMessage(tenant=NO, channel="email", recipient="due@x.no", body_text="hi",
                             message_key=secrets.token_hex(8), created_at=_ago(400)))
        db.flush()
        # The flows: expired 2 days and half a day ago (grace 1 day).
        db.get(Flow, "old-flow").expires_at = _ago(2)
        db.get(Flow, "new-flow").expires_at = _ago(0.5)
    return users


def _count(sessions, model, *where) -> int:  # type: ignore[no-untyped-def]
    with sessions() as db:
        return db.scalar(select(func.count()).select_from(model).where(*where)) or 0


def _assert_exactly_the_old_rows_went(sessions, users) -> None:  # type: ignore[no-untyped-def]
    assert _count(sessions, User, User.id == users["old_pending"]) == 0
    assert _count(sessions, User, User.id == users["new_pending"]) == 1
    assert _count(sessions, User, User.id == users["active"]) == 1
    assert _count(sessions, Verification) == 1
    assert _count(sessions, Verification, Verification.target == "new@example.no") == 1
    assert _count(sessions, Invitation) == 1
    assert _count(sessions, Flow) == 1
    assert _count(sessions, Flow, Flow.id == "new-flow") == 1
    assert _count(sessions, AuthorizationCode) == 1
    assert _count(sessions, Token) == 1
    assert _count(sessions, LoginSession) == 1
    assert _count(sessions, OutboxMessage, OutboxMessage.status == "sent") == 1
    assert _count(sessions, OutboxMessage, OutboxMessage.status == "pending") == 1
    assert _count(sessions, AttemptCounter) == 1
    assert _count(sessions, AttemptCounter, AttemptCounter.key == "new-counter") == 1
    assert _count(sessions, AuditEvent, AuditEvent.event == "login") == 1
    assert _count(sessions, StaffSession) == 1
    assert _count(sessions, StaffSession, StaffSession.source_address == "new") == 1


def test_purge_removes_exactly_what_is_past_retention_and_again_nothing(database_url):
    config = _config(database_url)
    engine, sessions = _sessions(config)
    try:
        users = _seed(sessions)
        report = purge(config, sessions, now=NOW)
        _assert_exactly_the_old_rows_went(sessions, users)
        assert report.counts[NO]["verifications"] == 1
        assert report.counts[NO]["unactivated_accounts"] == 1
        assert report.counts[NO]["audit_records"] == 1
        assert report.counts["*"]["attempt_counters"] == 1
        assert report.counts["*"]["staff_sessions"] == 3
        assert any(line.startswith(f"{NO}: verifications 1") for line in report.lines())
        # The erased registration leaves one pseudonymous record, naming nobody.
        with sessions() as db:
            erased = db.scalars(select(AuditEvent).where(
                AuditEvent.event == "account_erased")).one()
            assert erased.target_user_id == users["old_pending"]
            assert erased.details["cause"] == "unactivated"

        again = purge(config, sessions, now=NOW)
        assert all(count == 0 for steps in again.counts.values() for count in steps.values())
        _assert_exactly_the_old_rows_went(sessions, users)
    finally:
        engine.dispose()


def test_two_purges_at_once_neither_fails_and_together_they_remove_it_once(database_url):
    config = _config(database_url)
    engine, sessions = _sessions(config)
    try:
        users = _seed(sessions)
        reports, errors = [], []

        def run() -> None:
            try:
                reports.append(purge(config, sessions, now=NOW, batch_size=1))
            except Exception as error:  # noqa: BLE001 - the test reports it
                errors.append(error)

        threads = [threading.Thread(target=run) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert errors == []
        assert len(reports) == 2
        _assert_exactly_the_old_rows_went(sessions, users)
        assert sum(r.total("verifications") for r in reports) == 1
        assert sum(r.total("unactivated_accounts") for r in reports) == 1
        assert _count(sessions, AuditEvent, AuditEvent.event == "account_erased") == 1
    finally:
        engine.dispose()


def test_an_unused_account_is_warned_once_then_deleted_after_the_notice(database_url):
    config = _config(database_url, inactive_account_warn_days=300,
                     inactive_account_delete_days=330)
    engine, sessions = _sessions(config)
    try:
        with database.transaction(sessions) as db:
            quiet = User(tenant=NO, subject=secrets.token_hex(16), email="quiet@example.no",
                         name="Quiet Person", status="active", created_at=_ago(800),
                         last_login_at=_ago(310))
            busy = User(tenant=NO, subject=secrets.token_hex(16), email="busy@example.no",
                        status="active", created_at=_ago(800), last_login_at=_ago(3))
            db.add_all([quiet, busy])
        first = purge(config, sessions, now=NOW)
        assert first.counts[NO]["inactive_accounts_warned"] == 1
        with sessions() as db:
            [mail] = db.scalars(select(OutboxMessage).where(
                OutboxMessage.recipient == "quiet@example.no")).all()
            assert "log in" in mail.body_text
            assert (NOW + timedelta(days=30)).date().isoformat() in mail.body_text
        second = purge(config, sessions, now=NOW)
        assert second.counts[NO]["inactive_accounts_warned"] == 0
        assert second.counts[NO]["inactive_accounts_deleted"] == 0

        later = NOW + timedelta(days=31)
        third = purge(config, sessions, now=later)
        assert third.counts[NO]["inactive_accounts_deleted"] == 1
        assert _count(sessions, User, User.email == "quiet@example.no") == 0
        assert _count(sessions, User, User.email == "busy@example.no") == 1
        assert _count(sessions, AuditEvent, AuditEvent.event == WARNED_EVENT) == 1
    finally:
        engine.dispose()


def test_a_disabled_account_unused_past_the_deletion_days_is_erased_without_a_warning(
        database_url):
    """Only active accounts are warned (a disabled one cannot log in to keep itself); the
    deletion must not wait for a warning that never comes (PRIVACY.md: erased after that
    many days without a login)."""
    config = _config(database_url, inactive_account_warn_days=300,
                     inactive_account_delete_days=330)
    engine, sessions = _sessions(config)
    try:
        with database.transaction(sessions) as db:
            db.add_all([
                User(tenant=NO, subject=secrets.token_hex(16), email="gone@example.no",
                     status="disabled", created_at=_ago(900), last_login_at=_ago(800)),
                User(tenant=NO, subject=secrets.token_hex(16), email="recent@example.no",
                     status="disabled", created_at=_ago(900), last_login_at=_ago(100)),
            ])
        result = purge(config, sessions, now=NOW)
        assert result.counts[NO]["inactive_accounts_deleted"] == 1
        assert _count(sessions, User, User.email == "gone@example.no") == 0
        assert _count(sessions, User, User.email == "recent@example.no") == 1
        assert _count(sessions, AuditEvent, AuditEvent.event == WARNED_EVENT) == 0
    finally:
        engine.dispose()


def test_an_account_used_after_the_warning_is_kept(sqlite_url):
    config = _config(sqlite_url, inactive_account_warn_days=300,
                     inactive_account_delete_days=330)
    engine, sessions = _sessions(config)
    try:
        with database.transaction(sessions) as db:
            user = User(tenant=NO, subject=secrets.token_hex(16), email="back@example.no",
                        status="active", created_at=_ago(800), last_login_at=_ago(320))
            db.add(user)
            db.flush()
            db.add(AuditEvent(tenant=NO, event=WARNED_EVENT, actor_type="system",
                              target_user_id=user.id, at=_ago(315)))  # after the last use
        purge(config, sessions, now=NOW + timedelta(days=20))  # 340 days: due
        assert _count(sessions, User) == 0
        with database.transaction(sessions) as db:
            db.add(User(tenant=NO, subject=secrets.token_hex(16), email="back2@example.no",
                        status="active", created_at=_ago(800), last_login_at=_ago(320)))
        with database.transaction(sessions) as db:
            user = db.scalars(select(User)).one()
            audit.record(db, WARNED_EVENT, tenant=NO, target_user_id=user.id)
            db.flush()
            user.last_login_at = NOW  # logged in again after the warning
        purge(config, sessions, now=NOW + timedelta(days=20))
        assert _count(sessions, User) == 1
    finally:
        engine.dispose()


def test_broker_purge_command_reports_what_it_removed(sqlite_url, tmp_path):
    path = cli_config_file(tmp_path, sqlite_url,
                           f"[tenants.{NO}.retention]\nverification_grace_days = 7\n")
    from broker.config import load_config

    config = load_config(path)
    engine, sessions = _sessions(config)
    try:
        with database.transaction(sessions) as db:
            db.add(Verification(tenant=NO, purpose="activation", method="code",
                                target="gone@example.no", secret_digest="d" * 64,
                                expires_at=utcnow() - timedelta(days=30)))
    finally:
        engine.dispose()
    result = CliRunner().invoke(main, ["purge", "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert f"{NO}: verifications 1" in result.output
    again = CliRunner().invoke(main, ["purge", "--config", str(path)])
    assert f"{NO}: verifications 0" in again.output


@pytest.mark.parametrize("warn, delete", [(30, 30), (40, 30)])
def test_the_warning_must_come_before_the_deletion(sqlite_url, warn, delete):
    from broker.config import ConfigError

    with pytest.raises((ConfigError, ValueError)):
        _config(sqlite_url, inactive_account_warn_days=warn, inactive_account_delete_days=delete)
