"""The demo: five tenants mirroring the seed utilities (invented names), on SQLite.

Secrets are generated on first run and kept in the demo's data folder, so restarts keep users.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

from .config import BrokerConfig, parse_config

BROKER_PORT = 5000
PORTAL_PORT = 5001
EMULATOR_PORT = 5002
OUTBOX_PORT = 5003


def _secrets(data_dir: Path) -> dict[str, str]:
    path = data_dir / "secrets.json"
    if path.exists():
        return json.loads(path.read_text())
    values = {name: secrets.token_urlsafe(32) for name in ("secret_key", "hmac_key", "portal")}
    path.write_text(json.dumps(values))
    path.chmod(0o600)
    return values


def _portal_client(slug: str, secret: str, portal_url: str) -> dict[str, Any]:
    return {
        "client_id": "demo-portal",
        "name": "Demo self-service portal",
        "client_secret": secret,
        "redirect_uris": [f"{portal_url}/{slug}/callback"],
        "post_logout_redirect_uris": [f"{portal_url}/{slug}/"],
        "backchannel_logout_uri": f"{portal_url}/{slug}/backchannel-logout",
    }


def _upstream(kind: str, emulator_url: str, **extra: Any) -> dict[str, Any]:
    return {
        "kind": kind,
        "client_id": f"broker-{kind}",
        "client_secret": f"emulator-secret-for-{kind}-0123456789abcdef",
        "server_metadata_url": f"{emulator_url}/{kind}/.well-known/openid-configuration",
        **extra,
    }


def demo_tenants(
    portal_secret: str, portal_url: str, emulator_url: str, keys_dir: Path | None = None
) -> dict[str, Any]:
    """The five seed utilities as tenants. ``keys_dir`` keeps our FTN signing/encryption keys."""
    ftn_keys = {"keys_file": str(keys_dir / "ftn-keys.json")} if keys_dir else {}
    tenants: dict[str, Any] = {
        # Seed 000: Danish water and waste utility. MitID or email + password, bill code binding.
        "aaro-vand": {
            "name": "Aarø Vand & Affald",
            "country": "DK",
            "default_locale": "da",
            "locales": ["da", "en"],
            "support_phone": "+45 73 52 05 20",
            "support_hours": "man, tirs og tors 9-15, fre 9-12",
            "primary_color": "#00607a",
            "login_methods": ["password", "mitid"],
            "activation": "link",
            "password_policy": {"preset": "dk-water"},
            "binding": {"proofs": ["bill_code"]},
            "upstreams": {"mitid": _upstream("mitid", emulator_url, dialect="signaturgruppen")},
        },
        # Seed 001: Norwegian district heating. Customer number + PIN at signup, forgot PIN.
        "fjordvarme": {
            "name": "Fjordvarme AS",
            "country": "NO",
            "default_locale": "nb",
            "locales": ["nb", "en"],
            "support_phone": "+47 63 82 33 50",
            "support_email": "fjernvarme@fjordvarme.example",
            "primary_color": "#b5462c",
            "login_methods": ["password"],
            "activation": "code",
            "password_policy": {"preset": "no-district-heating"},
            "binding": {"proofs": ["pin"], "ask_at_signup": True},
        },
        # Seed 002: Finnish energy company (Swedish text). FTN bank ID first, then password.
        "stadsenergi": {
            "name": "Stadsenergi Oy",
            "country": "FI",
            "default_locale": "sv",
            "locales": ["sv", "fi", "en"],
            "support_phone": "+358 9 617 8080",
            "primary_color": "#3b2a82",
            "login_methods": ["password", "ftn"],
            "activation": "code",
            "password_policy": {"preset": "fi-energy"},
            "binding": {"proofs": ["pin"], "national_id_match": True},
            "upstreams": {"ftn": _upstream("ftn", emulator_url, dialect="op",
                                           allow_national_id=True, **ftn_keys)},
        },
        # Seed 003: Spanish water utility. Registration types, activation link, then password.
        "aguas-del-valle": {
            "name": "Aguas del Valle",
            "country": "ES",
            "default_locale": "es",
            "locales": ["es", "en"],
            "support_phone": "+34 900 000 000",
            "primary_color": "#0a6ebd",
            "login_methods": ["password"],
            "registration_types": ["private", "company", "administrator"],
            "activation": "link",
            "password_after_activation": True,
            "password_policy": {"preset": "es-water"},
            "binding": {"proofs": ["bill_code"]},
            "privacy_policy_url": "https://aguas-del-valle.example/privacy",
        },
        # Seed 004: Swedish grid and heating. Microsoft, Google, Facebook; invoice number binding.
        "norrnat": {
            "name": "Norrnät Elhandel",
            "country": "SE",
            "default_locale": "sv",
            "locales": ["sv", "en"],
            "support_phone": "0271-274 50",
            "primary_color": "#1f7a3a",
            "login_methods": ["microsoft", "google", "facebook"],
            "password_policy": {"preset": "nist"},
            "binding": {"proofs": ["invoice"]},
            "upstreams": {
                "microsoft": _upstream("microsoft", emulator_url),
                "google": _upstream("google", emulator_url),
                "facebook": _upstream("facebook", emulator_url),
            },
        },
    }
    for slug, tenant in tenants.items():
        tenant["clients"] = [_portal_client(slug, portal_secret, portal_url)]
    return tenants


def demo_config(data_dir: Path, host: str = "127.0.0.1") -> BrokerConfig:
    data_dir.mkdir(parents=True, exist_ok=True)
    values = _secrets(data_dir)
    portal_url = f"http://{host}:{PORTAL_PORT}"
    emulator_url = f"http://{host}:{EMULATOR_PORT}"
    return parse_config(
        {
            "public_url": f"http://{host}:{BROKER_PORT}",
            "database_url": f"sqlite:///{(data_dir / 'broker.db').resolve()}",
            "secret_key": values["secret_key"],
            "hmac_key": values["hmac_key"],
            "dev_mode": True,
            "emulator_url": emulator_url,
            "messaging": {
                "run_worker_in_process": True,
                "smtp": {"port": 2525},
                "sms": {
                    "kind": "webhook",
                    "url": f"http://{host}:{OUTBOX_PORT}/sms",
                    "token": "dev-outbox",
                },
                "default_sender": "no-reply@demo-broker.test",
            },
            "tenants": demo_tenants(values["portal"], portal_url, emulator_url, data_dir),
        },
        "demo config",
    )


# Customer records the demo loads into each utility's register (as an export from its customer
# system would), so a newcomer can bind an account. Shown on the landing page; demo only.
DEMO_CUSTOMERS: dict[str, list[dict[str, Any]]] = {
    "aaro-vand": [
        {"customer_number": "4500123", "name": "Mette Holm", "address": "Strandvej 3, Aarø",
         "email": "mette@example.dk", "bill_code": "K7Q-2291", "national_id": "0101801234"},
        {"customer_number": "4500456", "name": "Jens Bak", "address": "Havnegade 12, Aarø",
         "bill_code": "P3M-8810"},
    ],
    "fjordvarme": [
        {"customer_number": "700101", "name": "Kari Nordmann", "address": "Fjordveien 1",
         "email": "kari@example.no", "phone": "+4791234567", "pin": "4711"},
        {"customer_number": "700102", "name": "Ola Hansen", "address": "Bryggen 5",
         "phone": "+4799887766", "pin": "9090"},
    ],
    "stadsenergi": [
        {"customer_number": "88001", "name": "Matti Virtanen", "address": "Esplanaden 2",
         "email": "matti@example.fi", "national_id": "010180-9026", "pin": "5522"},
    ],
    "aguas-del-valle": [
        {"customer_number": "ES-20931", "name": "Lucía García", "address": "Calle Mayor 7",
         "bill_code": "AV-7731"},
        {"customer_number": "ES-88410", "kind": "company", "name": "Panadería Sol SL",
         "address": "Plaza del Sol 1", "bill_code": "AV-1044"},
    ],
    "norrnat": [
        {"customer_number": "310055", "name": "Erik Lindqvist", "address": "Älvgatan 4",
         "invoice_numbers": ["F-2026-10023", "F-2026-11876"]},
    ],
}


def load_demo_customers(config: BrokerConfig) -> None:
    """Upsert the demo customer records (idempotent: a restart changes nothing)."""
    import io

    from .customers.importer import import_stream
    from .db import make_engine

    engine = make_engine(config.database_url)
    try:
        for slug, rows in DEMO_CUSTOMERS.items():
            lines = "\n".join(json.dumps(row) for row in rows) + "\n"
            import_stream(engine, config.tenants[slug], config.hmac_key, io.StringIO(lines),
                          "jsonl")
    finally:
        engine.dispose()
