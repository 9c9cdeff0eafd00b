"""Retention: remove what is past its tenant's retention period (``broker purge``).

Per tenant, with the periods of ``[tenants.<slug>.retention]`` and ``retention_days``:

- registrations never activated, after ``unactivated_days`` (erased like a deletion request);
- verifications, journeys (flows) and invitations once expired for their grace period;
- authorization codes, tokens and login sessions once past their lifetime plus a grace period
  (kept that long so a replayed code or rotated refresh token is still recognised);
- delivered messages after ``delivered_outbox_days``, undeliverable ones and audit records
  after ``retention_days``;
- idle attempt counters (``broker.attempts.purge_idle_counters``), and staff sessions ended
  (expired, idle past their timeout, or logged out) longer ago than the longest grace period;
- accounts unused for ``inactive_account_warn_days`` are warned once by email (remembered as
  an ``inactive_account_warned`` audit record) and, ``inactive_account_delete_days`` after
  their last use and no sooner than the gap between the two after the warning, erased.

Safe to run from cron on every host at once: each step deletes in bounded batches chosen by
primary key, each batch in its own short transaction; on PostgreSQL a transaction-scoped
advisory lock per tenant and step makes concurrent hosts take turns (on SQLite ``BEGIN
IMMEDIATE`` already does), so a second run finds nothing left and nobody gets two warnings.
Running it again removes nothing more: it is idempotent.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import click
from jinja2 import (
    Environment,
    FileSystemLoader,
    StrictUndefined,
    TemplateNotFound,
    select_autoescape,
)
from sqlalchemy import ColumnElement, and_, delete, func, or_, select, text
from sqlalchemy.orm import Session, sessionmaker

from flows.privacy import Erasure, erase_account

from . import audit
from . import db as database
from .attempts import purge_idle_counters
from .config import BrokerConfig, ConfigError, TenantConfig, load_config
from .messaging.compose import InvalidEmailAddress, normalize_email, sender_name
from .messaging.outbox import enqueue
from .models import (
    AuditEvent,
    AuthorizationCode,
    Flow,
    Invitation,
    LoginSession,
    OutboxMessage,
    StaffSession,
    Token,
    User,
    Verification,
    utcnow,
)

log = logging.getLogger(__name__)
BATCH_SIZE = 500
ACCOUNT_BATCH_SIZE = 50
WARNED_EVENT = "inactive_account_warned"
WARNING_TEMPLATE = "privacy_inactive_warning"
TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"

Notify = Callable[[TenantConfig, Erasure], None]


@dataclass
class PurgeReport:
    """How many rows each step removed (or warned), per tenant; ``*`` for shared tables."""

    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, tenant: str, step: str, count: int) -> None:
        steps = self.counts.setdefault(tenant, {})
        steps[step] = steps.get(step, 0) + count

    def total(self, step: str) -> int:
        return sum(steps.get(step, 0) for steps in self.counts.values())

    def lines(self) -> list[str]:
        return [
            f"{tenant}: " + ", ".join(f"{step} {count}" for step, count in steps.items())
            for tenant, steps in self.counts.items()
        ]


def purge(
    config: BrokerConfig,
    sessions: sessionmaker[Session],
    *,
    now: datetime | None = None,
    notify: Notify | None = None,
    batch_size: int = BATCH_SIZE,
) -> PurgeReport:
    """Run every retention step for every tenant; see the module docstring."""
    now = now or utcnow()
    report = PurgeReport()
    for tenant in config.tenants.values():
        _purge_tenant(config, tenant, sessions, now, report, notify, batch_size)
    _purge_shared(config, sessions, now, report, batch_size)
    return report


def _purge_tenant(
    config: BrokerConfig, tenant: TenantConfig, sessions: sessionmaker[Session], now: datetime,
    report: PurgeReport, notify: Notify | None, batch_size: int,
) -> None:
    keep = tenant.retention
    slug = tenant.slug

    def days(count: float) -> datetime:
        return now - timedelta(days=count)

    def rows(step: str, model: Any, *conditions: ColumnElement[bool]) -> None:
        count = _delete_in_batches(sessions, f"{slug}:{step}", model, conditions, batch_size)
        report.add(slug, step, count)

    rows("verifications", Verification, Verification.tenant == slug,
         Verification.expires_at < days(keep.verification_grace_days))
    rows("flows", Flow, Flow.tenant == slug, Flow.expires_at < days(keep.flow_grace_days))
    rows("invitations", Invitation, Invitation.tenant == slug,
         Invitation.expires_at < days(keep.invitation_grace_days))
    rows("authorization_codes", AuthorizationCode, AuthorizationCode.tenant == slug,
         AuthorizationCode.expires_at < days(keep.token_grace_days))
    token_cutoff = days(keep.token_grace_days)
    rows("tokens", Token, Token.tenant == slug, Token.access_expires_at < token_cutoff,
         or_(Token.refresh_expires_at.is_(None), Token.refresh_expires_at < token_cutoff))
    rows("login_sessions", LoginSession, LoginSession.tenant == slug,
         or_(LoginSession.expires_at < token_cutoff, LoginSession.revoked_at < token_cutoff))
    rows("delivered_messages", OutboxMessage, OutboxMessage.tenant == slug,
         OutboxMessage.status == "sent", OutboxMessage.sent_at < days(keep.delivered_outbox_days))
    rows("undeliverable_messages", OutboxMessage, OutboxMessage.tenant == slug,
         OutboxMessage.status == "dead", OutboxMessage.created_at < days(tenant.retention_days))
    rows("audit_records", AuditEvent, AuditEvent.tenant == slug,
         AuditEvent.at < days(tenant.retention_days))

    unactivated = (User.tenant == slug, User.status == "pending",
                   User.created_at < days(keep.unactivated_days))
    report.add(slug, "unactivated_accounts", _erase_in_batches(
        config, tenant, sessions, f"{slug}:unactivated", unactivated, "unactivated", notify))
    if keep.inactive_account_warn_days:
        report.add(slug, "inactive_accounts_warned",
                   _warn_inactive(config, tenant, sessions, now))
    if keep.inactive_account_delete_days:
        report.add(slug, "inactive_accounts_deleted", _delete_inactive(
            config, tenant, sessions, now, notify))


def _purge_shared(
    config: BrokerConfig, sessions: sessionmaker[Session], now: datetime, report: PurgeReport,
    batch_size: int,
) -> None:
    """Tables without a tenant: the longest period of any tenant applies."""
    if not config.tenants:
        return
    audit_days = max(t.retention_days for t in config.tenants.values())
    count = _delete_in_batches(
        sessions, "*:audit_records", AuditEvent,
        (AuditEvent.tenant.is_(None), AuditEvent.at < now - timedelta(days=audit_days)),
        batch_size,
    )
    report.add("*", "audit_records", count)
    ended = now - timedelta(days=max(t.retention.token_grace_days
                                     for t in config.tenants.values()))
    report.add("*", "staff_sessions", _delete_in_batches(
        sessions, "*:staff_sessions", StaffSession,
        (or_(StaffSession.expires_at < ended, StaffSession.idle_until < ended,
             StaffSession.revoked_at < ended),),
        batch_size,
    ))
    idle_days = max(t.retention.attempt_counter_idle_days for t in config.tenants.values())
    with database.transaction(sessions) as db:
        _take_turns(db, "*:attempt_counters")
        report.add("*", "attempt_counters",
                   purge_idle_counters(db, timedelta(days=idle_days), now=now))


# --- Batches -----------------------------------------------------------------------------------


def _take_turns(db: Session, step: str) -> None:
    """On PostgreSQL, hosts running the same step wait for each other's batch to commit."""
    if db.get_bind().dialect.name == "postgresql":
        db.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"),
                   {"key": f"broker-purge:{step}"})


