"""Writing to the outbox: the only way the broker sends anything.

``enqueue`` adds the message to the caller's transaction, so it exists exactly when the state
change that caused it was committed. Delivery happens later, in ``broker.messaging.worker``.
"""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session

from ..models import OutboxMessage


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
