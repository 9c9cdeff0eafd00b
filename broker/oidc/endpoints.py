"""Token revocation (RFC 7009) and introspection (RFC 7662) over our digest-keyed tokens."""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from sqlalchemy import or_, select, update

from ..models import Token, User, utcnow
from ..security import sha256_hex
from ..state import db

AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]


def find_token(
    token_string: str, *, access_only: bool = False
) -> tuple[Token, User] | None:
    """The token row holding this access or refresh token, and its user.

    Revocation and introspection search both kinds whatever the token_type_hint says (RFC 7009
    2.1: a wrong hint must not let a refresh token survive its revocation). A bearer token at a
    resource (userinfo) passes ``access_only``: a refresh token is never a bearer token.
    """
    digest = sha256_hex(token_string)
    condition = Token.access_token_sha256 == digest
    if not access_only:
        condition = or_(condition, Token.refresh_token_sha256 == digest)
    row = db().execute(select(Token, User).join(User, User.id == Token.user_id).where(condition))
    found = row.first()
    return (found[0], found[1]) if found else None


class _Found:
    def __init__(self, token: Token, user: User, digest: str) -> None:
        self.token, self.user, self.digest = token, user, digest

    def is_expired(self) -> bool:
        return False  # judged in introspect_token, which knows which of the two tokens it is

    def is_revoked(self) -> bool:
        return False

    def check_client(self, client: Any) -> bool:
        return (
            self.token.client_id == client.client_id and self.token.tenant == client.tenant.slug
        )


class TokenRevocation(RevocationEndpoint):
    CLIENT_AUTH_METHODS = AUTH_METHODS

    def query_token(self, token_string: str, token_type_hint: str | None) -> _Found | None:
        """The hint does not narrow the search: both kinds are looked up (RFC 7009 2.1)."""
        found = find_token(token_string)
        return _Found(*found, sha256_hex(token_string)) if found else None

    def revoke_token(self, token: _Found, request: Any) -> None:
        """Revoking a refresh token ends its family; an access token ends its own grant: the
        access token and the refresh token issued with it (one row; RFC 7009 2.1 allows it, and
        a portal revoking an access token wants that grant gone)."""
        row = token.token
        if row.refresh_token_sha256 == token.digest:
            statement = update(Token).where(Token.family_id == row.family_id)
        else:
            statement = update(Token).where(Token.id == row.id)
        db().execute(statement.where(Token.revoked_at.is_(None)).values(revoked_at=utcnow()))


class TokenIntrospection(IntrospectionEndpoint):
    CLIENT_AUTH_METHODS = AUTH_METHODS

    def __init__(self, server: Any, issuer: str) -> None:
        super().__init__(server)
        self.issuer = issuer

    def query_token(self, token_string: str, token_type_hint: str | None) -> _Found | None:
        """The hint does not narrow the search: both kinds are looked up (RFC 7009 2.1)."""
        found = find_token(token_string)
        return _Found(*found, sha256_hex(token_string)) if found else None

    def check_permission(self, token: _Found, client: Any, request: Any) -> bool:
        return token.check_client(client)

    def introspect_token(self, token: _Found) -> dict[str, Any]:
        row, now = token.token, utcnow()
        is_refresh = row.refresh_token_sha256 == token.digest
        expires = row.refresh_expires_at if is_refresh else row.access_expires_at
        active = (
            row.revoked_at is None
            and (not is_refresh or row.rotated_at is None)
            and expires is not None
            and expires > now
            and token.user.status == "active"
        )
        if not active:
            return {"active": False}
        return {
            "active": True,
            "client_id": row.client_id,
            "scope": row.scope,
            "sub": token.user.subject,
            "iss": self.issuer,
            "token_type": "refresh_token" if is_refresh else "Bearer",
            "exp": int(expires.timestamp()),
            "iat": int(row.issued_at.timestamp()),
            "acr": row.acr,
            "amr": list(row.amr),
        }