def _delete_in_batches(
    sessions: sessionmaker[Session], step: str, model: Any,
    conditions: tuple[ColumnElement[bool], ...], batch_size: int,
) -> int:
    """Delete rows matching ``conditions``, ``batch_size`` primary keys per transaction.

    A Core DELETE on the table: no ORM events, so the audit log's append-only guard (which
    watches ORM flushes) does not stand in the way of its own retention period."""
    table = model.__table__
    key = table.primary_key.columns.values()[0]
    total = 0
    while True:
        with database.transaction(sessions) as db:
            _take_turns(db, step)
            ids = list(db.scalars(select(key).where(*conditions).order_by(key)
                                  .limit(batch_size)))
            if not ids:
                return total
            result = db.execute(delete(table).where(key.in_(ids), *conditions))
            total += int(result.rowcount or 0)  # type: ignore[attr-defined]
        if len(ids) < batch_size:
            return total


def _erase_in_batches(
    config: BrokerConfig, tenant: TenantConfig, sessions: sessionmaker[Session], step: str,
    conditions: tuple[ColumnElement[bool], ...], cause: str, notify: Notify | None,
) -> int:
    """Erase whole accounts (each with its rows and a pseudonymous audit record)."""
    total = 0
    while True:
        erased: list[Erasure] = []
        with database.transaction(sessions) as db:
            _take_turns(db, step)
            users = list(db.scalars(select(User).where(*conditions).order_by(User.id)
                                    .limit(ACCOUNT_BATCH_SIZE)))
            for user in users:
                erased.append(erase_account(db, tenant, user, hmac_key=config.hmac_key,
                                            actor_type="system", actor_id=None, cause=cause))
        total += len(erased)
        if notify is not None:
            for erasure in erased:
                if erasure.portals:
                    notify(tenant, erasure)
        if len(users) < ACCOUNT_BATCH_SIZE:
            return total


