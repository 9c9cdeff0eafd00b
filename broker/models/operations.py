"""The outbox of email and SMS, the audit log, and support staff."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from ..crypto import SealedText
from .base import Base, utcnow


class OutboxMessage(Base):
    """An email or SMS written in the same transaction as the change that causes it.

    ``status``: pending -> sent, or dead after ``max_attempts``. A worker claims a message by
    setting ``claimed_by``/``claimed_until`` atomically; ``message_key`` is stable across retries
    (Message-ID for email, idempotency key for SMS) so a receiver can drop a repeat.
    """

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_due", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant: Mapped[str] = mapped_column(ForeignKey("tenants.slug"))
    channel: Mapped[str] = mapped_column(String(8))
    recipient: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(String(300), default="")
    # Sealed at rest (they carry codes and links); emptied once delivered (``REDACTED_BODY``).
    body_text: Mapped[str] = mapped_column(SealedText("outbox.body_text"))
    body_html: Mapped[str | None] = mapped_column(SealedText("outbox.body_html"))
    sender_name: Mapped[str] = mapped_column(String(200), default="")
    message_key: Mapped[str] = mapped_column(String(128), unique=True)
    status: Mapped[str] = mapped_column(String(8), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    claimed_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]


class AuditEvent(Base):
    """Append-only record of a security event or a staff action."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_tenant_at", "tenant", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant: Mapped[str | None] = mapped_column(String(63))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    event: Mapped[str] = mapped_column(String(64))
    actor_type: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[str | None] = mapped_column(String(64))
    target_user_id: Mapped[int | None] = mapped_column(index=True)
    source_address: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(String(16), default="ok")
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Staff(Base):
    """A support agent or tenant administrator; separate from customers, TOTP required."""

    __tablename__ = "staff"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    password_hash: Mapped[str] = mapped_column(String(255))
    totp_secret: Mapped[str | None] = mapped_column(SealedText("staff.totp_secret"))
    totp_last_step: Mapped[int | None]
    roles: Mapped[list[Any]] = mapped_column(default=list)
    tenants: Mapped[list[Any]] = mapped_column(default=list)
    disabled: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by_staff_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    last_login_at: Mapped[datetime | None]


class StaffSession(Base):
    """A staff login (console cookie or API bearer token); we keep the token's SHA-256.

    ``stage`` is ``totp`` between the password and the TOTP step (a few minutes), then
    ``full``. Sessions end after ``idle_until`` passes without use, or at ``expires_at``.
    """

    __tablename__ = "staff_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    staff_id: Mapped[int] = mapped_column(ForeignKey("staff.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(8), default="cookie")
    stage: Mapped[str] = mapped_column(String(8), default="full")
    source_address: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    idle_until: Mapped[datetime]
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
