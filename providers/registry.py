"""Which provider class serves which upstream kind, and how the login flow gets one."""

from __future__ import annotations

from broker.config import UpstreamConfig

from .base import OAuth2Provider
from .facebook import FacebookProvider
from .ftn import FTNProvider
from .google import GoogleProvider
from .keys import ProviderKeys, load_or_create_provider_keys
from .metadata import DocumentCache
from .microsoft import MicrosoftProvider
from .mitid import MitIDProvider

PROVIDERS: dict[str, type[OAuth2Provider]] = {
    "mitid": MitIDProvider,
    "ftn": FTNProvider,
    "microsoft": MicrosoftProvider,
    "google": GoogleProvider,
    "facebook": FacebookProvider,
}


def build_provider(
    upstream_config: UpstreamConfig,
    *,
    redirect_uri: str,
    keys: ProviderKeys | None = None,
    cache: DocumentCache | None = None,
) -> OAuth2Provider:
    """A provider for one login attempt; cheap, so build one per request.

    Without ``keys``, an upstream that needs our own keys (FTN) reads them from the config's
    ``keys_file`` (created on first use).
    """
    if keys is None and upstream_config.keys_file:
        keys = load_or_create_provider_keys(upstream_config.keys_file)
    provider_class = PROVIDERS[upstream_config.kind]
    return provider_class(upstream_config, redirect_uri=redirect_uri, keys=keys, cache=cache)
