"""An argon2 verify that keeps the interpreter lock (the GIL) for as long as it runs.

argon2-cffi releases the GIL for the length of a verify, so that the process's other threads
can run meanwhile. In a process confined to one CPU they cannot run meanwhile, only instead:
each thread that a network answer wakes preempts the verify, runs its slice of another request
in caches that argon2's 19 MiB have just swept, and hands the CPU back. A password login's
other work then costs about twice what it costs when run back to back (BENCHMARKS.md,
2026-12-06, "a verify that keeps the GIL"). With the GIL kept, those slices wait for the
verify's end and then run one after another, and the verify runs in one piece.

The call goes to the libargon2 that argon2-cffi itself calls (built into argon2-cffi-bindings),
through ``ctypes.PyDLL``, which, unlike cffi, keeps the GIL during the call. Where that library
or its ``argon2_verify`` cannot be found, ``holding_verifier`` gives None and callers keep to
argon2-cffi.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from functools import cache

ARGON2_OK = 0
# The argon2_type values of argon2.h, by the prefix of the encoded hash.
_TYPES = ((b"$argon2id$", 2), (b"$argon2i$", 1), (b"$argon2d$", 0))

Verifier = Callable[[str, str], bool]


@cache
def holding_verifier() -> Verifier | None:
    """``verify(encoded_hash, password) -> bool`` that keeps the GIL, or None."""
    try:
        from _argon2_cffi_bindings import _ffi

        library = ctypes.PyDLL(_ffi.__file__)
        argon2_verify = library.argon2_verify
    except (ImportError, OSError, AttributeError):  # pragma: no cover - another build
        return None
    argon2_verify.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int]
    argon2_verify.restype = ctypes.c_int

    def verify(encoded_hash: str, password: str) -> bool:
        """True when ``password`` matches; False for a mismatch and for anything that is not
        an argon2 hash (argon2-cffi raises VerificationError or InvalidHashError for these)."""
        try:
            encoded = encoded_hash.encode("ascii")
        except UnicodeEncodeError:
            return False
        if b"\x00" in encoded:
            return False
        kind = next((kind for prefix, kind in _TYPES if encoded.startswith(prefix)), None)
        if kind is None:
            return False
        secret = password.encode("utf-8")
        return bool(argon2_verify(encoded, secret, len(secret), kind) == ARGON2_OK)

    return verify
