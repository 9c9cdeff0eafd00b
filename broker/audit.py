"""The append-only audit log: security events and staff actions.

Records are only ever inserted, in the same transaction as the change they describe.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from .models import AuditEvent


def record(
    db: Session,
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
) -> AuditEvent:
    """Add one audit record to ``db``'s transaction. ``details`` carry ids, never personal data."""
    entry = AuditEvent(
        tenant=tenant,
        event=event,
        actor_type=actor_type,
        actor_id=None if actor_id is None else str(actor_id),
        target_user_id=target_user_id,
        source_address=source_address,
        reason=reason,
        outcome=outcome,
        details=details,
    )
    db.add(entry)
    return entry