# --- Inactive accounts -------------------------------------------------------------------------


def _last_use() -> ColumnElement[Any]:
    return func.coalesce(User.last_login_at, User.created_at)


def _warned_since_last_use(before: datetime | None = None) -> ColumnElement[bool]:
    warned = select(AuditEvent.id).where(
        AuditEvent.target_user_id == User.id, AuditEvent.event == WARNED_EVENT,
        AuditEvent.at >= _last_use(),
    )
    if before is not None:
        warned = warned.where(AuditEvent.at <= before)
    return warned.exists()


def _warn_inactive(
    config: BrokerConfig, tenant: TenantConfig, sessions: sessionmaker[Session], now: datetime
) -> int:
    """Email each account unused for ``inactive_account_warn_days``, once per quiet spell."""
    keep = tenant.retention
    due = and_(User.tenant == tenant.slug, User.status == "active",
               _last_use() < now - timedelta(days=keep.inactive_account_warn_days),
               ~_warned_since_last_use())
    total = 0
    while True:
        with database.transaction(sessions) as db:
            _take_turns(db, f"{tenant.slug}:inactive_warn")
            users = list(db.scalars(select(User).where(due).order_by(User.id)
                                    .limit(ACCOUNT_BATCH_SIZE)))
            for user in users:
                sent = _send_warning(db, config, tenant, user, now)
                audit.record(db, WARNED_EVENT, tenant=tenant.slug, target_user_id=user.id,
                             outcome="ok" if sent else "failed",
                             delete_after_days=keep.inactive_account_delete_days or None)
        total += len(users)
        if len(users) < ACCOUNT_BATCH_SIZE:
            return total


def _delete_inactive(
    config: BrokerConfig, tenant: TenantConfig, sessions: sessionmaker[Session], now: datetime,
    notify: Notify | None,
) -> int:
    keep = tenant.retention
    conditions: tuple[ColumnElement[bool], ...] = (
        User.tenant == tenant.slug, User.status.in_(("active", "disabled")),
        _last_use() < now - timedelta(days=keep.inactive_account_delete_days),
    )
    if keep.inactive_account_warn_days:
        # The warning is a chance to log in and keep the account; a disabled account has no
        # such chance (and gets no warning): its time alone decides.
        notice = timedelta(days=keep.inactive_account_delete_days
                           - keep.inactive_account_warn_days)
        conditions += (or_(User.status != "active",
                           _warned_since_last_use(before=now - notice)),)
    return _erase_in_batches(config, tenant, sessions, f"{tenant.slug}:inactive_delete",
                             conditions, "inactive", notify)


