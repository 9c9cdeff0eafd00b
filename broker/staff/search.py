"""Finding a caller's account, and everything support needs to see about it on one page.

Searches only ever look inside the tenants the staff member may act on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, or_, select, true
from sqlalchemy.orm import Session

from policies.binding import normalise_customer_number
from policies.lockout import is_locked
from policies.staff import ALL_TENANTS

from ..models import (
    AuditEvent,
    Binding,
    CustomerAccount,
    FederatedIdentity,
    LoginSession,
    RecoveryCode,
    Token,
    User,
    utcnow,
)

MAX_RESULTS = 50
RECENT_EVENTS = 25


def tenant_filter(column: Any, staff_tenants: list[str]) -> ColumnElement[bool]:
    if ALL_TENANTS in staff_tenants:
        return true()
    return column.in_(list(staff_tenants))


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _phone_digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


def search_users(
    db: Session, staff_tenants: list[str], query: str, *, tenant: str | None = None
) -> list[User]:
    """Users whose email, phone, name or bound customer number matches ``query``."""
    text = (query or "").strip()
    if not text:
        return []
    pattern = _like(text.lower())
    conditions: list[ColumnElement[bool]] = [
        func.lower(User.email).like(pattern, escape="\\"),
        func.lower(User.name).like(pattern, escape="\\"),
    ]
    digits = _phone_digits(text)
    if len(digits) >= 4:
        conditions.append(User.phone.like(_like(digits), escape="\\"))
    number = normalise_customer_number(text)
    if number:
        bound = (
            select(Binding.user_id)
            .join(CustomerAccount, CustomerAccount.id == Binding.customer_account_id)
            .where(CustomerAccount.number == number)
        )
        conditions.append(User.id.in_(bound))
    statement = (
        select(User)
        .where(or_(*conditions), tenant_filter(User.tenant, staff_tenants))
        .order_by(User.tenant, User.email, User.id)
        .limit(MAX_RESULTS)
    )
    if tenant:
        statement = statement.where(User.tenant == tenant)
    return list(db.scalars(statement))


@dataclass(frozen=True)
class UserOverview:
    """What support sees about one account (never a password hash, secret or PIN)."""

    user: User
    locked: bool
    locked_until: datetime | None
    identities: list[dict[str, Any]]
    customer_accounts: list[dict[str, Any]]
    totp_enabled: bool
    recovery_codes_left: int
    live_sessions: int
    live_tokens: int
    recent_events: list[AuditEvent]

    def as_json(self) -> dict[str, Any]:
        user = self.user
        return {
            "id": user.id,
            "tenant": user.tenant,
            "email": user.email,
            "email_verified": user.email_verified,
            "name": user.name,
            "phone": user.phone,
            "status": user.status,
            "registration_type": user.registration_type,
            "has_password": user.password_hash is not None,
            "created_at": _iso(user.created_at),
            "last_login_at": _iso(user.last_login_at),
            "lockout": {
                "locked": self.locked,
                "locked_until": _iso(self.locked_until),
                "failed_logins": user.failed_logins,
            },
            "identities": self.identities,
            "customer_accounts": self.customer_accounts,
            "mfa": {"totp": self.totp_enabled, "recovery_codes_left": self.recovery_codes_left},
            "live_sessions": self.live_sessions,
            "live_tokens": self.live_tokens,
            "recent_events": [event_json(event) for event in self.recent_events],
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def event_json(event: AuditEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "at": _iso(event.at),
        "tenant": event.tenant,
        "event": event.event,
        "actor_type": event.actor_type,
        "actor_id": event.actor_id,
        "target_user_id": event.target_user_id,
        "source_address": event.source_address,
        "reason": event.reason,
        "outcome": event.outcome,
        "details": event.details or {},
    }


def user_overview(db: Session, user: User) -> UserOverview:
    now = utcnow()
    identities = [
        {"provider": i.provider, "email": i.email, "display_name": i.display_name,
         "linked_at": _iso(i.linked_at), "last_login_at": _iso(i.last_login_at)}
        for i in db.scalars(
            select(FederatedIdentity).where(FederatedIdentity.user_id == user.id)
            .order_by(FederatedIdentity.provider)
        )
    ]
    accounts = [
        {"number": number, "name": name, "kind": kind, "address": address, "role": role,
         "proof": proof}
        for number, name, kind, address, role, proof in db.execute(
            select(CustomerAccount.number, CustomerAccount.name, CustomerAccount.kind,
                   CustomerAccount.address_label, Binding.role, Binding.proof)
            .join(Binding, Binding.customer_account_id == CustomerAccount.id)
            .where(Binding.user_id == user.id)
            .order_by(CustomerAccount.number)
        )
    ]
    codes_left = db.scalar(
        select(func.count(RecoveryCode.id)).where(
            RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None)
        )
    ) or 0
    sessions = db.scalar(
        select(func.count(LoginSession.id)).where(
            LoginSession.user_id == user.id, LoginSession.revoked_at.is_(None),
            LoginSession.expires_at > now,
        )
    ) or 0
    tokens = db.scalar(
        select(func.count(Token.id)).where(
            Token.user_id == user.id, Token.revoked_at.is_(None), Token.rotated_at.is_(None),
            or_(Token.access_expires_at > now, Token.refresh_expires_at > now),
        )
    ) or 0
    events = list(
        db.scalars(
            select(AuditEvent).where(AuditEvent.target_user_id == user.id)
            .order_by(AuditEvent.at.desc(), AuditEvent.id.desc()).limit(RECENT_EVENTS)
        )
    )
    return UserOverview(
        user=user,
        locked=is_locked(user.locked_until, now),
        locked_until=user.locked_until if is_locked(user.locked_until, now) else None,
        identities=identities,
        customer_accounts=accounts,
        totp_enabled=user.totp_secret is not None,
        recovery_codes_left=codes_left,
        live_sessions=sessions,
        live_tokens=tokens,
        recent_events=events,
    )


def user_json(user: User) -> dict[str, Any]:
    """One line of a search result."""
    return {"id": user.id, "tenant": user.tenant, "email": user.email, "name": user.name,
            "phone": user.phone, "status": user.status}
