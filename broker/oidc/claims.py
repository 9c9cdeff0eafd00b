"""Claims about a user for ID tokens and userinfo, chosen by scope."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..models import Binding, CustomerAccount, User

SCOPE_CLAIMS = {
    "profile": ("name", "locale"),
    "email": ("email", "email_verified"),
    "phone": ("phone_number",),
}
CLAIMS_SUPPORTED = [
    "sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "acr", "amr", "azp", "sid",
    "name", "locale", "email", "email_verified", "phone_number", "customer_accounts",
]


def customer_accounts(db: Session, user_id: int) -> list[dict[str, str]]:
    """The customer accounts a user may act for, in one query."""
    rows = db.execute(
        select(CustomerAccount.number, CustomerAccount.kind, Binding.role)
        .join(Binding, Binding.customer_account_id == CustomerAccount.id)
        .where(Binding.user_id == user_id)
        .order_by(CustomerAccount.number)
    )
    return [{"number": number, "kind": kind, "role": role} for number, kind, role in rows]


def user_claims(db: Session, user: User, scope: str) -> dict[str, Any]:
    scopes = set(scope.split())
    claims: dict[str, Any] = {"sub": user.subject}
    if "profile" in scopes:
        claims["name"] = user.name
        if user.locale:
            claims["locale"] = user.locale
    if "email" in scopes and user.email:
        claims["email"] = user.email
        claims["email_verified"] = bool(user.email_verified)
    if "phone" in scopes and user.phone:
        claims["phone_number"] = user.phone
    if "customer_accounts" in scopes:
        claims["customer_accounts"] = customer_accounts(db, user.id)
    return claims
