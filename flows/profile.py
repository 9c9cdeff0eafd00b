"""The logged-in user's own details: name and phone, email address, password.

- A new email address is verified before it replaces the old one: a single-use link (SHA-256
  of a random token in a ``Verification`` of purpose ``email_change``) goes to the NEW address;
  when it is opened and confirmed, the address changes and the OLD address is told. Whether the
  new address is taken by another account is only said to whoever controls that address.
- Changing the password needs the current one (guesses count under ``password-change:<id>``),
  follows the tenant's policy, and ends the user's other sessions and their tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from broker import audit, login_session
from broker.attempts import record_failure, record_success, reserve_attempt, rule_from_config
from broker.config import TenantConfig
from broker.messaging.compose import (
    InvalidEmailAddress,
    InvalidPhoneNumber,
    normalize_phone,
    send_email,
    stored_address,
)
from broker.models import User, Verification, utcnow
from broker.passwords import verify_password
from policies.names import one_line
from policies.password import PasswordRule, check_password

from . import links
from .password_reset import revoke_refresh_tokens, set_new_password
from .registration import MAX_EMAIL_LENGTH, MAX_NAME_LENGTH

EMAIL_CHANGE = links.EMAIL_CHANGE
EMAIL_CHANGE_TTL = timedelta(hours=24)


def mask_email(address: str) -> str:
    """``k***@example.no``: enough for the owner to recognise, little for anyone else."""
    local, _, domain = address.partition("@")
    return f"{local[:1]}***@{domain}" if domain else "***"


def update_details(
    db: Session, tenant: TenantConfig, user: User, *, name: str, phone: str,
    source_address: str | None,
) -> dict[str, str]:
    """Change name and phone; returns field errors (nothing changed then). Commits on success."""
    errors: dict[str, str] = {}
    name = one_line(name)
    if not name:
        errors["name"] = "required"
    elif len(name) > MAX_NAME_LENGTH:
        errors["name"] = "too_long"
    normalised = None
    if phone.strip():
        try:
            normalised = normalize_phone(phone, tenant.country)
        except InvalidPhoneNumber:
            errors["phone"] = "invalid_phone"
    if errors:
        return errors
    user.name = name
    user.phone = normalised
    audit.record(db, "profile_updated", tenant=tenant.slug, actor_type="user", actor_id=user.id,
                 target_user_id=user.id, source_address=source_address)
    db.commit()
    return {}


def email_change_url(public_url: str, tenant: str, token: str) -> str:
    return f"{public_url.rstrip('/')}/t/{tenant}/profile/email/{token}"


def request_email_change(
    db: Session, tenant: TenantConfig, user: User, new_email: str, *, public_url: str,
    source_address: str | None, now: datetime | None = None,
) -> str | None:
    """Email a confirmation link to ``new_email``; returns an error code or None. Commits.
    The caller has made the person prove it is them again (broker.views.reauth)."""
    now = now or utcnow()
    if len(new_email) > MAX_EMAIL_LENGTH:
        return "too_long"
    try:
        address = stored_address(new_email)
    except InvalidEmailAddress:
        return "invalid_email"
    if address == user.email:
        return "same_email"
    if _asked_within_cooldown(db, tenant, user, now):
        return "too_soon"
    links.spend_all(db, user_id=user.id, purpose=EMAIL_CHANGE, now=now)
    token = links.issue(db, tenant=tenant.slug, user_id=user.id, purpose=EMAIL_CHANGE,
                        target=address, ttl=EMAIL_CHANGE_TTL, now=now)
    send_email(db, tenant, address, "email_change_verify", user.locale or tenant.default_locale,
               link=email_change_url(public_url, tenant.slug, token),
               hours=int(EMAIL_CHANGE_TTL.total_seconds() // 3600))
    audit.record(db, "email_change_requested", tenant=tenant.slug, actor_type="user",
                 actor_id=user.id, target_user_id=user.id, source_address=source_address)
    db.commit()
    return None


def _held_by_another(db: Session, tenant: TenantConfig, address: str, user_id: int) -> bool:
    return db.scalar(select(User.id).where(
        User.tenant == tenant.slug, User.email == address, User.id != user_id)) is not None


def _asked_within_cooldown(db: Session, tenant: TenantConfig, user: User, now: datetime) -> bool:
    """One link per ``resend_cooldown_seconds``: each one is an email to an address the user
    typed, anyone's. The user's row is locked first, so two requests at once are decided one
    after the other (as flows.password_reset.send_reset_link does)."""
    db.execute(select(User.id).where(User.id == user.id).with_for_update())
    cutoff = now - timedelta(seconds=tenant.resend_cooldown_seconds)
    return db.scalar(select(Verification.id).where(
        Verification.user_id == user.id, Verification.purpose == EMAIL_CHANGE,
        Verification.created_at > cutoff,
    ).limit(1)) is not None


def pending_email_change(
    db: Session, tenant: TenantConfig, token: str, now: datetime | None = None
) -> Verification | None:
    """The live change request behind a link (for the confirm page; does not spend it)."""
    return links.peek(db, tenant=tenant.slug, purpose=EMAIL_CHANGE, token=token, now=now)


def confirm_email_change(
    db: Session, tenant: TenantConfig, token: str, *, source_address: str | None,
    now: datetime | None = None,
) -> Literal["changed", "invalid", "taken"]:
    """Spend the link, switch the address and tell the old one. Commits."""
    now = now or utcnow()
    change = links.spend(db, tenant=tenant.slug, purpose=EMAIL_CHANGE, token=token, now=now)
    user = db.get(User, change[0]) if change and change[0] else None
    if change is None or user is None or user.status != "active":
        db.rollback()
        return "invalid"
    new_address = change[1]
    if _held_by_another(db, tenant, new_address, user.id):
        db.commit()  # the link is spent either way
        return "taken"
    old_address = user.email
    user.email = new_address
    user.email_verified = True
    try:
        db.flush()
    except IntegrityError:  # another account took it since the check: the unique index says so
        db.rollback()
        return "taken"
    notice_id = None
    if old_address:
        try:
            notice = send_email(db, tenant, old_address, "email_changed_notice",
                                user.locale or tenant.default_locale,
                                new_email=mask_email(new_address))
            db.flush()
            notice_id = notice.id
        except InvalidEmailAddress:
            pass  # the old address was never deliverable; nothing to tell
    # The notice's id, not its address: erasure finds the mail to the old address by it
    # (flows.privacy), and the log keeps no address.
    audit.record(db, "email_changed", tenant=tenant.slug, actor_type="user", actor_id=user.id,
                 target_user_id=user.id, source_address=source_address,
                 notice_message_id=notice_id)
    db.commit()
    return "changed"


@dataclass(frozen=True)
class PasswordChangeResult:
    """``error``: ``wrong_current`` or ``locked``; ``failures``: unmet policy rules."""

    error: str | None = None
    failures: list[PasswordRule] = field(default_factory=list)
    locked_until: datetime | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and not self.failures


def change_password(
    db: Session,
    tenant: TenantConfig,
    user: User,
    *,
    current: str,
    new: str,
    confirmation: str,
    keep_session_id: int | None,
    source_address: str | None,
    now: datetime | None = None,
) -> PasswordChangeResult:
    """Change the password with the current one; other sessions and their tokens end. Commits."""
    now = now or utcnow()
    key = f"password-change:{user.id}"
    rule = rule_from_config(tenant.lockout)
    reservation = reserve_attempt(db, key, rule, now)
    db.commit()
    if not reservation.allowed:
        return PasswordChangeResult("locked", locked_until=reservation.locked_until)
    if not verify_password(tenant, user.password_hash, current):
        locked_until = record_failure(db, key, rule, now)
        audit.record(db, "password_change_failed", tenant=tenant.slug, actor_type="user",
                     actor_id=user.id, target_user_id=user.id, source_address=source_address,
                     reason="wrong current password", outcome="refused")
        db.commit()
        if locked_until is not None:
            return PasswordChangeResult("locked", locked_until=locked_until)
        return PasswordChangeResult("wrong_current")
    record_success(db, key)
    check = check_password(tenant.password_policy, new, confirmation=confirmation,
                           user_inputs=(user.name, user.email or ""))
    if not check.ok:
        db.commit()
        return PasswordChangeResult(failures=check.failures)
    set_new_password(db, tenant, user, new, now=now)
    login_session.end_all_for_user(db, user.id, keep_id=keep_session_id)
    revoke_refresh_tokens(db, user.id, now=now, keep_login_session_id=keep_session_id)
    audit.record(db, "password_changed", tenant=tenant.slug, actor_type="user", actor_id=user.id,
                 target_user_id=user.id, source_address=source_address)
    db.commit()
    return PasswordChangeResult()
