"""The append-only audit log: security events and staff actions.

Records are only ever inserted, in the same transaction as the change they describe. The
insert is one prebuilt Core statement run at once (not an ORM object flushed later): audit
rows are written on every login and never read back in the request, so the ORM's unit of work
would only cost time.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from .models import AuditEvent

_INSERT = insert(AuditEvent.__table__)
# What ``entry`` gives, with ``at`` (which ``record`` leaves to the column's default).
ENTRY_COLUMNS = ("at", "tenant", "event", "actor_type", "actor_id", "target_user_id",
                 "source_address", "reason", "outcome", "details")


def record(db: Session, event: str, **fields: Any) -> None:
    """Write one audit record in ``db``'s transaction; ``fields`` as for ``entry``. Ids of
    rows made in the same transaction must be flushed first (they are: an id is only known
    after its flush)."""
    record_entry(db, entry(event, **fields))


def record_entry(db: Session, columns: dict[str, Any]) -> None:
    """Write one record made by ``entry`` (``at``: now unless given)."""
    db.connection().execute(_INSERT, columns)


def entry(
    event: str,
    *,
    tenant: str | None,
    actor_type: str = "system",
    actor_id: str | int | None = None,
    target_user_id: int | None = None,
    source_address: str | None = None,
    reason: str | None = None,
    outcome: str = "ok",
    **details: Any,
) -> dict[str, Any]:
    """The columns of one audit record. ``details`` carry ids, never personal data. ``record``
    writes it on its own; ``broker.login_session`` together with other rows (PostgreSQL)."""
    return {
        "tenant": tenant,
        "event": event,
        "actor_type": actor_type,
        "actor_id": None if actor_id is None else str(actor_id),
        "target_user_id": target_user_id,
        "source_address": source_address,
        "reason": reason,
        "outcome": outcome,
        "details": details,
    }
