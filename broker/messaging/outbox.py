"""Writing to the outbox: the only way the broker sends anything.

``enqueue`` adds the message to the caller's transaction, so it exists exactly when the state
change that caused it was committed. Delivery happens later, in ``broker.messaging.worker``.
The bodies are sealed at rest by their column type (``broker.crypto.SealedText``): codes and
links in a pending or dead message are not readable from the database or its backups.
"""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session, defer

from ..models import OutboxMessage, utcnow


def enqueue(
    db: Session,
    *,
    tenant: str,
    channel: str,
    recipient: str,
    body_text: str,
    subject: str = "",
    body_html: str | None = None,
    sender_name: str = "",
) -> OutboxMessage:
    if channel not in ("email", "sms"):
        raise ValueError(f"unknown channel {channel!r}")
    message = OutboxMessage(
        tenant=tenant,
        channel=channel,
        recipient=recipient,
        subject=subject,
        body_text=body_text,
        body_html=body_html,
        sender_name=sender_name,
        message_key=uuid.uuid4().hex,
    )
    db.add(message)
    return message


def dead_messages(db: Session, tenant: str, limit: int = 200) -> list[OutboxMessage]:
    """Messages that will not be delivered, newest first: for support to see and act on.

    Without their bodies: support sees who, when and why, never the code inside."""
    return list(
        db.scalars(
            select(OutboxMessage)
            .options(defer(OutboxMessage.body_text), defer(OutboxMessage.body_html))
            .where(OutboxMessage.tenant == tenant, OutboxMessage.status == "dead")
            .order_by(OutboxMessage.created_at.desc(), OutboxMessage.id.desc())
            .limit(limit)
        )
    )


def retry_dead(db: Session, tenant: str, message_id: int) -> bool:
    """Give a dead message a fresh set of attempts (e.g. after the gateway was fixed)."""
    message = db.get(OutboxMessage, message_id)
    if message is None or message.tenant != tenant or message.status != "dead":
        return False
    message.status = "pending"
    message.attempts = 0
    message.next_attempt_at = utcnow()
    message.claimed_by = None
    message.claimed_until = None
    return True
