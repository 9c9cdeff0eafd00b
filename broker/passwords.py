"""argon2id password hashing with each tenant's parameters.

Hashers are built once per parameter set and kept; a hash made with older parameters is
reported as needing a rehash, which the login flow does right after a successful verify.

Every hash and verify runs on a small pool of threads, one per CPU this process may use. More
would not be faster (argon2 is CPU-bound; extra threads only share the same cores), and each
thread that has run argon2 keeps its 19 MiB buffer in its own malloc arena: hashing on all of a
gunicorn worker's request threads held one buffer per thread (BENCHMARKS.md, memory). On the
pool the buffers stay few and are reused warm, and a burst of logins queues for the cores
instead of allocating a buffer per waiting request.

A worker of ``broker serve --pin-workers`` (one CPU each) verifies users' passwords with the
interpreter lock kept (``broker.argon2_verify``): there, the other threads cannot run beside
argon2 anyway, and letting them cut in on it cost a login more than the verify's own wait
costs them; the price, other requests waiting for a verify's end, is the operator's choice
(docs/DEPLOYMENT.md). Those waiting threads are left asleep until the verify ends
(``QUIET_SWITCH_INTERVAL``). Every other process verifies with argon2-cffi, which releases
the lock. Hashing (registration, rehash) and staff verifies always go through argon2-cffi:
they are rare.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import TypeVar

from argon2 import PasswordHasher, extract_parameters
from argon2.exceptions import InvalidHashError, VerificationError

from .argon2_verify import Verifier, holding_verifier
from .config import TenantConfig

T = TypeVar("T")
log = logging.getLogger(__name__)
_pool_lock = threading.Lock()
# (process id, its hashing threads, the verifier that keeps the GIL, in a pinned worker only)
_pool: tuple[int, ThreadPoolExecutor, Verifier | None] | None = None
_keep_gil = False  # set in each pinned worker: keep_gil_while_verifying


def keep_gil_while_verifying() -> None:
    """From now on, verify keeping the GIL when this process may use one CPU only.
    ``broker serve --pin-workers`` calls it in each worker (broker.worker_cpus), before the
    worker's first verify; a pool made earlier in this process is made anew, choosing again."""
    global _keep_gil, _pool
    with _pool_lock:
        _keep_gil = True
        if _pool is not None and _pool[0] == os.getpid():
            _pool[1].shutdown(wait=False)
            _pool = None


def hashing_threads() -> int:
    """The CPUs this process may run on (a pinned gunicorn worker: 1)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


def _hashing_pool() -> tuple[int, ThreadPoolExecutor, Verifier | None]:
    """This process's hashing threads, made anew after a fork: a forked child inherits the
    pool object but none of its threads."""
    global _pool
    pid = os.getpid()
    if _pool is None or _pool[0] != pid:
        with _pool_lock:
            if _pool is None or _pool[0] != pid:
                threads = hashing_threads()
                _pool = (pid, ThreadPoolExecutor(threads, "argon2"),
                         holding_verifier() if _keep_gil and threads == 1 else None)
    return _pool


def on_hashing_threads(work: Callable[[], T]) -> T:
    """Run ``work`` (an argon2 hash or verify) on this process's hashing threads."""
    return _hashing_pool()[1].submit(work).result()


@lru_cache(maxsize=64)
def _hasher(time_cost: int, memory_kib: int, parallelism: int) -> PasswordHasher:
    return PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism)


def hasher_for(tenant: TenantConfig) -> PasswordHasher:
    return _hasher(tenant.argon2_time_cost, tenant.argon2_memory_kib, tenant.argon2_parallelism)


def hash_password(tenant: TenantConfig, password: str) -> str:
    hasher = hasher_for(tenant)
    return on_hashing_threads(lambda: hasher.hash(password))


