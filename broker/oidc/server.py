"""One Authlib AuthorizationServer per tenant, built once at start-up and kept in memory."""

from __future__ import annotations

from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from joserfc.jwk import KeySet
from sqlalchemy.exc import IntegrityError

from ..config import BrokerConfig, TenantConfig
from ..models import AttemptCounter, utcnow
from ..security import new_token
from ..state import db
from .clients import PortalClient, clients_for
from .endpoints import TokenIntrospection, TokenRevocation
from .grants import (
    AuthorizationCodeGrant,
    OpenIDCodeExtension,
    RefreshTokenGrant,
    S256CodeChallenge,
    after_rollback,
    token_values,
)
from .keys import KeyStore
from .token_store import insert_token

SCOPES = ["openid", "profile", "email", "phone", "customer_accounts", "offline_access"]


def issuer_of(config: BrokerConfig, tenant: str) -> str:
    return f"{config.public_url.rstrip('/')}/t/{tenant}"


class PrivateKeyJWT(JWTBearerClientAssertion):
    """private_key_jwt client authentication; each assertion's jti is accepted once."""

    CLIENT_AUTH_METHOD = "private_key_jwt"

    def __init__(self, token_endpoint: str, issuer: str) -> None:
        super().__init__(validate_jti=True)
        self._audiences = [token_endpoint, issuer]

    def get_audiences(self) -> list[str]:
        return self._audiences

    def resolve_client_public_key(self, client: PortalClient) -> KeySet:
        return KeySet.import_key_set(client.public_jwks or {"keys": []})

    def validate_jti(self, claims: dict[str, Any], jti: str) -> bool:
        """Each assertion once, also when the request it came with is refused later: the jti is
        recorded again after the rollback (see grants.after_rollback)."""
        key = f"jti:{claims['sub']}:{jti}"[:255]
        if not _record_jti(key):
            return False
        after_rollback(lambda: _record_jti(key))
        return True


def _record_jti(key: str) -> bool:
    session = db()
    try:
        with session.begin_nested():
            session.add(AttemptCounter(key=key, failures=0))
    except IntegrityError:
        return False
    return True


class TenantServer(AuthorizationServer):
    """The authorization server of one tenant."""

    def __init__(self, config: BrokerConfig, tenant: TenantConfig, keys: KeyStore) -> None:
        super().__init__()
        self.tenant = tenant
        self.issuer = issuer_of(config, tenant.slug)
        self.clients = clients_for(tenant)
        self.keys = keys
        self.scopes_supported = SCOPES
        self.register_token_generator("default", self._generate_token)
        self.register_client_auth_method(
            "private_key_jwt", PrivateKeyJWT(f"{self.issuer}/token", self.issuer)
        )
        openid = OpenIDCodeExtension(
            self.issuer, lambda: keys.cached(tenant.slug), tenant.id_token_minutes
        )
        self.register_grant(AuthorizationCodeGrant, [S256CodeChallenge(required=True), openid])
        self.register_grant(RefreshTokenGrant)
        self.register_endpoint(TokenRevocation(self))
        self.register_endpoint(TokenIntrospection(self, self.issuer))

    def query_client(self, client_id: str) -> PortalClient | None:
        return self.clients.get(client_id)

    def save_token(self, token: dict[str, Any], request: Any) -> None:
        minutes = (self.tenant.access_token_minutes, self.tenant.refresh_token_days)
        insert_token(db(), token_values(token, request, minutes))

    def _generate_token(
        self,
        grant_type: str,
        client: PortalClient,
        user: Any = None,
        scope: str | None = None,
        expires_in: int | None = None,
        include_refresh_token: bool = True,
    ) -> dict[str, Any]:
        """Opaque random tokens: checking one costs a SHA-256 and one indexed lookup."""
        token: dict[str, Any] = {
            "token_type": "Bearer",
            "access_token": new_token(),
            "expires_in": self.tenant.access_token_minutes * 60,
            "scope": scope or "",
        }
        if include_refresh_token and "offline_access" in (scope or "").split():
            token["refresh_token"] = new_token()
        return token


def build_servers(config: BrokerConfig, keys: KeyStore) -> dict[str, TenantServer]:
    return {slug: TenantServer(config, tenant, keys) for slug, tenant in config.tenants.items()}


def now_epoch() -> int:
    return int(utcnow().timestamp())
