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
    InvalidRequestError,
    InvalidScopeError,
)
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import OpenIDCode
from flask import g
from sqlalchemy import update

from ..models import AuthorizationCode, Token, utcnow
from ..security import keyed_hmac, new_token, sha256_hex
from ..state import current, db
from . import token_store
from .claims import user_claims
from .token_store import RedeemedCode, RotatedToken, TokenHolder, UserRef

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
    """A redeemed authorization code as Authlib's AuthorizationCodeMixin."""

    def __init__(self, row: RedeemedCode, user: TokenHolder) -> None:
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
        """Redeem the code here, atomically (see token_store.redeem_code): a refusal later in
        the request rolls the redemption back, so a refused request leaves the code as it was."""
        digest = sha256_hex(code)
        tenant = client.tenant.slug
        redeemed = token_store.redeem_code(db(), digest, tenant, client.client_id, utcnow())
        if redeemed is None:
            if token_store.explain_unredeemed_code(db(), digest, tenant, client.client_id):
                after_rollback(lambda: revoke_tokens_of_code(digest))
            return None
        return StoredCode(*redeemed)

    def authenticate_user(self, authorization_code: StoredCode) -> TokenHolder:
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

    def generate_user_info(self, user: TokenHolder, scope: str) -> dict[str, Any]:
        return user_claims(db(), user, scope, user.customer_accounts)


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

    def authenticate_refresh_token(self, refresh_token: str) -> _TokenView | None:
        """Rotate the token here, atomically (see token_store.rotate_refresh_token): a refusal
        later in the request rolls the rotation back."""
        digest = sha256_hex(refresh_token)
        client = self.request.client
        rotated = token_store.rotate_refresh_token(
            db(), digest, client.tenant.slug, client.client_id, utcnow()
        )
        if rotated is None:
            family = token_store.explain_unrotated_token(db(), digest)
            if family is not None:
                after_rollback(lambda: revoke_family(family))
            return None
        g.oidc_refreshed = rotated
        return _TokenView(rotated)

    def authenticate_user(self, refresh_token: _TokenView) -> UserRef:
        return UserRef(refresh_token.row.user_id)

    def revoke_old_credential(self, refresh_token: _TokenView) -> None:
        """Already done: the token was rotated when it was authenticated."""


class _TokenView:
    """A rotated refresh token as Authlib's TokenMixin; the rotation checked client, expiry
    and revocation, so the checks Authlib asks for here hold by construction."""

    def __init__(self, row: RotatedToken) -> None:
        self.row = row

    def get_scope(self) -> str:
        return self.row.scope

    def check_client(self, client: Any) -> bool:
        return True

    def is_expired(self) -> bool:
        return False

    def is_revoked(self) -> bool:
        return False

    def get_client(self) -> Any:
        return None

    def get_user(self) -> Any:
        return UserRef(self.row.user_id)


def token_values(
    token: dict[str, Any], request: Any, tenant_minutes: tuple[int, int]
) -> dict[str, Any]:
    """The ``tokens`` row for a newly issued token response."""
    access_minutes, refresh_days = tenant_minutes
    now = utcnow()
    code: StoredCode | None = getattr(request, "authorization_code", None)
    previous: RotatedToken | None = g.get("oidc_refreshed")
    if code is not None:
        family = new_token(16)
        origin: RedeemedCode | RotatedToken = code.row
    elif previous is not None:
        family = previous.family_id
        origin = previous
    else:  # pragma: no cover - only the two grants above issue tokens
        raise RuntimeError("token issued without a code or refresh token")
    refresh = token.get("refresh_token")
    return {
        "tenant": request.client.tenant.slug,
        "client_id": request.client.client_id,
        "user_id": request.user.id,
        "login_session_id": origin.login_session_id,
        "family_id": family,
        "code_sha256": origin.code_sha256,
        "access_token_sha256": sha256_hex(token["access_token"]),
        "refresh_token_sha256": sha256_hex(refresh) if refresh else None,
        "scope": token.get("scope", ""),
        "auth_time": origin.auth_time,
        "amr": list(origin.amr),
        "acr": origin.acr,
        "issued_at": now,
        "access_expires_at": now + timedelta(minutes=access_minutes),
        "refresh_expires_at": now + timedelta(days=refresh_days) if refresh else None,
    }