_emails = Environment(loader=FileSystemLoader(str(TEMPLATES_DIR)), undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True,
                      autoescape=select_autoescape(enabled_extensions=("html",)))


def _send_warning(
    db: Session, config: BrokerConfig, tenant: TenantConfig, user: User, now: datetime
) -> bool:
    """Put the warning in the outbox; False when the account has no usable address."""
    if not user.email:
        return False
    try:
        recipient = normalize_email(user.email)
    except InvalidEmailAddress:
        return False
    locale = user.locale or tenant.default_locale
    template = None
    for candidate in (locale, "en"):
        try:
            template = _emails.get_template(f"email/{WARNING_TEMPLATE}.{candidate}.txt")
            break
        except TemplateNotFound:
            continue
    assert template is not None, "the English warning text ships with the broker"
    keep = tenant.retention
    delete_on = None
    if keep.inactive_account_delete_days:
        delete_on = (now + timedelta(days=keep.inactive_account_delete_days
                                     - keep.inactive_account_warn_days)).date().isoformat()
    values = {"tenant": tenant, "locale": locale, "delete_on": delete_on,
              "login_url": f"{config.public_url.rstrip('/')}/t/{tenant.slug}/login"}
    context = template.new_context(values)
    subject = " ".join("".join(template.blocks["subject"](context)).split())
    body = "".join(template.blocks["body"](template.new_context(values))).strip() + "\n"
    enqueue(db, tenant=tenant.slug, channel="email", recipient=recipient, subject=subject,
            body_text=body, sender_name=sender_name(tenant))
    return True


# --- Telling portals, from the command line ----------------------------------------------------


def backchannel_notifier(config: BrokerConfig, sessions: sessionmaker[Session]) -> Notify:
    """Back-channel logout for accounts erased by ``broker purge``, posted before it exits."""
    import requests

    from .oidc.keys import KeyStore
    from .oidc.logout import BACKCHANNEL_TIMEOUT_SECONDS, logout_token
    from .oidc.server import build_servers

    keys = KeyStore(sessions, config.tenants)
    servers = build_servers(config, keys)

    def notify(tenant: TenantConfig, erasure: Erasure) -> None:
        server = servers[tenant.slug]
        keys.ring(tenant.slug)
        for client_id in sorted(erasure.portals):
            client = server.query_client(client_id)
            if client is None or not client.config.backchannel_logout_uri:
                continue
            token = logout_token(server, client_id, erasure.subject, None)
            try:
                requests.post(client.config.backchannel_logout_uri,
                              data={"logout_token": token}, timeout=BACKCHANNEL_TIMEOUT_SECONDS)
            except requests.RequestException as error:
                log.warning("back-channel logout failed", extra={"error": type(error).__name__})

    return notify


@click.command("purge")
@click.option("--config", "config_path", envvar="BROKER_CONFIG", default="broker.toml",
              show_default=True, help="TOML configuration file (env BROKER_CONFIG).")
def purge_command(config_path: str) -> None:
    """Remove what is past each tenant's retention period, and say what went.

    Idempotent; safe from cron on every broker host at once.
    """
    try:
        config = load_config(config_path)
    except ConfigError as error:
        click.echo(str(error), err=True)
        sys.exit(2)
    engine = database.make_engine(config.database_url)
    sessions = database.make_sessionmaker(engine)
    try:
        report = purge(config, sessions, notify=backchannel_notifier(config, sessions))
    finally:
        engine.dispose()
    for line in report.lines():
        click.echo(line)
