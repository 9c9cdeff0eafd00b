"""Single-use links sent by email (password reset, unlock, email change).

One mechanism for all of them: a random token goes into the link, its SHA-256 into a
``Verification`` row with a purpose and an expiry. Peeking (to show a confirm page) does not
spend a link; spending is one atomic ``UPDATE ... RETURNING``, so two clicks cannot both win.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.orm import Session

from broker.models import Verification, utcnow
from broker.security import new_token, sha256_hex

# Issued by flows.profile to the new address; spent by it, and by every new password
# (flows.password_reset.set_new_password): the owner who resets a password must also undo a
# change of address that whoever held the session asked for.
EMAIL_CHANGE = "email_change"


def issue(
    db: Session,
    *,
    tenant: str,
    user_id: int,
    purpose: str,
    target: str,
    ttl: timedelta,
    now: datetime | None = None,
) -> str:
    """Store a new link in the caller's transaction; returns the token for the URL."""
    now = now or utcnow()
    token = new_token()
    db.add(
        Verification(
            tenant=tenant, user_id=user_id, purpose=purpose, method="link", target=target,
            secret_digest=sha256_hex(token), max_attempts=1, created_at=now, last_sent_at=now,
            expires_at=now + ttl,
        )
    )
    return token


def _live(tenant: str, purpose: str, token: str, now: datetime) -> tuple[ColumnElement[bool], ...]:
    return (
        Verification.tenant == tenant,
        Verification.purpose == purpose,
        Verification.secret_digest == sha256_hex(token),
        Verification.consumed_at.is_(None),
        Verification.expires_at > now,
    )


def peek(
    db: Session, *, tenant: str, purpose: str, token: str, now: datetime | None = None
) -> Verification | None:
    """The live link behind ``token``, without spending it (for a confirm page)."""
    return db.scalar(select(Verification).where(*_live(tenant, purpose, token, now or utcnow())))


def spend(
    db: Session, *, tenant: str, purpose: str, token: str, now: datetime | None = None
) -> tuple[int | None, str] | None:
    """Use the link up atomically; returns (user_id, target), or None if it was not live."""
    row = db.execute(
        update(Verification)
        .where(*_live(tenant, purpose, token, now or utcnow()))
        .values(consumed_at=now or utcnow())
        .returning(Verification.user_id, Verification.target)
        .execution_options(synchronize_session=False)
    ).first()
    return (row[0], row[1]) if row else None


def spend_all(db: Session, *, user_id: int, purpose: str, now: datetime | None = None) -> None:
    """Use up every open link of a purpose for a user (a new one replaces them)."""
    db.execute(
        update(Verification)
        .where(Verification.user_id == user_id, Verification.purpose == purpose,
               Verification.consumed_at.is_(None))
        .values(consumed_at=now or utcnow())
        .execution_options(synchronize_session=False)
    )
