"""Secrets the broker must read back: sealed with AES-GCM under a data key from the config.

Most secrets are stored as digests (DESIGN.md), but a few must be read again: a TOTP secret to
check the next code, a signing key to sign the next token, a message body until it is delivered,
a national id for the few seconds of a first login. Those are *sealed*:

    v1:<kid>:<base64url(nonce || ciphertext || tag)>

AES-256-GCM with a random 96-bit nonce; the ``purpose`` (``"outbox.body_text"``,
``"users.totp_secret"``) is the associated data, so a value sealed for one place does not open in
another. ``kid`` names the data key, so keys rotate: the config's ``data_keys`` lists secrets
newest first; the first seals, all open. Without ``data_keys`` one key is derived from
``hmac_key``. Every secret goes through HKDF-SHA-256 (info ``"data-key"``), so listing the old
``hmac_key`` value last in ``data_keys`` keeps what it sealed readable.

``parse_config`` installs the config's keys for the process (``install``): the column types
below (``SealedText``, ``SealedJSON``) seal on write and open on read, and a column type has no
other way to reach the config. Every key ever installed in the process opens; the newest
installed seals.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import Text, TypeDecorator

VERSION = "v1"
NONCE_BYTES = 12
MIN_SECRET_LENGTH = 32


class SealError(ValueError):
    """A sealed value cannot be opened: unknown key, other purpose, or tampered with."""


@dataclass(frozen=True)
class DataKey:
    kid: str
    aead: AESGCM


@lru_cache(maxsize=64)
def data_key(secret: str) -> DataKey:
    """The AES key for one configured secret (cached: HKDF and AESGCM set-up run once)."""
    if len(secret) < MIN_SECRET_LENGTH:
        raise ValueError(f"a data key needs at least {MIN_SECRET_LENGTH} characters")
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"data-key").derive(
        secret.encode()
    )
    kid = hashlib.sha256(b"kid\x00" + key).hexdigest()[:8]
    return DataKey(kid=kid, aead=AESGCM(key))


def _seal_with(key: DataKey, plaintext: str, purpose: str) -> str:
    nonce = os.urandom(NONCE_BYTES)
    sealed = key.aead.encrypt(nonce, plaintext.encode(), purpose.encode())
    body = base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")
    return f"{VERSION}:{key.kid}:{body}"


def _open_with(keys: dict[str, DataKey], token: str, purpose: str) -> str:
    version, _, rest = token.partition(":")
    kid, _, body = rest.partition(":")
    if version != VERSION or not body:
        raise SealError("not a sealed value")
    key = keys.get(kid)
    if key is None:
        raise SealError(f"sealed with key {kid!r}, which is not configured (data_keys)")
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        return key.aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], purpose.encode()).decode()
    except (InvalidTag, binascii.Error, ValueError):
        raise SealError("the sealed value does not open (other purpose, or altered)") from None


class DataKeys:
    """A config's data keys: the first seals, every one opens."""

    def __init__(self, secrets: Sequence[str]) -> None:
        if not secrets:
            raise ValueError("at least one data key is needed")
        self.keys = [data_key(secret) for secret in secrets]
        self._by_kid = {key.kid: key for key in reversed(self.keys)}

    @property
    def sealing(self) -> DataKey:
        return self.keys[0]

    def seal(self, plaintext: str, *, purpose: str) -> str:
        return _seal_with(self.sealing, plaintext, purpose)

    def open(self, token: str, *, purpose: str) -> str:
        return _open_with(self._by_kid, token, purpose)


_lock = threading.Lock()
_installed: DataKeys | None = None
_known: dict[str, DataKey] = {}


def install(keys: DataKeys) -> None:
    """Make ``keys`` the process's data keys (``parse_config`` calls this)."""
    global _installed
    with _lock:
        _installed = keys
        for key in keys.keys:
            _known.setdefault(key.kid, key)


def installed() -> DataKeys:
    if _installed is None:
        raise RuntimeError("no data keys installed: load the broker config first")
    return _installed


def seal(plaintext: str, *, purpose: str) -> str:
    """``plaintext`` sealed under the newest data key, bound to ``purpose``."""
    return installed().seal(plaintext, purpose=purpose)


def open_sealed(token: str, *, purpose: str) -> str:
    """The plaintext of ``token``; raises ``SealError`` unless it was sealed for ``purpose``."""
    return _open_with(_known, token, purpose)


class SealedText(TypeDecorator[str]):
    """A text column stored sealed: the database holds ``v1:<kid>:...``, Python sees text."""

    impl = Text
    cache_ok = True

    def __init__(self, purpose: str = "", *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.purpose = purpose

    def process_bind_param(self, value: str | None, dialect: Any) -> str | None:
        return None if value is None else seal(value, purpose=self.purpose)

    def process_result_value(self, value: str | None, dialect: Any) -> str | None:
        return None if value is None else open_sealed(value, purpose=self.purpose)

    def copy(self, **kwargs: Any) -> SealedText:
        return SealedText(self.purpose)


class SealedJSON(TypeDecorator[dict[str, Any]]):
    """A JSON object stored sealed (a private signing key)."""

    impl = Text
    cache_ok = True

    def __init__(self, purpose: str = "", *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.purpose = purpose

    def process_bind_param(self, value: dict[str, Any] | None, dialect: Any) -> str | None:
        if value is None:
            return None
        return seal(json.dumps(value, separators=(",", ":")), purpose=self.purpose)

    def process_result_value(self, value: str | None, dialect: Any) -> dict[str, Any] | None:
        return None if value is None else json.loads(open_sealed(value, purpose=self.purpose))

    def copy(self, **kwargs: Any) -> SealedJSON:
        return SealedJSON(self.purpose)
