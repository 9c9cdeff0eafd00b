"""Microsoft identity platform v2.0: work or school accounts and personal accounts.

The ``common`` and ``organizations`` metadata name the issuer as a template,
``https://login.microsoftonline.com/{tenantid}/v2.0``; the real issuer is the template filled
with the token's own ``tid``, and which tenants may log in is our decision, not the token's.
``email`` is whatever the account holder typed unless ``xms_edov`` says the domain owner
verified it, so it is only trusted as verified then.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .base import OIDCProvider, text_claim, true_claim
from .identity import UpstreamError, UpstreamIdentity

TENANT_PLACEHOLDER = "{tenantid}"
CONSUMER_TENANT_ID = "9188040d-6c67-4c5b-b112-36a304b66dad"
TENANT_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class MicrosoftProvider(OIDCProvider):
    kind = "microsoft"
    default_metadata_url = (
        "https://login.microsoftonline.com/common/v2.0/.well-known/openid-configuration"
    )
    token_endpoint_auth_method = "client_secret_post"
    allowed_algs = ("RS256",)

    def audience_segment(self) -> str:
        """``common``, ``organizations``, ``consumers`` or a tenant id, from the metadata URL."""
        url = self.metadata_url() or ""
        match = re.search(r"/(common|organizations|consumers|[0-9a-fA-F-]{36})/v2\.0/", url)
        return match.group(1).lower() if match else "common"

    def expected_issuer(self, claims: Mapping[str, Any]) -> str:
        issuer = self.endpoint("issuer")
        tenant_id = str(claims.get("tid", "")).lower()
        if not TENANT_ID.match(tenant_id):
            raise UpstreamError("wrong_issuer", "the token carries no valid tid")
        allowed = [str(t).lower() for t in self.config.extra.get("allowed_tenants", [])]
        segment = self.audience_segment()
        if allowed and tenant_id not in allowed:
            raise UpstreamError("tenant_not_allowed", "this organisation may not log in here")
        if segment == "organizations" and tenant_id == CONSUMER_TENANT_ID:
            raise UpstreamError("tenant_not_allowed", "personal accounts may not log in here")
        if segment == "consumers" and tenant_id != CONSUMER_TENANT_ID:
            raise UpstreamError("tenant_not_allowed", "work accounts may not log in here")
        return issuer.replace(TENANT_PLACEHOLDER, tenant_id)

    def map_identity(self, claims: Mapping[str, Any]) -> UpstreamIdentity:
        object_id = text_claim(claims, "oid")
        if object_id is None:
            raise UpstreamError("missing_claim", "oid is missing")
        email = text_claim(claims, "email")
        return UpstreamIdentity(
            provider=self.kind,
            subject=f"{str(claims['tid']).lower()}:{object_id}",
            amr="microsoft",
            acr="low",
            email=email,
            email_verified=email is not None and true_claim(claims.get("xms_edov")),
            name=text_claim(claims, "name"),
            given_name=text_claim(claims, "given_name"),
            family_name=text_claim(claims, "family_name"),
            raw_claims=dict(claims),
        )
