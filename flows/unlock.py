"""Unlocking a locked account: the emailed single-use link, and support's unlock.

The link is sent when the lock happens (``send_unlock_link``). Opening it shows a confirm page
and only the POST consumes it, so mail scanners that fetch links do not spend it. The token is
random (256 bits) and stored as a SHA-256 digest in a ``Verification`` row of purpose
``unlock``; consuming is one conditional UPDATE, so a link works once even when clicked twice at
the same moment. When the tenant says an unlock requires a new password, consuming the link
also clears the old password: the lock is lifted, but only a password reset lets the user in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session

from broker import audit
from broker.attempts import unlock_user
from broker.config import TenantConfig
from broker.messaging.compose import InvalidEmailAddress, send_email
from broker.models import User, Verification, utcnow
from policies.lockout import is_until_unlocked

from . import links

UNLOCK_LINK_TTL = timedelta(hours=24)
PURPOSE = "unlock"


def unlock_url(public_url: str, tenant: str, token: str) -> str:
    return f"{public_url.rstrip('/')}/t/{tenant}/unlock/{token}"


def forgot_password_path(tenant: str) -> str:
    return f"/t/{tenant}/forgot-password"


def send_unlock_link(
    db: Session,
    tenant: TenantConfig,
    user: User,
    *,
    locked_until: datetime,
    public_url: str,
    now: datetime | None = None,
) -> str:
    """Store a new unlock link for ``user`` and queue the lock email; returns the token.

    Runs in the caller's transaction, so the email exists exactly when the lock was recorded.
    """
    now = now or utcnow()
    token = links.issue(db, tenant=tenant.slug, user_id=user.id, purpose=PURPOSE,
                        target=user.email or "", ttl=UNLOCK_LINK_TTL, now=now)
    if user.email:
        link = unlock_url(public_url, tenant.slug, token)
        try:
            send_email(
                db, tenant, user.email, "account_locked", user.locale or tenant.default_locale,
                link=link, locked_until=locked_until,
                until_unlocked=is_until_unlocked(locked_until),
                password_reset_required=tenant.lockout.unlock_requires_password_reset,
            )
        except InvalidEmailAddress:
            pass  # an address no mail server takes; support and the lock's expiry remain
    return token


def unlock_link_is_valid(
    db: Session, tenant: TenantConfig, token: str, now: datetime | None = None
) -> bool:
    """True while the link is unused and unexpired (for the confirm page; does not consume)."""
    return links.peek(db, tenant=tenant.slug, purpose=PURPOSE, token=token, now=now) is not None


@dataclass(frozen=True)
class UnlockResult:
    """``unlocked``: the link was good and is now spent. ``password_reset_required``: the old
    password was cleared, so the user must go through forgotten password next."""

    unlocked: bool
    password_reset_required: bool = False
    user_id: int | None = None


def consume_unlock_link(
    db: Session,
    tenant: TenantConfig,
    token: str,
    *,
    source_address: str | None,
    now: datetime | None = None,
) -> UnlockResult:
    """Spend the link and unlock its user. Single use: a second call finds nothing.

    Commits on success, so the unlock is done before the page says so.
    """
    now = now or utcnow()
    spent = links.spend(db, tenant=tenant.slug, purpose=PURPOSE, token=token, now=now)
    user_id = spent[0] if spent else None
    if user_id is None:
        db.rollback()
        return UnlockResult(unlocked=False)
    reset_required = tenant.lockout.unlock_requires_password_reset
    _unlock(db, tenant, user_id, reset_required=reset_required, now=now)
    audit.record(
        db,
        "account_unlocked",
        tenant=tenant.slug,
        actor_type="user",
        actor_id=user_id,
        target_user_id=user_id,
        source_address=source_address,
        reason="unlock link",
        password_reset_required=reset_required,
    )
    db.commit()
    return UnlockResult(unlocked=True, password_reset_required=reset_required, user_id=user_id)


def unlock_by_support(
    db: Session,
    tenant: TenantConfig,
    user_id: int,
    *,
    staff_id: int,
    reason: str,
    source_address: str | None,
) -> None:
    """Support lifts a lock after checking who is calling; audited with the staff member.

    Runs in the caller's transaction (the console commits).
    """
    _unlock(db, tenant, user_id, reset_required=False, now=utcnow())
    audit.record(
        db,
        "account_unlocked",
        tenant=tenant.slug,
        actor_type="staff",
        actor_id=staff_id,
        target_user_id=user_id,
        source_address=source_address,
        reason=reason,
    )


def _unlock(
    db: Session, tenant: TenantConfig, user_id: int, *, reset_required: bool, now: datetime
) -> None:
    unlock_user(db, user_id)
    # Every other unlock link of this user is spent too: one unlock ends the episode.
    db.execute(
        update(Verification)
        .where(
            Verification.user_id == user_id,
            Verification.purpose == PURPOSE,
            Verification.consumed_at.is_(None),
        )
        .values(consumed_at=now)
        .execution_options(synchronize_session=False)
    )
    if reset_required:
        db.execute(
            update(User)
            .where(User.id == user_id, User.tenant == tenant.slug)
            .values(password_hash=None)
            .execution_options(synchronize_session=False)
        )
