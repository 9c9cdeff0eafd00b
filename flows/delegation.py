"""Owners share a customer account with relatives (seeds 001 and 004).

An owner sees who has access, invites someone by email to become a delegate, and removes
users. An invitation is a random token (we keep its SHA-256), expires after the tenant's
``binding.invitation_valid_days``, and can be accepted once, by whoever is logged in when the
link is opened: the invited address is recorded, but a relative may use another login.
An invitation is the inviter's grant: it is accepted only while the inviter still owns the
account, and it ends when they lose that ownership. An account has at most
``MAX_OPEN_INVITATIONS`` open (unaccepted, unexpired) at once, so an owner cannot make the
utility mail any number of addresses.
The caller owns the transaction; each step adds its audit record to ``db``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from broker import audit
from broker.config import TenantConfig
from broker.customers.contact import looks_like_email, normalise_email
from broker.messaging.compose import InvalidEmailAddress, normalize_email, send_email
from broker.models import Binding, CustomerAccount, Invitation, User, utcnow
from broker.security import new_token, sha256_hex

from .binding import UnbindResult, grant_binding, unbind

# Enough for a household's relatives within one validity period; more is a mailing list.
MAX_OPEN_INVITATIONS = 5


@dataclass(frozen=True)
class AccessEntry:
    user_id: int
    name: str
    email: str | None
    role: str
    since: datetime


@dataclass(frozen=True)
class InviteResult:
    """``reason`` when not ok: bad_email, not_owner, too_many_open."""

    ok: bool
    reason: str = ""
    invitation: Invitation | None = None
    link: str = ""


@dataclass(frozen=True)
class AcceptResult:
    """``reason`` when not ok: unknown, other_tenant, used, revoked (the inviter no longer
    owns the account), expired."""

    ok: bool
    reason: str = ""
    binding: Binding | None = None
    customer_number: str = ""


def owner_binding(db: Session, user: User, customer_account_id: int) -> Binding | None:
    return db.scalar(
        select(Binding).where(
            Binding.user_id == user.id,
            Binding.customer_account_id == customer_account_id,
            Binding.role == "owner",
        )
    )


def who_has_access(db: Session, owner: User, customer_account_id: int) -> list[AccessEntry] | None:
    """Users and roles on an account, owners first; None unless ``owner`` owns it."""
    if owner_binding(db, owner, customer_account_id) is None:
        return None
    rows = db.execute(
        select(User.id, User.name, User.email, Binding.role, Binding.created_at)
        .join(Binding, Binding.user_id == User.id)
        .where(Binding.customer_account_id == customer_account_id)
        .order_by(Binding.role.desc(), Binding.created_at, User.id)
    ).all()
    return [AccessEntry(*row) for row in rows]


def invite(
    db: Session,
    tenant: TenantConfig,
    public_url: str,
    owner: User,
    customer_account_id: int,
    email: str,
    locale: str,
    source_address: str | None = None,
    *,
    now: datetime | None = None,
) -> InviteResult:
    """Email a single-use link that makes whoever accepts it a delegate of the account."""
    now = now or utcnow()
    address = normalise_email(email)
    if not looks_like_email(address):
        return InviteResult(False, "bad_email")
    try:  # the sender's stricter check, before anything is added ("a(b@x.org" passes the first)
        normalize_email(address)
    except InvalidEmailAddress:
        return InviteResult(False, "bad_email")
    account = db.get(CustomerAccount, customer_account_id)
    if account is None or account.tenant != tenant.slug or owner_binding(
        db, owner, customer_account_id
    ) is None:
        audit.record(
            db, "invitation_refused", tenant=tenant.slug, actor_type="user", actor_id=owner.id,
            source_address=source_address, reason="not_owner", outcome="refused",
            customer_account_id=customer_account_id,
        )
        return InviteResult(False, "not_owner")
    if open_invitations(db, account.id, now) >= MAX_OPEN_INVITATIONS:
        audit.record(
            db, "invitation_refused", tenant=tenant.slug, actor_type="user", actor_id=owner.id,
            source_address=source_address, reason="too_many_open", outcome="refused",
            customer_account_id=account.id,
        )
        return InviteResult(False, "too_many_open")
    token = new_token()
    days = tenant.binding.invitation_valid_days
    invitation = Invitation(
        tenant=tenant.slug, customer_account_id=account.id, inviter_user_id=owner.id,
        email=address, token_sha256=sha256_hex(token), created_at=now,
        expires_at=now + timedelta(days=days),
    )
    db.add(invitation)
    link = f"{public_url.rstrip('/')}/t/{tenant.slug}/invitations/{token}"
    send_email(
        db, tenant, address, "invitation", locale,
        link=link, inviter_name=owner.name or owner.email or "", customer_number=account.number,
        customer_label=account.address_label or account.number, days=days, expires_days=days,
    )
    db.flush()
    audit.record(
        db, "invitation_sent", tenant=tenant.slug, actor_type="user", actor_id=owner.id,
        source_address=source_address, customer_account_id=account.id,
        invitation_id=invitation.id,
    )
    return InviteResult(True, invitation=invitation, link=link)


def open_invitations(db: Session, customer_account_id: int, now: datetime) -> int:
    """Invitations of an account that could still be accepted: each one sent an email."""
    return db.scalar(
        select(func.count(Invitation.id)).where(
            Invitation.customer_account_id == customer_account_id,
            Invitation.accepted_at.is_(None),
            Invitation.expires_at > now,
        )
    ) or 0


def inviter_still_owns(db: Session, invitation: Invitation) -> bool:
    """The invitation hands on the inviter's ownership, so it is void once they lost it. The
    owner row is locked (as ``unbind`` locks it), so a removal running at the same moment is
    decided either before this acceptance or after it, never in between."""
    if invitation.inviter_user_id is None:  # the inviter's login was deleted
        return False
    return db.scalar(
        select(Binding.id).where(
            Binding.user_id == invitation.inviter_user_id,
            Binding.customer_account_id == invitation.customer_account_id,
            Binding.role == "owner",
        ).with_for_update()
    ) is not None


def find_invitation(db: Session, tenant: str, token: str) -> Invitation | None:
    return db.scalar(
        select(Invitation).where(
            Invitation.token_sha256 == sha256_hex(token), Invitation.tenant == tenant
        )
    )


def accept(
    db: Session,
    tenant: TenantConfig,
    token: str,
    user: User,
    source_address: str | None = None,
    *,
    now: datetime | None = None,
) -> AcceptResult:
    """The logged-in ``user`` takes the invitation and becomes a delegate (once, in time)."""
    now = now or utcnow()
    invitation = find_invitation(db, tenant.slug, token)

    def refuse(reason: str) -> AcceptResult:
        audit.record(
            db, "invitation_refused", tenant=tenant.slug, actor_type="user", actor_id=user.id,
            target_user_id=user.id, source_address=source_address, reason=reason,
            outcome="refused", invitation_id=invitation.id if invitation else None,
        )
        return AcceptResult(False, reason)

    if invitation is None:
        return refuse("unknown")
    if user.tenant != tenant.slug:
        return refuse("other_tenant")
    if invitation.accepted_at is not None:
        return refuse("used")
    if not inviter_still_owns(db, invitation):  # before expiry: a removal also expires them
        return refuse("revoked")
    if now >= invitation.expires_at:
        return refuse("expired")
    # Single use even when two tabs accept at once: only one UPDATE finds it unaccepted.
    claimed = db.execute(
        update(Invitation)
        .where(Invitation.id == invitation.id, Invitation.accepted_at.is_(None))
        .values(accepted_at=now, accepted_by_user_id=user.id)
        .execution_options(synchronize_session=False)
    ).rowcount
    if claimed != 1:
        return refuse("used")
    db.refresh(invitation)
    binding = grant_binding(
        db, user, invitation.customer_account_id, "delegate", "invitation",
        granted_by=invitation.inviter_user_id,
    )
    account = db.get(CustomerAccount, invitation.customer_account_id)
    audit.record(
        db, "invitation_accepted", tenant=tenant.slug, actor_type="user", actor_id=user.id,
        target_user_id=user.id, source_address=source_address,
        customer_account_id=invitation.customer_account_id, invitation_id=invitation.id,
        role=binding.role, same_email=normalise_email(user.email or "") == invitation.email,
    )
    return AcceptResult(True, binding=binding, customer_number=account.number if account else "")


def remove_user(
    db: Session,
    tenant: TenantConfig,
    owner: User,
    customer_account_id: int,
    user_id: int,
    source_address: str | None = None,
) -> UnbindResult:
    """An owner removes a user's access (a delegate may remove themself). Refused when an owner
    would remove themself as the last owner: the account would have nobody to manage it."""
    binding = db.scalar(
        select(Binding).where(
            Binding.user_id == user_id, Binding.customer_account_id == customer_account_id
        )
    )
    if binding is None:
        return UnbindResult(False, "not_bound")
    return unbind(db, tenant, binding, actor_user=owner, source_address=source_address)


def describe_access(entries: list[AccessEntry]) -> list[dict[str, Any]]:
    """Plain dicts for a page or a JSON answer."""
    return [
        {"user_id": e.user_id, "name": e.name, "email": e.email, "role": e.role}
        for e in entries
    ]
