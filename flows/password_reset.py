"""Forgotten password: an emailed single-use link (1 hour) that lets the owner choose a new one.

``request_reset`` answers the same whether or not the address has an account (the page says
"if it is registered"); the link's token is random (256 bits) and only its SHA-256 is stored in
a ``Verification`` of purpose ``password_reset``. ``complete_reset`` checks the tenant's policy,
spends the link with one conditional UPDATE (so it works once), sets the password, ends every
session, revokes refresh tokens and lifts any password lock: whoever held the old password is
out, and the owner, who just proved control of the mailbox, is not kept out by a lock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from broker import audit, login_session
from broker.attempts import unlock_user
from broker.config import TenantConfig
from broker.messaging.compose import InvalidEmailAddress, render_email, send_email
from broker.models import Token, User, Verification, utcnow
from broker.passwords import hash_password
from broker.security import new_token
from policies.password import PasswordCheck, check_password

from . import links
from .password_login import normalise_email

PURPOSE = "password_reset"
RESET_LINK_TTL = timedelta(hours=1)


def reset_url(public_url: str, tenant: str, token: str) -> str:
    return f"{public_url.rstrip('/')}/t/{tenant}/reset-password/{token}"


def send_reset_link(
    db: Session,
    tenant: TenantConfig,
    user: User,
    *,
    public_url: str,
    now: datetime | None = None,
) -> bool:
    """Queue a reset link for ``user`` unless one went out within the resend cooldown.

    Runs in the caller's transaction. Returns whether an email was queued.

    The user's row is locked first (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite's
    ``BEGIN IMMEDIATE`` already serialises writers), so two requests at once check the
    cooldown one after the other and the second sees the first one's link: one email.
    """
    now = now or utcnow()
    db.execute(select(User.id).where(User.id == user.id).with_for_update())
    cutoff = now - timedelta(seconds=tenant.resend_cooldown_seconds)
    recent = db.scalar(
        select(Verification.id).where(
            Verification.user_id == user.id,
            Verification.purpose == PURPOSE,
            Verification.created_at > cutoff,
        ).limit(1)
    )
    if recent is not None or not user.email:
        return False
    token = links.issue(db, tenant=tenant.slug, user_id=user.id, purpose=PURPOSE,
                        target=user.email, ttl=RESET_LINK_TTL, now=now)
    try:
        send_email(db, tenant, user.email, "password_reset", user.locale or tenant.default_locale,
                   link=reset_url(public_url, tenant.slug, token),
                   minutes=int(RESET_LINK_TTL.total_seconds() // 60))
    except InvalidEmailAddress:
        return False
    return True


def request_reset(
    db: Session,
    tenant: TenantConfig,
    email: str,
    *,
    public_url: str,
    source_address: str | None,
    now: datetime | None = None,
) -> None:
    """Send a reset link if ``email`` has a usable account; commits. Says nothing either way.

    An unknown address still renders the email (discarded), so the two paths cost about the same.
    """
    now = now or utcnow()
    user = db.scalar(
        select(User).where(User.tenant == tenant.slug, User.email == normalise_email(email))
    )
    if user is None or user.status == "disabled":
        render_email(tenant, "password_reset", tenant.default_locale,
                     link=reset_url(public_url, tenant.slug, new_token()),
                     minutes=int(RESET_LINK_TTL.total_seconds() // 60))
        db.rollback()
        return
    if send_reset_link(db, tenant, user, public_url=public_url, now=now):
        audit.record(db, "password_reset_requested", tenant=tenant.slug, actor_type="anonymous",
                     target_user_id=user.id, source_address=source_address)
    db.commit()


def reset_link_user(
    db: Session, tenant: TenantConfig, token: str, now: datetime | None = None
) -> User | None:
    """The user a live link belongs to (for the form; does not spend the link)."""
    link = links.peek(db, tenant=tenant.slug, purpose=PURPOSE, token=token, now=now)
    user = db.get(User, link.user_id) if link is not None and link.user_id else None
    return user if user is not None and user.status != "disabled" else None


@dataclass(frozen=True)
class ResetResult:
    """``link_valid`` False: expired, used or unknown. Otherwise ``check`` lists unmet rules;
    ``done`` when the new password is set."""

    link_valid: bool
    check: PasswordCheck | None = None
    done: bool = False


def complete_reset(
    db: Session,
    tenant: TenantConfig,
    token: str,
    password: str,
    confirmation: str,
    *,
    source_address: str | None,
    now: datetime | None = None,
) -> ResetResult:
    """Set the new password through the link; commits on success."""
    now = now or utcnow()
    user = reset_link_user(db, tenant, token, now)
    if user is None:
        return ResetResult(link_valid=False)
    check = check_password(tenant.password_policy, password, confirmation=confirmation,
                           user_inputs=(user.name, user.email or ""))
    if not check.ok:
        return ResetResult(link_valid=True, check=check)
    spent = links.spend(db, tenant=tenant.slug, purpose=PURPOSE, token=token, now=now)
    if spent is None or spent[0] != user.id:
        db.rollback()
        return ResetResult(link_valid=False)
    set_new_password(db, tenant, user, password, now=now)
    if user.status == "pending":
        # The link proved control of the mailbox, which is all activation asks for.
        user.status = "active"
        user.email_verified = True
        audit.record(db, "account_activated", tenant=tenant.slug, actor_type="user",
                     actor_id=user.id, target_user_id=user.id, source_address=source_address,
                     method="password_reset")
    # Every other reset link of the user is spent as well.
    links.spend_all(db, user_id=user.id, purpose=PURPOSE, now=now)
    unlock_user(db, user.id)
    login_session.end_all_for_user(db, user.id)
    revoke_refresh_tokens(db, user.id, now=now)
    audit.record(db, "password_reset", tenant=tenant.slug, actor_type="user", actor_id=user.id,
                 target_user_id=user.id, source_address=source_address)
    db.commit()
    return ResetResult(link_valid=True, check=check, done=True)


def set_new_password(
    db: Session, tenant: TenantConfig, user: User, password: str, *, now: datetime
) -> None:
    """Store the new password's hash, and spend any pending change of email address: the
    owner taking the account back must not leave a link that gives it away again."""
    user.password_hash = hash_password(tenant, password)
    user.password_changed_at = now
    links.spend_all(db, user_id=user.id, purpose=links.EMAIL_CHANGE, now=now)


def revoke_refresh_tokens(
    db: Session, user_id: int, *, now: datetime | None = None,
    keep_login_session_id: int | None = None,
) -> int:
    """Revoke the user's live tokens (all, or all but the given session's); returns how many."""
    statement = (
        update(Token)
        .where(Token.user_id == user_id, Token.revoked_at.is_(None))
        .values(revoked_at=now or utcnow())
        .execution_options(synchronize_session=False)
    )
    if keep_login_session_id is not None:
        statement = statement.where(
            (Token.login_session_id.is_(None)) | (Token.login_session_id != keep_login_session_id)
        )
    return int(db.execute(statement).rowcount or 0)  # type: ignore[attr-defined]
