"""The shared base: authorization code flow with state and PKCE, plus OIDC's nonce and ID token.

A provider object is cheap and built per request from the tenant's :class:`UpstreamConfig`;
what must outlive a request (discovery, JWK sets) sits in :mod:`providers.metadata`, and what
belongs to one login attempt travels in ``state_data``, which the broker stores server-side.
Subclasses say only what differs: scopes, extra authorization parameters, client
authentication, the expected issuer and the claim mapping.
"""

from __future__ import annotations

import hmac
import secrets
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import requests
from authlib.common.errors import AuthlibBaseError
from authlib.integrations.requests_client import OAuth2Session

from broker.config import UpstreamConfig

from . import id_token
from .identity import (
    AuthorizationStart,
    UpstreamError,
    UpstreamIdentity,
    acr_at_least,
    stronger_acr,
)
from .keys import ProviderKeys
from .metadata import HTTP_TIMEOUT_SECONDS, DocumentCache, shared_cache


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def text_claim(claims: Mapping[str, Any], name: str | None) -> str | None:
    """A claim as text, or None when absent or empty (upstreams differ in how they omit)."""
    if not name:
        return None
    value = claims.get(name)
    if value is None or value == "":
        return None
    return str(value)


def drop_claims(claims: Mapping[str, Any], *names: str | None) -> dict[str, Any]:
    """Raw claims minus those the tenant may not hold (a national id it did not ask for)."""
    return {key: value for key, value in claims.items() if key not in names}


def true_claim(value: Any) -> bool:
    """Some upstreams send booleans as strings ("true")."""
    return value is True or (isinstance(value, str) and value.lower() == "true")


