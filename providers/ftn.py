"""Finnish Trust Network bank identification (Traficom recommendation 213/2023 S).

FTN asks more of us than other upstreams: the authorization request is a signed request object
(JAR, RS256) carrying every parameter, the token endpoint wants ``private_key_jwt`` with a
``kid`` and a ``jti``, and the ID token arrives signed and then encrypted to our key. The hetu's
claim name depends on the broker selling FTN (``dialect``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jwt

from .base import OIDCProvider, drop_claims, new_secret, text_claim
from .identity import UpstreamError, UpstreamIdentity
from .keys import SIGNING_ALG, ProviderKeys

FTN_LOA = "http://ftn.ficora.fi/2017/"
ACR_FROM_FTN = {
    FTN_LOA + "loa2": "substantial",
    FTN_LOA + "loa3": "high",
    FTN_LOA + "loatest2": "substantial",
    FTN_LOA + "loatest3": "high",
}
REQUEST_OBJECT_LIFETIME_SECONDS = 300


@dataclass(frozen=True)
class FTNDialect:
    hetu_claim: str
    hetu_scope: str
    scopes: tuple[str, ...] = ("openid", "profile")


DIALECTS = {
    "op": FTNDialect(hetu_claim="personal_identity_code", hetu_scope="personal_identity_code"),
    "idura": FTNDialect(hetu_claim="hetu", hetu_scope="ssn"),
    "signicat": FTNDialect(hetu_claim="nin", hetu_scope="nin"),
}
DEFAULT_DIALECT = "op"


class FTNProvider(OIDCProvider):
    kind = "ftn"
    allowed_algs = ("RS256",)
    requires_encrypted_id_token = True
    token_endpoint_auth_method = "private_key_jwt"

    def __init__(self, config: Any, *, redirect_uri: str, keys: ProviderKeys | None = None,
                 **kwargs: Any) -> None:
        if keys is None:
            raise UpstreamError("not_configured", "FTN needs the broker's signing and "
                                "encryption keys (ProviderKeys)")
        super().__init__(config, redirect_uri=redirect_uri, keys=keys, **kwargs)
        self.provider_keys = keys

    @property
    def dialect(self) -> FTNDialect:
        name = self.config.dialect or DEFAULT_DIALECT
        if name not in DIALECTS:
            raise UpstreamError("not_configured", f"unknown FTN dialect {name!r}")
        return DIALECTS[name]

    def scopes(self) -> list[str]:
        scopes = list(self.config.scopes or self.dialect.scopes)
        if self.config.allow_national_id and self.dialect.hetu_scope not in scopes:
            scopes.append(self.dialect.hetu_scope)
        return scopes

    def authorization_params(self, required_acr: str | None) -> dict[str, str]:
        level = "loa3" if required_acr == "high" else "loa2"
        return {"acr_values": FTN_LOA + level}

    def authorization_url(self, state_data: Mapping[str, Any], params: dict[str, str]) -> str:
        """Everything goes into the signed request object; outside it only ``client_id``."""
        now = int(time.time())
        request_claims = {
            **params,
            "iss": self.config.client_id,
            "aud": self.endpoint("issuer"),
            "client_id": self.config.client_id,
            "response_type": "code",
            "redirect_uri": state_data["redirect_uri"],
            "scope": " ".join(self.scopes()),
            "state": state_data["state"],
            "nonce": state_data["nonce"],
            "code_challenge": create_s256_code_challenge(state_data["code_verifier"]),
            "code_challenge_method": "S256",
            "iat": now,
            "nbf": now,
            "exp": now + REQUEST_OBJECT_LIFETIME_SECONDS,
            "jti": new_secret(),
        }
        header = {"alg": SIGNING_ALG, "kid": self.provider_keys.signing_kid,
                  "typ": "oauth-authz-req+jwt"}
        request_object = jwt.encode(header, request_claims, self.provider_keys.signing_key)
        query = urlencode({"client_id": self.config.client_id, "request": request_object})
        endpoint = self.endpoint("authorization_endpoint")
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{query}"

    def oauth_session(self) -> OAuth2Session:
        """private_key_jwt: a fresh assertion (new ``jti``) with our ``kid`` per exchange."""
        session = OAuth2Session(
            client_id=self.config.client_id,
            client_secret=self.provider_keys.signing_key.as_pem(private=True),
            redirect_uri=self.redirect_uri,
            token_endpoint_auth_method="private_key_jwt",
        )
        session.register_client_auth_method(PrivateKeyJWT(
            self.endpoint("token_endpoint"),
            headers={"kid": self.provider_keys.signing_kid},
            alg=SIGNING_ALG,
        ))
        return session

    def map_identity(self, claims: Mapping[str, Any]) -> UpstreamIdentity:
        acr = ACR_FROM_FTN.get(str(claims.get("acr")))
        if acr is None:
            raise UpstreamError("missing_claim", "no known FTN level of assurance (acr)")
        hetu_claim = self.dialect.hetu_claim
        national_id = (text_claim(claims, hetu_claim)
                       if self.config.allow_national_id else None)
        return UpstreamIdentity(
            provider=self.kind,
            subject=str(claims["sub"]),
            amr="ftn",
            acr=acr,  # type: ignore[arg-type]
            name=text_claim(claims, "name"),
            given_name=text_claim(claims, "given_name"),
            family_name=text_claim(claims, "family_name"),
            birthdate=text_claim(claims, "birthdate"),
            national_id=national_id,
            raw_claims=dict(claims) if national_id else drop_claims(claims, hetu_claim),
        )
