"""Token grants on Authlib: authorization code with PKCE and OpenID, refresh with rotation.

Security rules enforced here:
- codes are single-use: redemption is an atomic ``UPDATE ... WHERE used_at IS NULL``; a replayed
  code revokes every token issued from it (RFC 6749 section 4.1.2);
- PKCE: only S256; required for public clients and, by default, for confidential ones;
- refresh tokens rotate; presenting a rotated token again revokes its whole family.
A refused request changes nothing, except those two revocations, which run after the rollback
(see ``after_rollback``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6749.errors import (
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
)
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import OpenIDCode
from flask import g
from sqlalchemy import select, update

from ..models import AuthorizationCode, LoginSession, Token, User, utcnow
from ..security import keyed_hmac, new_token, sha256_hex
from ..state import current, db
from .claims import user_claims

CODE_LIFETIME = timedelta(minutes=2)


def after_rollback(action: Callable[[], None]) -> None:
    """Run ``action`` in its own transaction after this request's work was rolled back."""
    g.setdefault("oidc_after_rollback", []).append(action)


def revoke_tokens_of_code(code_sha256: str) -> None:
    db().execute(
        update(Token)
        .where(Token.code_sha256 == code_sha256, Token.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


def revoke_family(family_id: str) -> None:
    db().execute(
        update(Token)
        .where(Token.family_id == family_id, Token.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


class StoredCode:
    """An authorization code row as Authlib's AuthorizationCodeMixin."""

    def __init__(self, row: AuthorizationCode, user: User) -> None:
        self.row = row
        self.user = user

    def get_redirect_uri(self) -> str:
        return self.row.redirect_uri

    def get_scope(self) -> str:
        return self.row.scope

    def get_nonce(self) -> str | None:
        return self.row.nonce

    def get_auth_time(self) -> int:
        return int(self.row.auth_time.timestamp())

    def get_acr(self) -> str:
        return self.row.acr

    def get_amr(self) -> list[str]:
        return list(self.row.amr)


class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = [
        "client_secret_basic",
        "client_secret_post",
        "private_key_jwt",
        "none",
    ]

    def validate_authorization_request(self) -> str:
        """Authlib's checks, then: the portal must ask for at least one scope it may have
        (otherwise Authlib's filtered scope is empty and nothing would be granted)."""
        redirect_uri = super().validate_authorization_request()
        requested = self.request.payload.scope
        if requested and not self.request.client.get_allowed_scope(requested):
            raise InvalidScopeError(
                "None of the requested scopes is allowed for this portal.",
                redirect_uri=redirect_uri,
            )
        return redirect_uri

    def save_authorization_code(self, code: str, request: Any) -> None:
        login = g.oidc_login  # set by the authorize view: the live LoginSession
        payload = request.payload
        now = utcnow()
        db().add(
            AuthorizationCode(
                code_sha256=sha256_hex(code),
                tenant=request.client.tenant.slug,
                client_id=request.client.client_id,
                user_id=request.user.id,
                login_session_id=login.id,
                redirect_uri=payload.redirect_uri,
                scope=request.scope or "",
                nonce=payload.data.get("nonce"),
                code_challenge=payload.data.get("code_challenge"),
                code_challenge_method=payload.data.get("code_challenge_method"),
                auth_time=login.auth_time,
                amr=list(login.amr),
                acr=login.acr,
                expires_at=now + CODE_LIFETIME,
            )
        )

    def query_authorization_code(self, code: str, client: Any) -> StoredCode | None:
        digest = sha256_hex(code)
        row = db().execute(
            select(AuthorizationCode, User, LoginSession.revoked_at)
            .join(User, User.id == AuthorizationCode.user_id)
            .outerjoin(LoginSession, LoginSession.id == AuthorizationCode.login_session_id)
            .where(AuthorizationCode.code_sha256 == digest)
        ).first()
        if row is None:
            return None
        stored, user, session_ended = row
        if session_ended is not None:  # logged out after the code was issued
            return None
        if stored.client_id != client.client_id or stored.tenant != client.tenant.slug:
            return None
        if stored.used_at is not None:
            after_rollback(lambda: revoke_tokens_of_code(digest))
            return None
        if stored.expires_at <= utcnow() or user.status != "active":
            return None
        return StoredCode(stored, user)

    def authenticate_user(self, authorization_code: StoredCode) -> User | None:
        """Redeem the code atomically; a concurrent second redemption loses here."""
        claimed = db().execute(
            update(AuthorizationCode)
            .where(
                AuthorizationCode.code_sha256 == authorization_code.row.code_sha256,
                AuthorizationCode.used_at.is_(None),
            )
            .values(used_at=utcnow())
        )
        if claimed.rowcount != 1:
            digest = authorization_code.row.code_sha256
            after_rollback(lambda: revoke_tokens_of_code(digest))
            raise InvalidGrantError("The authorization code was already used.")
        return authorization_code.user

    def delete_authorization_code(self, authorization_code: StoredCode) -> None:
        """Kept (marked used) rather than deleted, so a replay can be recognised."""


class S256CodeChallenge(CodeChallenge):
    """PKCE with S256 only; required unless a confidential client opted out in the config."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]
    DEFAULT_CODE_CHALLENGE_METHOD = "S256"

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        client = grant.request.client
        if client.config.require_pkce and not data.get("code_challenge"):
            raise InvalidRequestError(
                "PKCE is required: send code_challenge with code_challenge_method=S256.",
                redirect_uri=redirect_uri,
            )
        if data.get("code_challenge") and data.get("code_challenge_method") != "S256":
            raise InvalidRequestError(
                "code_challenge_method must be S256 ('plain' is not accepted).",
                redirect_uri=redirect_uri,
            )
        super().validate_code_challenge(grant, redirect_uri)

    def get_authorization_code_challenge(self, authorization_code: StoredCode) -> str | None:
        return authorization_code.row.code_challenge

    def get_authorization_code_challenge_method(self, authorization_code: StoredCode) -> str | None:
        return authorization_code.row.code_challenge_method


class OpenIDCodeExtension(OpenIDCode):
    """ID tokens signed with the tenant's current key, with our claims."""

    def __init__(self, issuer: str, key_ring: Callable[[], Any], id_token_minutes: int) -> None:
        super().__init__(require_nonce=False)
        self.issuer = issuer
        self._key_ring = key_ring
        self.id_token_minutes = id_token_minutes

    def exists_nonce(self, nonce: str, request: Any) -> bool:
        return False

    def resolve_client_private_key(self, client: Any) -> Any:
        return self._key_ring().signing

    def get_client_algorithm(self, client: Any) -> str:
        return self._key_ring().signing_alg

    def get_encode_header(self, client: Any) -> dict[str, str]:
        ring = self._key_ring()
        return {"alg": ring.signing_alg, "kid": ring.signing_kid, "typ": "JWT"}

    def get_client_claims(self, client: Any) -> dict[str, Any]:
        now = int(utcnow().timestamp())
        return {
            "iss": self.issuer,
            "aud": [client.client_id],
            "azp": client.client_id,
            "iat": now,
            "exp": now + self.id_token_minutes * 60,
        }

    def get_authorization_code_claims(self, authorization_code: StoredCode) -> dict[str, Any]:
        claims = super().get_authorization_code_claims(authorization_code)
        claims["sid"] = session_id_claim(authorization_code.row.login_session_id)
        return claims

    def generate_user_info(self, user: User, scope: str) -> dict[str, Any]:
        return user_claims(db(), user, scope)


def session_id_claim(login_session_id: int | None) -> str | None:
    """The OIDC ``sid``: stable per login session, opaque (keyed, so ids are not exposed)."""
    if login_session_id is None:
        return None
    return keyed_hmac(current().config.secret_key, str(login_session_id), purpose="sid")[:32]


class RefreshTokenGrant(grants.RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = [
        "client_secret_basic",
        "client_secret_post",
        "private_key_jwt",
        "none",
    ]
    INCLUDE_NEW_REFRESH_TOKEN = True

    def authenticate_refresh_token(self, refresh_token: str) -> Token | None:
        row = db().execute(
            select(Token, User)
            .join(User, User.id == Token.user_id)
            .where(Token.refresh_token_sha256 == sha256_hex(refresh_token))
        ).first()
        if row is None:
            return None
        token, user = row
        if token.rotated_at is not None or token.revoked_at is not None:
            if token.rotated_at is not None:
                family = token.family_id
                after_rollback(lambda: revoke_family(family))
            return None
        if token.refresh_expires_at is None or token.refresh_expires_at <= utcnow():
            return None
        if user.status != "active":
            return None
        g.oidc_refresh_user = user
        g.oidc_refreshed = token
        return _TokenView(token)

    def authenticate_user(self, refresh_token: _TokenView) -> User | None:
        return g.oidc_refresh_user

    def revoke_old_credential(self, refresh_token: _TokenView) -> None:
        rotated = db().execute(
            update(Token)
            .where(
                Token.id == refresh_token.row.id,
                Token.rotated_at.is_(None),
                Token.revoked_at.is_(None),
            )
            .values(rotated_at=utcnow())
        )
        if rotated.rowcount != 1:
            family = refresh_token.row.family_id
            after_rollback(lambda: revoke_family(family))
            raise InvalidGrantError("The refresh token was already used.")


class _TokenView:
    """A Token row as Authlib's TokenMixin for the refresh grant."""

    def __init__(self, row: Token) -> None:
        self.row = row

    def get_scope(self) -> str:
        return self.row.scope

    def check_client(self, client: Any) -> bool:
        return client.client_id == self.row.client_id and client.tenant.slug == self.row.tenant

    def is_expired(self) -> bool:
        return False

    def is_revoked(self) -> bool:
        return False

    def get_client(self) -> Any:
        return None

    def get_user(self) -> Any:
        return g.oidc_refresh_user


def token_record(token: dict[str, Any], request: Any, tenant_minutes: tuple[int, int]) -> Token:
    """The Token row for a newly issued token response."""
    access_minutes, refresh_days = tenant_minutes
    now = utcnow()
    code = getattr(request, "authorization_code", None)
    previous: Token | None = g.get("oidc_refreshed")
    if code is not None:
        family = new_token(16)
        auth_time, amr, acr = code.row.auth_time, list(code.row.amr), code.row.acr
        session_id, code_digest = code.row.login_session_id, code.row.code_sha256
    elif previous is not None:
        family = previous.family_id
        auth_time, amr, acr = previous.auth_time, list(previous.amr), previous.acr
        session_id, code_digest = previous.login_session_id, previous.code_sha256
    else:  # pragma: no cover - only the two grants above issue tokens
        raise RuntimeError("token issued without a code or refresh token")
    refresh = token.get("refresh_token")
    return Token(
        tenant=request.client.tenant.slug,
        client_id=request.client.client_id,
        user_id=request.user.id,
        login_session_id=session_id,
        family_id=family,
        code_sha256=code_digest,
        access_token_sha256=sha256_hex(token["access_token"]),
        refresh_token_sha256=sha256_hex(refresh) if refresh else None,
        scope=token.get("scope", ""),
        auth_time=auth_time,
        amr=amr,
        acr=acr,
        issued_at=now,
        access_expires_at=now + timedelta(minutes=access_minutes),
        refresh_expires_at=now + timedelta(days=refresh_days) if refresh else None,
    )
