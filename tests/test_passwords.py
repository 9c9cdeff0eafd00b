"""broker.passwords: argon2id per tenant, run on a pool of one thread per CPU of the process."""

from __future__ import annotations

import logging
import os
import select
import signal
import threading

import pytest
from argon2 import PasswordHasher

from broker import argon2_verify, passwords
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


def beyond_limits_hash(tenant: TenantConfig, password: str) -> str:
    """A genuine argon2id hash of ``password`` with one pass more than the tenant's headroom
    allows: cheap to make here, and what a row edited to cost minutes would look like."""
    return PasswordHasher(time_cost=passwords.STORED_HASH_HEADROOM * tenant.argon2_time_cost + 1,
                          memory_cost=tenant.argon2_memory_kib, parallelism=1).hash(password)


@pytest.mark.parametrize("keep_gil", [False, True], ids=["argon2-cffi", "pinned worker"])
def test_a_stored_hash_beyond_the_tenants_limits_is_never_verified(
    monkeypatch, caplog, keep_gil
):
    tenant = cheap_tenant()
    stored = beyond_limits_hash(tenant, "Correct-Horse-42")
    verified: list[str] = []
    real_verify = PasswordHasher.verify

    def spy(self, hash_, password):  # type: ignore[no-untyped-def]
        verified.append(hash_)
        return real_verify(self, hash_, password)

    holding = argon2_verify.holding_verifier()
    assert holding is not None

    def spy_holding(hash_: str, password: str) -> bool:
        verified.append(hash_)
        return holding(hash_, password)

    monkeypatch.setattr(PasswordHasher, "verify", spy)
    monkeypatch.setattr(passwords, "holding_verifier", lambda: spy_holding)
    monkeypatch.setattr(passwords, "_pool", None)
    monkeypatch.setattr(passwords, "_keep_gil", keep_gil)
    monkeypatch.setattr(passwords, "hashing_threads", lambda: 1)

    with caplog.at_level(logging.WARNING, logger="broker.passwords"):
        assert not passwords.verify_password(tenant, stored, "Correct-Horse-42")
    # the dummy was verified instead, so the refusal takes the usual time; the hash never was
    assert verified == [passwords.dummy_hash(tenant)]
    assert f"tenant {tenant.slug} exceeds" in caplog.text
    assert "Correct-Horse-42" not in caplog.text and stored.rsplit("$", 2)[1] not in caplog.text


def test_a_hash_from_before_the_tenant_lowered_its_parameters_still_verifies():
    tenant = cheap_tenant()
    headroom = passwords.STORED_HASH_HEADROOM
    older = PasswordHasher(
        time_cost=headroom * tenant.argon2_time_cost, memory_cost=2 * tenant.argon2_memory_kib,
        parallelism=headroom * tenant.argon2_parallelism,
    ).hash("Correct-Horse-42")
    assert passwords.within_verify_limits(tenant, older)
    assert passwords.verify_password(tenant, older, "Correct-Horse-42")
    assert passwords.needs_rehash(tenant, older)  # and the login then rehashes it


@pytest.mark.parametrize("cost", ["m=99999999,t=1,p=1", "m=8192,t=1000,p=1", "m=8192,t=1,p=64"])
def test_each_parameter_has_its_limit(cost):
    tenant = cheap_tenant()
    assert not passwords.within_verify_limits(tenant, f"$argon2id$v=19${cost}$c2FsdHNhbHQ$aGFzaA")


def test_an_empty_stored_hash_never_matches_not_even_the_dummys_password():
    tenant = cheap_tenant()
    assert not passwords.verify_password(tenant, "", "no such user: equal-time verify")
    assert not passwords.verify_password(tenant, None, "no such user: equal-time verify")
