"""For ``bench/login_floor.py`` only: argon2's verify and hash become near-free, so that a
login's CPU is the rest of the request. Put on PYTHONPATH of a broker under measurement; never
of a broker that serves anyone. A wrong password still fails, so the login path is unchanged."""

from __future__ import annotations

import ctypes
import hashlib
import os
import time

from argon2 import PasswordHasher
from argon2.exceptions import VerifyMismatchError

_PREFIX = "$floor$"


def floor_hash(password: str | bytes) -> str:
    """What this stand-in stores for ``password`` (the benchmark seeds its users with it)."""
    raw = password.encode() if isinstance(password, str) else password
    return _PREFIX + hashlib.sha256(raw).hexdigest()


def _hash(self: PasswordHasher, password: str | bytes, *, salt: bytes | None = None) -> str:
    return floor_hash(password)


# ``login_floor.py --hold-ms``: each verify also waits this long, without using the CPU, so
# that a login is in flight as long as with argon2 and its parts run between pauses.
_HOLD_SECONDS = float(os.environ.get("BENCH_FLOOR_HOLD_MS", "0")) / 1000


def _verify(self: PasswordHasher, stored: str | bytes, password: str | bytes) -> bool:
    if _HOLD_SECONDS:
        time.sleep(_HOLD_SECONDS)
    stored = stored.decode() if isinstance(stored, bytes) else stored
    if not _matches(stored, password):
        raise VerifyMismatchError("floor: mismatch")
    return True


def _matches(stored: str, password: str | bytes) -> bool:
    return stored.startswith(_PREFIX) and stored == floor_hash(password)


def _verify_keeping_the_gil(stored: str, password: str) -> bool:
    """The stand-in for ``broker.argon2_verify``'s verifier (a worker on one CPU): the pause
    keeps the GIL, as argon2 there does."""
    if _HOLD_SECONDS:
        _LIBC.usleep(int(_HOLD_SECONDS * 1_000_000))
    return _matches(stored, password)


_LIBC = ctypes.PyDLL(None)  # PyDLL: the call keeps the GIL

PasswordHasher.hash = _hash  # type: ignore[method-assign]
PasswordHasher.verify = _verify  # type: ignore[method-assign]
PasswordHasher.check_needs_rehash = lambda self, stored: False  # type: ignore[method-assign]

try:
    import broker.argon2_verify as _argon2_verify
except ImportError:  # a checkout from before broker.argon2_verify
    pass
else:
    _argon2_verify.holding_verifier = lambda: _verify_keeping_the_gil  # type: ignore[assignment]