class OAuth2Provider(ABC):
    """Authorization code flow with state and PKCE (S256); no ID token (Facebook)."""

    kind: ClassVar[str]
    default_metadata_url: ClassVar[str | None] = None
    default_endpoints: ClassVar[dict[str, str]] = {}
    default_scopes: ClassVar[tuple[str, ...]] = ()
    token_endpoint_auth_method: ClassVar[str] = "client_secret_basic"

    def __init__(
        self,
        config: UpstreamConfig,
        *,
        redirect_uri: str,
        keys: ProviderKeys | None = None,
        cache: DocumentCache | None = None,
    ) -> None:
        if config.kind != self.kind:
            raise ValueError(f"{type(self).__name__} cannot serve a {config.kind!r} upstream")
        self.config = config
        self.redirect_uri = redirect_uri
        self.keys = keys
        self.cache = cache or shared_cache

    # --- what subclasses adjust -------------------------------------------------------------

    def scopes(self) -> list[str]:
        return list(self.config.scopes or self.default_scopes)

    def authorization_params(self, required_acr: str | None) -> dict[str, str]:
        """Extra query parameters, e.g. how this upstream is asked for a level of assurance."""
        return {}

    @abstractmethod
    def identity_from_token(
        self, token: Mapping[str, Any], state_data: Mapping[str, Any]
    ) -> UpstreamIdentity:
        """Turns the token response into a checked, mapped identity."""

    # --- metadata ---------------------------------------------------------------------------

    def metadata_url(self) -> str | None:
        if self.config.server_metadata_url:
            return self.config.server_metadata_url
        if self.config.issuer:
            return self.config.issuer.rstrip("/") + "/.well-known/openid-configuration"
        return self.default_metadata_url

    def metadata(self) -> dict[str, Any]:
        url = self.metadata_url()
        if url is None:
            if not self.default_endpoints:
                raise UpstreamError("not_configured", f"{self.kind}: no server_metadata_url")
            return dict(self.default_endpoints)
        return self.cache.get(url)

    def endpoint(self, name: str) -> str:
        value = self.metadata().get(name)
        if not isinstance(value, str) or not value:
            raise UpstreamError("discovery_failed", f"{self.kind}: metadata lacks {name}")
        return value

    # --- the flow ---------------------------------------------------------------------------

    def oauth_session(self) -> OAuth2Session:
        method = self.config.extra.get("token_endpoint_auth_method",
                                       self.token_endpoint_auth_method)
        return OAuth2Session(
            client_id=self.config.client_id,
            client_secret=self.config.client_secret,
            scope=" ".join(self.scopes()),
            redirect_uri=self.redirect_uri,
            code_challenge_method="S256",
            token_endpoint_auth_method=method,
        )

    def new_state_data(self, required_acr: str | None) -> dict[str, Any]:
        return {
            "provider": self.kind,
            "state": new_secret(),
            "code_verifier": secrets.token_urlsafe(64),
            "redirect_uri": self.redirect_uri,
            "required_acr": required_acr,
        }

    def authorization_url(self, state_data: Mapping[str, Any], params: dict[str, str]) -> str:
        session = self.oauth_session()
        url, _ = session.create_authorization_url(
            self.endpoint("authorization_endpoint"),
            state=state_data["state"],
            code_verifier=state_data["code_verifier"],
            **params,
        )
        return str(url)

    def begin(self, login_hint: str | None = None, acr: str | None = None) -> AuthorizationStart:
        """Where to send the browser; ``acr`` is what the portal asked for, if anything."""
        required_acr = stronger_acr(self.config.min_acr, acr)
        state_data = self.new_state_data(required_acr)
        params = self.authorization_params(required_acr)
        if login_hint:
            params["login_hint"] = login_hint
        return AuthorizationStart(self.authorization_url(state_data, params), state_data)

    def complete(
        self, callback_args: Mapping[str, str], state_data: Mapping[str, Any]
    ) -> UpstreamIdentity:
        """Checks the browser's return, redeems the code and returns the mapped identity."""
        code = self.check_callback(callback_args, state_data)
        token = self.exchange_code(code, state_data)
        identity = self.identity_from_token(token, state_data)
        required = state_data.get("required_acr")
        if not acr_at_least(identity.acr, required):
            raise UpstreamError("acr_too_low", f"{identity.acr} is below the required {required}")
        return identity

    def check_callback(
        self, callback_args: Mapping[str, str], state_data: Mapping[str, Any]
    ) -> str:
        expected = str(state_data.get("state") or "")
        returned = str(callback_args.get("state") or "")
        if not expected or not hmac.compare_digest(expected.encode(), returned.encode()):
            raise UpstreamError("state_mismatch", "the callback's state is not this login's")
        if state_data.get("provider") != self.kind:
            raise UpstreamError("state_mismatch", "the stored login belongs to another upstream")
        error = callback_args.get("error")
        if error:
            code = "access_denied" if error == "access_denied" else "upstream_error"
            raise UpstreamError(code, f"{error}: {callback_args.get('error_description', '')}")
        code_value = callback_args.get("code")
        if not code_value:
            raise UpstreamError("missing_code", "the callback carries no code")
        return code_value

    def exchange_code(self, code: str, state_data: Mapping[str, Any]) -> dict[str, Any]:
        session = self.oauth_session()
        try:
            token = session.fetch_token(
                self.endpoint("token_endpoint"),
                code=code,
                code_verifier=state_data["code_verifier"],
                redirect_uri=state_data["redirect_uri"],
                grant_type="authorization_code",
                timeout=HTTP_TIMEOUT_SECONDS,
            )
        except AuthlibBaseError as error:
            raise UpstreamError("token_exchange_failed", str(error.error)) from None
        except (requests.RequestException, ValueError) as error:
            raise UpstreamError("token_exchange_failed", type(error).__name__) from None
        finally:
            session.close()
        if not token.get("access_token"):
            raise UpstreamError("token_exchange_failed", "no access_token in the response")
        return dict(token)

    def get_json(self, url: str, access_token: str, params: dict[str, str] | None = None
                 ) -> requests.Response:
        try:
            response = requests.get(
                url, params=params, timeout=HTTP_TIMEOUT_SECONDS,
                headers={"Authorization": f"Bearer {access_token}"},
            )
            response.raise_for_status()
        except requests.RequestException as error:
            raise UpstreamError("userinfo_failed", type(error).__name__) from None
        return response


