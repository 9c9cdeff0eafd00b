"""Facebook Login: OAuth2 (no ID token) and the Graph API's ``/me``.

``email`` is missing when the person has none confirmed or declines to share it, and nothing in
the answer proves ownership, so it is never treated as verified; the broker asks and verifies.
Graph calls carry ``appsecret_proof`` so a leaked access token alone cannot be replayed.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

from .base import OAuth2Provider, text_claim
from .identity import UpstreamError, UpstreamIdentity

GRAPH = "https://graph.facebook.com/v19.0"
PROFILE_FIELDS = "id,name,first_name,last_name,email"


class FacebookProvider(OAuth2Provider):
    kind = "facebook"
    default_endpoints = {
        "authorization_endpoint": "https://www.facebook.com/v19.0/dialog/oauth",
        "token_endpoint": GRAPH + "/oauth/access_token",
        "userinfo_endpoint": GRAPH + "/me",
    }
    default_scopes = ("public_profile", "email")
    token_endpoint_auth_method = "client_secret_post"

    def identity_from_token(
        self, token: Mapping[str, Any], state_data: Mapping[str, Any]
    ) -> UpstreamIdentity:
        access_token = str(token["access_token"])
        proof = hmac.new((self.config.client_secret or "").encode(), access_token.encode(),
                         hashlib.sha256).hexdigest()
        response = self.get_json(self.endpoint("userinfo_endpoint"), access_token,
                                 {"fields": PROFILE_FIELDS, "appsecret_proof": proof})
        try:
            profile = response.json()
        except ValueError:
            raise UpstreamError("userinfo_failed", "Graph API answer is not JSON") from None
        if not isinstance(profile, dict) or not text_claim(profile, "id"):
            raise UpstreamError("missing_claim", "the Graph API returned no id")
        return UpstreamIdentity(
            provider=self.kind,
            subject=str(profile["id"]),
            amr="facebook",
            acr="low",
            email=text_claim(profile, "email"),
            email_verified=False,
            name=text_claim(profile, "name"),
            given_name=text_claim(profile, "first_name"),
            family_name=text_claim(profile, "last_name"),
            raw_claims=profile,
        )
