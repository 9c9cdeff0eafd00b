"""Tenants, users and the ways they prove who they are."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..crypto import SealedText
from .base import Base, utcnow


class Tenant(Base):
    """A utility. Its rules live in the config; this row anchors its data."""

    __tablename__ = "tenants"

    slug: Mapped[str] = mapped_column(String(63), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class User(Base):
    """A person with an account at one tenant.

    ``status``: ``pending`` until the email is verified, then ``active``; ``disabled`` by support.
    ``subject`` is the stable, opaque ``sub`` the portals see.
    """

    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("tenant", "email", name="uq_users_tenant_email"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant: Mapped[str] = mapped_column(ForeignKey("tenants.slug"), index=True)
    subject: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str | None] = mapped_column(String(320))
    email_verified: Mapped[bool] = mapped_column(default=False)
    name: Mapped[str] = mapped_column(String(200), default="")
    phone: Mapped[str | None] = mapped_column(String(32))
    locale: Mapped[str | None] = mapped_column(String(8))
    registration_type: Mapped[str] = mapped_column(String(16), default="private")
    status: Mapped[str] = mapped_column(String(16), default="pending")
    password_hash: Mapped[str | None] = mapped_column(String(255))
    password_changed_at: Mapped[datetime | None]
    totp_secret: Mapped[str | None] = mapped_column(SealedText("users.totp_secret"))
    totp_last_step: Mapped[int | None]
    privacy_version: Mapped[str | None] = mapped_column(String(32))
    privacy_accepted_at: Mapped[datetime | None]
    ebill_opt_in: Mapped[bool] = mapped_column(default=False)
    failed_logins: Mapped[int] = mapped_column(default=0)
    lock_count: Mapped[int] = mapped_column(default=0)
    locked_at: Mapped[datetime | None]
    locked_until: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_login_at: Mapped[datetime | None]

    identities: Mapped[list[FederatedIdentity]] = relationship(
        back_populates="user", cascade="all, delete-orphan"
    )
    recovery_codes: Mapped[list[RecoveryCode]] = relationship(cascade="all, delete-orphan")


class RecoveryCode(Base):
    """A single-use TOTP recovery code, stored as a keyed HMAC."""

    __tablename__ = "recovery_codes"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    code_hmac: Mapped[str] = mapped_column(String(64))
    used_at: Mapped[datetime | None]


class FederatedIdentity(Base):
    """A link from a user to an upstream identity (MitID uuid, Google sub, ...)."""

    __tablename__ = "federated_identities"
    __table_args__ = (
        UniqueConstraint("tenant", "provider", "subject", name="uq_federated_identity"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant: Mapped[str] = mapped_column(ForeignKey("tenants.slug"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    provider: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(String(255))
    email: Mapped[str | None] = mapped_column(String(320))
    display_name: Mapped[str] = mapped_column(String(200), default="")
    national_id_hmac: Mapped[str | None] = mapped_column(String(64), index=True)
    linked_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_login_at: Mapped[datetime | None]

    user: Mapped[User] = relationship(back_populates="identities")


class LoginSession(Base):
    """A browser's login at one tenant. The cookie holds a token; we keep its SHA-256."""

    __tablename__ = "login_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    tenant: Mapped[str] = mapped_column(ForeignKey("tenants.slug"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    auth_time: Mapped[datetime] = mapped_column(default=utcnow)
    amr: Mapped[list[Any]] = mapped_column(default=list)
    acr: Mapped[str] = mapped_column(String(32), default="low")
    remember: Mapped[bool] = mapped_column(default=False)
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Verification(Base):
    """Proof of control of an email address or phone, by code or by single-use link.

    ``purpose``: activation, email_change, password_reset, unlock, link_identity.
    Codes are kept as keyed HMACs, link tokens as SHA-256 digests.
    """

    __tablename__ = "verifications"
    __table_args__ = (Index("ix_verifications_user_purpose", "user_id", "purpose"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant: Mapped[str] = mapped_column(ForeignKey("tenants.slug"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    purpose: Mapped[str] = mapped_column(String(32))
    method: Mapped[str] = mapped_column(String(8))
    target: Mapped[str] = mapped_column(String(320))
    secret_digest: Mapped[str] = mapped_column(String(64), index=True)
    attempts: Mapped[int] = mapped_column(default=0)
    max_attempts: Mapped[int] = mapped_column(default=5)
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_sent_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    consumed_at: Mapped[datetime | None]


class Flow(Base):
    """Server-side state of a multi-step journey, under an unguessable id."""

    __tablename__ = "flows"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant: Mapped[str] = mapped_column(ForeignKey("tenants.slug"))
    kind: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(32))
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class AttemptCounter(Base):
    """Failed guesses at one secret (a TOTP, a customer number's PIN, ...), counted atomically.

    ``key`` names what is guarded, e.g. ``bind:aaro-vand:100234``. The row is updated with a
    single ``INSERT ... ON CONFLICT DO UPDATE ... RETURNING`` so the limit holds across broker
    processes.
    """

    __tablename__ = "attempt_counters"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    failures: Mapped[int] = mapped_column(default=0)
    lock_count: Mapped[int] = mapped_column(default=0)
    locked_until: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