class OIDCProvider(OAuth2Provider):
    """OpenID Connect: adds the nonce, the ID token checks and (optionally) userinfo."""

    default_scopes = ("openid", "profile", "email")
    allowed_algs: ClassVar[tuple[str, ...]] = id_token.DEFAULT_SIGNING_ALGS
    requires_encrypted_id_token: ClassVar[bool] = False
    uses_userinfo: ClassVar[bool] = False

    @abstractmethod
    def map_identity(self, claims: Mapping[str, Any]) -> UpstreamIdentity:
        """The upstream's claims in our vocabulary."""

    def new_state_data(self, required_acr: str | None) -> dict[str, Any]:
        return {**super().new_state_data(required_acr), "nonce": new_secret()}

    def authorization_url(self, state_data: Mapping[str, Any], params: dict[str, str]) -> str:
        return super().authorization_url(state_data, {**params, "nonce": state_data["nonce"]})

    def expected_issuer(self, claims: Mapping[str, Any]) -> str:
        return self.endpoint("issuer")

    def load_jwks(self, refresh: bool) -> Mapping[str, Any]:
        return self.cache.get(self.endpoint("jwks_uri"), refresh=refresh, error_code="bad_jwks")

    def unwrap(self, token: str) -> str:
        """The signed JWT, after decrypting a nested JWT when this upstream encrypts."""
        if id_token.is_encrypted(token):
            if self.keys is None:
                raise UpstreamError("decryption_failed", "no encryption key configured")
            return id_token.decrypt_token(
                token, self.keys.encryption_key, algorithms=self.encryption_algs()
            )
        if self.requires_encrypted_id_token:
            raise UpstreamError("not_encrypted", "the upstream must encrypt its tokens to us")
        return token

    def encryption_algs(self) -> list[str]:
        metadata = self.metadata()
        algs = metadata.get("id_token_encryption_alg_values_supported") or ["RSA-OAEP"]
        encs = metadata.get("id_token_encryption_enc_values_supported") or ["A128CBC-HS256"]
        return [a for a in [*algs, *encs] if a not in ("RSA1_5",)]

    def validate_id_token(self, raw: str, nonce: str | None) -> dict[str, Any]:
        signed = self.unwrap(raw)
        _, claims = id_token.verify_signature(signed, self.load_jwks,
                                              allowed_algs=self.allowed_algs)
        id_token.check_claims(claims, issuer=self.expected_issuer(claims),
                              client_id=self.config.client_id, nonce=nonce)
        return claims

    def userinfo(self, access_token: str, subject: str) -> dict[str, Any]:
        response = self.get_json(self.endpoint("userinfo_endpoint"), access_token)
        if response.headers.get("Content-Type", "").startswith("application/jwt"):
            signed = self.unwrap(response.text.strip())
            _, claims = id_token.verify_signature(signed, self.load_jwks,
                                                  allowed_algs=self.allowed_algs)
        else:
            try:
                claims = response.json()
            except ValueError:
                raise UpstreamError("userinfo_failed", "userinfo is not JSON") from None
        if not isinstance(claims, dict) or claims.get("sub") != subject:
            raise UpstreamError("subject_mismatch", "userinfo describes another person")
        return claims

    def identity_from_token(
        self, token: Mapping[str, Any], state_data: Mapping[str, Any]
    ) -> UpstreamIdentity:
        raw = token.get("id_token")
        if not isinstance(raw, str) or not raw:
            raise UpstreamError("missing_id_token", "the token response has no id_token")
        claims = self.validate_id_token(raw, state_data.get("nonce"))
        if self.uses_userinfo:
            claims = {**claims, **self.userinfo(token["access_token"], claims["sub"])}
        return self.map_identity(claims)
