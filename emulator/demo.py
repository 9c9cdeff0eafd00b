"""The emulator as a demo companion: served next to the broker, knowing the demo's clients."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Flask

from broker.config import BrokerConfig
from providers.keys import load_or_create_provider_keys

from .app import EmulatorRefused, create_emulator

DEFAULT_PORT = 5002


def emulator_server(config: BrokerConfig) -> tuple[str, Flask, int, str]:
    """(name, app, port, link) for the dev server; FTN clients get their keys registered."""
    if not (config.dev_mode and config.emulator_url):
        raise EmulatorRefused("the upstream emulator needs dev_mode = true and emulator_url")
    app = create_emulator(config.emulator_url)
    state = app.extensions["emulator"]
    for tenant in config.tenants.values():
        for upstream in tenant.upstreams.values():
            if upstream.kind == "ftn" and upstream.keys_file:
                keys = load_or_create_provider_keys(upstream.keys_file)
                state.register_client("ftn", upstream.client_id, jwks=keys.public_jwks())
            elif upstream.client_secret:
                state.register_client(upstream.kind, upstream.client_id,
                                      secret=upstream.client_secret)
    port = urlsplit(config.emulator_url).port or DEFAULT_PORT
    return "emulator", app, port, config.emulator_url.rstrip("/") + "/"
