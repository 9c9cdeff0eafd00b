"""Reading the audit log: search by tenant, user, event and time range; export as JSON Lines.

The log is append-only. Nothing in the code updates or deletes a record, and
:func:`guard_append_only` makes the ORM refuse it should anyone try, so a flush that would
change history fails instead of quietly rewriting it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, event, select
from sqlalchemy.orm import Session

from ..models import ROW_ID_MAX, AuditEvent
from .search import event_json, tenant_filter

PAGE_SIZE = 100
EXPORT_BATCH = 500
MAX_EXPORT = 100_000


class AuditLogIsAppendOnly(RuntimeError):
    """An audit record was about to be changed or deleted."""


def _refuse(_mapper: Any, _connection: Any, target: AuditEvent) -> None:
    raise AuditLogIsAppendOnly(f"audit record {target.id} may not be changed or deleted")


def guard_append_only() -> None:
    """Make ORM flushes refuse updates and deletes of audit records (idempotent)."""
    for name in ("before_update", "before_delete"):
        if not event.contains(AuditEvent, name, _refuse):
            event.listen(AuditEvent, name, _refuse)


@dataclass(frozen=True)
class AuditQuery:
    """Filters; ``None`` means any. Times are inclusive ``since``, exclusive ``until``."""

    tenant: str | None = None
    user_id: int | None = None
    event: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    outcome: str | None = None


def _statement(staff_tenants: list[str], query: AuditQuery) -> Select[tuple[AuditEvent]]:
    statement = select(AuditEvent).where(tenant_filter(AuditEvent.tenant, staff_tenants))
    if query.tenant:
        statement = statement.where(AuditEvent.tenant == query.tenant)
    if query.user_id is not None:
        statement = statement.where(AuditEvent.target_user_id == query.user_id)
    if query.event:
        statement = statement.where(AuditEvent.event == query.event)
    if query.outcome:
        statement = statement.where(AuditEvent.outcome == query.outcome)
    if query.since is not None:
        statement = statement.where(AuditEvent.at >= query.since)
    if query.until is not None:
        statement = statement.where(AuditEvent.at < query.until)
    return statement


def search_audit(
    db: Session, staff_tenants: list[str], query: AuditQuery, *, limit: int = PAGE_SIZE,
    before_id: int | None = None,
) -> list[AuditEvent]:
    """Newest first, within the staff member's tenants; ``before_id`` pages further back."""
    statement = _statement(staff_tenants, query)
    if before_id is not None:
        statement = statement.where(AuditEvent.id < before_id)
    return list(db.scalars(statement.order_by(AuditEvent.id.desc()).limit(max(1, limit))))


def export_json_lines(
    db: Session, staff_tenants: list[str], query: AuditQuery
) -> Iterator[str]:
    """One JSON object per line, oldest first, fetched in batches (keyset on id).

    Each batch is read in its own short transaction, ended before the lines go out, so a slow
    download holds no database lock (SQLite's transactions here are all writers).
    """
    last_id = 0
    sent = 0
    while sent < MAX_EXPORT:
        batch = list(
            db.scalars(
                _statement(staff_tenants, query)
                .where(AuditEvent.id > last_id)
                .order_by(AuditEvent.id)
                .limit(EXPORT_BATCH)
            )
        )
        lines = [json.dumps(event_json(row), ensure_ascii=False, sort_keys=True) + "\n"
                 for row in batch]
        if batch:
            last_id = batch[-1].id
        db.rollback()  # read-only: end the transaction before streaming
        if not lines:
            return
        yield from lines
        sent += len(lines)


def parse_time(value: str | None) -> datetime | None:
    """An ISO 8601 time from a form or query string; a time without zone is UTC."""
    if not value:
        return None
    parsed = datetime.fromisoformat(value.strip())
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse_row_id(value: str) -> int:
    """A row id from a query string; ValueError unless an INTEGER column can hold it (a larger
    number would otherwise reach PostgreSQL, which refuses to compare it)."""
    number = int(value)
    if not 1 <= number <= ROW_ID_MAX:
        raise ValueError("row id out of range")
    return number


def query_from_args(args: Any) -> AuditQuery:
    """The filter a console page or API call asks for; ValueError names nothing on bad input."""
    user_id = parse_row_id(args["user_id"]) if args.get("user_id") else None
    return AuditQuery(
        tenant=args.get("tenant") or None,
        user_id=user_id,
        event=args.get("event") or None,
        since=parse_time(args.get("since")),
        until=parse_time(args.get("until")),
        outcome=args.get("outcome") or None,
    )
