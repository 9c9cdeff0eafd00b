"""Upstream identity providers: a shared OIDC/OAuth2 base and one small module per upstream.

The login flow uses four names::

    provider = build_provider(upstream_config, redirect_uri=..., keys=None)
    start = provider.begin(login_hint=None, acr=None)   # redirect to start.url, keep
                                                        # start.state_data server-side
    identity = provider.complete(request.args, state_data)  # UpstreamIdentity
    # every defect raises UpstreamError(code, message)
"""

from .identity import AuthorizationStart, UpstreamError, UpstreamIdentity
from .keys import (
    ProviderKeys,
    ftn_public_jwks,
    generate_provider_keys,
    load_or_create_provider_keys,
)
from .registry import PROVIDERS, build_provider

__all__ = [
    "PROVIDERS",
    "AuthorizationStart",
    "ProviderKeys",
    "UpstreamError",
    "UpstreamIdentity",
    "build_provider",
    "ftn_public_jwks",
    "generate_provider_keys",
    "load_or_create_provider_keys",
]