def verify_password(tenant: TenantConfig, stored_hash: str | None, password: str) -> bool:
    """True when ``password`` matches. With no stored hash (or an empty one, or one beyond
    ``within_verify_limits``) a dummy verify keeps the time equal, and the answer is False."""
    hasher = hasher_for(tenant)
    if stored_hash and within_verify_limits(tenant, stored_hash):
        verifiable, reference = True, stored_hash
    else:  # the dummy's lookup only where it is verified (a login's hot path has a hash)
        verifiable, reference = False, dummy_hash(tenant)
    _, threads, holding = _hashing_pool()

    def verify() -> bool:
        if holding is not None:  # a pinned worker: keep the GIL (module docstring)
            return _holding_quietly(holding, reference, password)
        try:
            return hasher.verify(reference, password)
        except (VerificationError, InvalidHashError, UnicodeEncodeError):
            return False  # UnicodeEncodeError: a stored "hash" that is not ASCII

    return threads.submit(verify).result() and verifiable


STORED_HASH_HEADROOM = 4
"""How far a stored hash's parameters may exceed the tenant's and still be verified.

A hash made before the tenant lowered its parameters verifies, up to this factor for each of
memory, passes and lanes. Beyond it the hash is not one the broker made for this tenant (an
edited row, a bad import): verifying it could take a worker for minutes and gigabytes, and
in a pinned worker (``keep_gil_while_verifying``) every other request with it. It is then
treated as a wrong password, after the tenant's dummy verify so that the answer takes the
usual time, and logged; a password reset replaces it."""


def within_verify_limits(tenant: TenantConfig, stored_hash: str) -> bool:
    """False for an argon2 hash that would cost more than STORED_HASH_HEADROOM times the
    tenant's parameters to verify. Anything else that is no argon2 hash passes: the verify
    refuses it at once."""
    settings = stored_hash.rsplit("$", 2)[0]  # type, version and cost, without salt and hash
    allowed = _parameters_allowed(settings, tenant.argon2_time_cost, tenant.argon2_memory_kib,
                                  tenant.argon2_parallelism)
    if not allowed:
        log.warning("a stored password hash of tenant %s exceeds %dx its argon2 parameters "
                    "(%s); not verified, answered as a wrong password", tenant.slug,
                    STORED_HASH_HEADROOM, settings)
    return allowed


@lru_cache(maxsize=256)
def _parameters_allowed(settings: str, time_cost: int, memory_kib: int, parallelism: int) -> bool:
    try:
        stored = extract_parameters(f"{settings}$$")
    except InvalidHashError:
        return True
    return (stored.time_cost <= STORED_HASH_HEADROOM * time_cost
            and stored.memory_cost <= STORED_HASH_HEADROOM * memory_kib
            and stored.parallelism <= STORED_HASH_HEADROOM * parallelism)


QUIET_SWITCH_INTERVAL = 0.05
"""The interpreter's switch interval while a verify keeps the GIL (normally 0.005 s).

A thread waiting for the GIL wakes every interval to ask for it, which during a kept verify
only costs the verify's CPU a context switch: about seven a waiting thread per verify at 5 ms,
about 1 % of the verify in all (BENCHMARKS.md). The verify's end signals the waiters as any
release does. 0.05 s is longer than a verify with the default parameters (17-48 ms on the
hosts measured), so a thread that begins to wait during one sleeps through it. It also bounds
the two costs of a long interval: a thread that began to wait meanwhile and is not signalled
asks again within 0.05 s; and when a thread that waited from before the verify takes the GIL
at its end (before the interval is restored), the verifying thread waits with this interval to
get it back: up to 0.05 s, if that thread computes without waiting for I/O."""


def _holding_quietly(holding: Verifier, reference: str, password: str) -> bool:
    """``holding``'s verify, with the threads that wait for the GIL meanwhile left asleep."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(QUIET_SWITCH_INTERVAL)
    try:
        return holding(reference, password)
    finally:
        sys.setswitchinterval(interval)


def needs_rehash(tenant: TenantConfig, stored_hash: str) -> bool:
    return hasher_for(tenant).check_needs_rehash(stored_hash)


@lru_cache(maxsize=64)
def _dummy(time_cost: int, memory_kib: int, parallelism: int) -> str:
    hasher = _hasher(time_cost, memory_kib, parallelism)
    return on_hashing_threads(lambda: hasher.hash("no such user: equal-time verify"))


def dummy_hash(tenant: TenantConfig) -> str:
    """A hash with the tenant's parameters, verified when there is no user, so that timing
    does not reveal whether an email is registered."""
    return _dummy(tenant.argon2_time_cost, tenant.argon2_memory_kib, tenant.argon2_parallelism)
