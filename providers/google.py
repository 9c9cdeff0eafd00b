"""Google: plain OpenID Connect; ``email_verified`` is a claim Google sets itself."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import OIDCProvider, text_claim, true_claim
from .identity import UpstreamIdentity

GOOGLE_ISSUER = "https://accounts.google.com"


class GoogleProvider(OIDCProvider):
    kind = "google"
    default_metadata_url = GOOGLE_ISSUER + "/.well-known/openid-configuration"
    allowed_algs = ("RS256",)

    def expected_issuer(self, claims: Mapping[str, Any]) -> str:
        issuer = self.endpoint("issuer")
        # Google documents both spellings of its own issuer.
        if issuer == GOOGLE_ISSUER and claims.get("iss") == "accounts.google.com":
            return "accounts.google.com"
        return issuer

    def map_identity(self, claims: Mapping[str, Any]) -> UpstreamIdentity:
        email = text_claim(claims, "email")
        return UpstreamIdentity(
            provider=self.kind,
            subject=str(claims["sub"]),
            amr="google",
            acr="low",
            email=email,
            email_verified=email is not None and true_claim(claims.get("email_verified")),
            name=text_claim(claims, "name"),
            given_name=text_claim(claims, "given_name"),
            family_name=text_claim(claims, "family_name"),
            raw_claims=dict(claims),
        )
