"""Portals (relying parties) from the config, as Authlib client objects. Kept in memory."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from authlib.oauth2.rfc6749 import ClientMixin

from ..config import ClientConfig, TenantConfig

GRANT_TYPES = ("authorization_code", "refresh_token")


class PortalClient(ClientMixin):  # type: ignore[misc]
    """An OIDC client as declared in a tenant's config."""

    def __init__(self, tenant: TenantConfig, config: ClientConfig) -> None:
        self.tenant = tenant
        self.config = config
        self.client_id = config.client_id
        self._secret_digest = config.secret_digest

    # --- Authlib ClientMixin -------------------------------------------------------------
    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        # No default: every authorization request must name a registered redirect_uri
        # exactly, so a typo in a portal never silently goes somewhere else.
        return None

    def get_allowed_scope(self, scope: str | None) -> str:
        if not scope:
            return ""
        allowed = set(self.config.scopes)
        return " ".join(s for s in scope.split() if s in allowed)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        """Exact string match (no prefix or wildcard matching)."""
        return redirect_uri in self.config.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        if self._secret_digest is None or not client_secret:
            return False
        given = hashlib.sha256(client_secret.encode()).hexdigest()
        return hmac.compare_digest(given, self._secret_digest)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == self.config.token_endpoint_auth_method

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in GRANT_TYPES

    # --- used by private_key_jwt and logout ----------------------------------------------
    @property
    def public_jwks(self) -> dict[str, Any] | None:
        return self.config.jwks

    @property
    def is_public(self) -> bool:
        return self.config.client_type == "public"


def clients_for(tenant: TenantConfig) -> dict[str, PortalClient]:
    return {c.client_id: PortalClient(tenant, c) for c in tenant.clients}
