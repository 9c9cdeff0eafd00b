"""What ``broker serve`` (the production entry point) refuses to serve with, and what it
warns about.

A config copied from ``config.example.toml`` or the demo can start a broker that works and is
unsafe: keys everyone who read the example knows (anyone could forge cookies and compute the
PINs' HMACs), the emulator's dev mode. Those are refused. Others have honest uses behind a
proxy or on a test bench (CSRF off for a load generator, http on loopback), so they are said
out loud instead.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from .config import BrokerConfig

EXAMPLE_KEY_MARK = "CHANGE-ME"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def refusals(config: BrokerConfig) -> list[str]:
    """Settings ``broker serve`` will not start with."""
    found = []
    keys = {"secret_key": [config.secret_key], "hmac_key": [config.hmac_key],
            "data_keys": list(config.data_keys)}
    for name, values in keys.items():
        if any(EXAMPLE_KEY_MARK in value for value in values):
            found.append(f"{name} is the example's ({EXAMPLE_KEY_MARK}...): make a random one, "
                         "e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(48))'")
    if config.dev_mode:
        found.append("dev_mode = true is for the demo (python3 dev.py demo), never for serving")
    return found


def warnings(config: BrokerConfig) -> list[str]:
    """Settings ``broker serve`` starts with, saying what they cost."""
    found = []
    if not config.csrf_protection:
        found.append("csrf_protection = false: any site can post the broker's forms for a "
                     "visitor (only for a load generator on a test bench)")
    address = urlsplit(config.public_url)
    if address.scheme != "https" and address.hostname not in LOOPBACK_HOSTS:
        found.append(f"public_url {config.public_url} is not https: session cookies go "
                     "without the Secure flag")
    if config.messaging.sms.kind == "dev":
        found.append("messaging.sms.kind = 'dev': SMS (forgotten PINs) are recorded, never "
                     "sent; configure the gateway's webhook")
    return found
