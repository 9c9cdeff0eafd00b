"""broker.passwords: argon2id per tenant, run on a pool of one thread per CPU of the process."""

from __future__ import annotations

import os
import select
import signal
import threading

from broker import passwords
from broker.config import TenantConfig

from .conftest import make_config


def cheap_tenant() -> TenantConfig:
    tenant = next(iter(make_config("sqlite://").tenants.values()))
    return tenant.model_copy(update={"argon2_time_cost": 1, "argon2_memory_kib": 8 * 1024})


def test_hash_and_verify_agree_and_a_missing_hash_never_matches():
    tenant = cheap_tenant()
    stored = passwords.hash_password(tenant, "Correct-Horse-42")
    assert passwords.verify_password(tenant, stored, "Correct-Horse-42")
    assert not passwords.verify_password(tenant, stored, "correct-horse-42")
    assert not passwords.verify_password(tenant, None, "Correct-Horse-42")
    assert not passwords.verify_password(tenant, "not an argon2 hash", "Correct-Horse-42")


def test_argon2_runs_only_on_the_hashing_threads_however_many_callers(monkeypatch):
    """Eight request threads verifying at once use at most one hashing thread per CPU, so at
    most that many argon2 buffers are ever held (BENCHMARKS.md, memory)."""
    tenant = cheap_tenant()
    stored = passwords.hash_password(tenant, "Correct-Horse-42")
    hasher = passwords.hasher_for(tenant)
    # argon2-cffi's verify, also on a one-CPU machine (tests/test_argon2_verify.py: the other)
    monkeypatch.setattr(passwords, "_pool", None)
    monkeypatch.setattr(passwords, "holding_verifier", lambda: None)
    seen: set[str] = set()
    original = type(hasher).verify

    def spy(self, hash_, password):  # type: ignore[no-untyped-def]
        seen.add(threading.current_thread().name)
        return original(self, hash_, password)

    monkeypatch.setattr(type(hasher), "verify", spy)
    results: list[bool] = []
    callers = [threading.Thread(target=lambda: results.append(
        passwords.verify_password(tenant, stored, "Correct-Horse-42"))) for _ in range(8)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    assert results == [True] * 8
    assert seen and all(name.startswith("argon2") for name in seen)
    assert len(seen) <= passwords.hashing_threads() == len(os.sched_getaffinity(0))


def test_a_forked_child_gets_its_own_hashing_threads():
    """gunicorn forks workers: the child inherits the pool object but none of its threads."""
    tenant = cheap_tenant()
    stored = passwords.hash_password(tenant, "Correct-Horse-42")  # the parent's pool exists
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        try:
            ok = passwords.verify_password(tenant, stored, "Correct-Horse-42")
            os.write(write, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(write)
    ready, _, _ = select.select([read], [], [], 30)
    answer = os.read(read, 1) if ready else b"timeout: the child's verify never ran"
    if not ready:
        os.kill(child, signal.SIGKILL)
    os.waitpid(child, 0)
    assert answer == b"1"
