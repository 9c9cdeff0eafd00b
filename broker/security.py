"""Digests and random secrets, chosen by who made the secret (see DESIGN.md).

- Random secrets the broker makes (tokens, codes for links, client secrets): SHA-256.
- Short guessable secrets (PINs, 6-digit codes, bill codes, national ids): keyed HMAC-SHA-256.
- Passwords: argon2id, in ``broker.passwords``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets


def new_token(nbytes: int = 32) -> str:
    """An unguessable URL-safe token (256 bits by default)."""
    return secrets.token_urlsafe(nbytes)


def new_numeric_code(digits: int = 6) -> str:
    return f"{secrets.randbelow(10**digits):0{digits}d}"


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def keyed_hmac(key: str, value: str, *, purpose: str) -> str:
    """HMAC-SHA-256 of ``value``; ``purpose`` separates domains (a PIN never matches a code)."""
    message = f"{purpose}\x00{value}".encode()
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def digests_match(a: str | None, b: str | None) -> bool:
    """Constant-time comparison; None never matches."""
    if a is None or b is None:
        return False
    return hmac.compare_digest(a.encode(), b.encode())
