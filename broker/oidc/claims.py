"""Claims about a user for ID tokens and userinfo, chosen by scope."""

from __future__ import annotations

from typing import Any, Protocol

from sqlalchemy.orm import Session

from flows.binding import customer_accounts_for


class ClaimsSubject(Protocol):
    """What claims are made of: an ORM ``User`` or the token endpoint's ``TokenHolder``."""

    id: int
    subject: str
    name: str
    locale: str | None
    email: str | None
    email_verified: bool
    phone: str | None


SCOPE_CLAIMS = {
    "profile": ("name", "locale"),
    "email": ("email", "email_verified"),
    "phone": ("phone_number",),
}
CLAIMS_SUPPORTED = [
    "sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "acr", "amr", "azp", "sid",
    "name", "locale", "email", "email_verified", "phone_number", "customer_accounts",
]


def user_claims(
    db: Session,
    user: ClaimsSubject,
    scope: str,
    customer_accounts: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """``customer_accounts``, when the caller already read them, saves the query."""
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
        if customer_accounts is None:
            customer_accounts = customer_accounts_for(db, user.id)
        claims["customer_accounts"] = customer_accounts
    return claims
