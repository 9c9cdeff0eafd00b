"""The broker's own keys towards upstreams that want more than a client secret (FTN).

FTN brokers require ``private_key_jwt`` and signed request objects (a signing key) and encrypt
ID tokens to us (an encryption key): two separate RSA keys of at least 2048 bits, whose public
halves we hand to the upstream as a static JWK set.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from joserfc.jwk import RSAKey

MIN_RSA_BITS = 2048
SIGNING_ALG = "RS256"
ENCRYPTION_ALG = "RSA-OAEP"


@dataclass(frozen=True)
class ProviderKeys:
    signing_key: RSAKey
    encryption_key: RSAKey

    @property
    def signing_kid(self) -> str:
        return str(self.signing_key.kid)

    def public_jwks(self) -> dict[str, Any]:
        return {
            "keys": [
                self.signing_key.as_dict(private=False),
                self.encryption_key.as_dict(private=False),
            ]
        }

    def private_jwks(self) -> dict[str, Any]:
        return {
            "keys": [
                self.signing_key.as_dict(private=True),
                self.encryption_key.as_dict(private=True),
            ]
        }


def _new_key(use: str, alg: str, bits: int) -> RSAKey:
    key = RSAKey.generate_key(bits, parameters={"use": use, "alg": alg}, auto_kid=True)
    return key


def generate_provider_keys(bits: int = MIN_RSA_BITS) -> ProviderKeys:
    if bits < MIN_RSA_BITS:
        raise ValueError(f"RSA keys must have at least {MIN_RSA_BITS} bits")
    return ProviderKeys(_new_key("sig", SIGNING_ALG, bits), _new_key("enc", ENCRYPTION_ALG, bits))


def provider_keys_from_jwks(jwks: dict[str, Any]) -> ProviderKeys:
    """Reads a private JWK set holding one ``sig`` and one ``enc`` RSA key."""
    by_use: dict[str, RSAKey] = {}
    for data in jwks.get("keys", []):
        key = RSAKey.import_key(data)
        if not key.is_private:
            raise ValueError("provider keys must include the private part")
        if key.raw_value.key_size < MIN_RSA_BITS:
            raise ValueError(f"RSA key {key.kid} is shorter than {MIN_RSA_BITS} bits")
        by_use[str(data.get("use"))] = key
    if set(by_use) != {"sig", "enc"}:
        raise ValueError("provider keys need exactly one 'sig' and one 'enc' key")
    return ProviderKeys(by_use["sig"], by_use["enc"])


def load_or_create_provider_keys(path: str | Path) -> ProviderKeys:
    """Keys kept in a private file, created on first use so restarts keep the registration."""
    path = Path(path)
    if path.exists():
        return provider_keys_from_jwks(json.loads(path.read_text(encoding="utf-8")))
    keys = generate_provider_keys()
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        json.dump(keys.private_jwks(), handle)
    return keys


def ftn_public_jwks(keys: ProviderKeys) -> dict[str, Any]:
    """The public JWK set to register with an FTN broker (signing and encryption keys)."""
    return keys.public_jwks()
