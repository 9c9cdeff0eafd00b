"""What the OpenID Connect provider stores: signing keys (sealed), codes and tokens (digests)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from ..crypto import SealedJSON
from .base import Base, utcnow


class SigningKey(Base):
    """A tenant's token signing key. The newest active key signs; retired keys stay published
    until ``published_until`` so tokens they signed still verify."""

    __tablename__ = "signing_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant: Mapped[str] = mapped_column(ForeignKey("tenants.slug"), index=True)
    alg: Mapped[str] = mapped_column(String(8))
    private_jwk: Mapped[dict[str, Any]] = mapped_column(SealedJSON("signing_keys.private_jwk"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    retired_at: Mapped[datetime | None]
    published_until: Mapped[datetime | None]


class AuthorizationCode(Base):
    """A single-use authorization code; ``used_at`` is set atomically on redemption."""

    __tablename__ = "authorization_codes"

    code_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant: Mapped[str] = mapped_column(ForeignKey("tenants.slug"))
    client_id: Mapped[str] = mapped_column(String(128))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    login_session_id: Mapped[int | None] = mapped_column(
        ForeignKey("login_sessions.id", ondelete="SET NULL")
    )
    redirect_uri: Mapped[str] = mapped_column(String(2000))
    scope: Mapped[str] = mapped_column(String(1000))
    nonce: Mapped[str | None] = mapped_column(String(255))
    code_challenge: Mapped[str | None] = mapped_column(String(128))
    code_challenge_method: Mapped[str | None] = mapped_column(String(8))
    auth_time: Mapped[datetime]
    amr: Mapped[list[Any]] = mapped_column(default=list)
    acr: Mapped[str] = mapped_column(String(32), default="low")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]


class Token(Base):
    """An access token and, optionally, its refresh token. Both are random; we keep digests.

    Refresh tokens rotate: each use makes a new row in the same ``family_id`` and marks the old
    one ``rotated_at``. Presenting a rotated token again revokes the whole family.
    """

    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant: Mapped[str] = mapped_column(ForeignKey("tenants.slug"))
    client_id: Mapped[str] = mapped_column(String(128), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    login_session_id: Mapped[int | None] = mapped_column(
        ForeignKey("login_sessions.id", ondelete="SET NULL"), index=True
    )
    family_id: Mapped[str] = mapped_column(String(64), index=True)
    code_sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    access_token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    refresh_token_sha256: Mapped[str | None] = mapped_column(String(64), unique=True)
    scope: Mapped[str] = mapped_column(String(1000))
    auth_time: Mapped[datetime]
    amr: Mapped[list[Any]] = mapped_column(default=list)
    acr: Mapped[str] = mapped_column(String(32), default="low")
    issued_at: Mapped[datetime] = mapped_column(default=utcnow)
    access_expires_at: Mapped[datetime]
    refresh_expires_at: Mapped[datetime | None]
    rotated_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
