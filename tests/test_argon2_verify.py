"""broker.argon2_verify: the verify that keeps the GIL, as a pinned worker uses it.

It must answer exactly as argon2-cffi does (a wrong answer here is a wrong login), keep the GIL
where argon2-cffi releases it, and be chosen only where the process has one CPU."""

from __future__ import annotations

import sys
import threading
import time

import pytest
from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

from broker import passwords
from broker.argon2_verify import holding_verifier

from .test_passwords import cheap_tenant

CHEAP = {"time_cost": 1, "memory_cost": 8 * 1024, "parallelism": 1}


def argon2_cffi_says(stored: str, password: str) -> bool:
    try:
        return PasswordHasher().verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


@pytest.fixture(scope="module")
def verify():  # type: ignore[no-untyped-def]
    verifier = holding_verifier()
    assert verifier is not None, "libargon2 of argon2-cffi-bindings not found"
    return verifier


@pytest.mark.parametrize("kind", [Type.ID, Type.I, Type.D])
@pytest.mark.parametrize("password", ["Correct-Horse-42", "", "æøå Ünïcødé ✓", "nul\x00inside"])
def test_it_answers_as_argon2_cffi_for_every_argon2_type(verify, kind, password):
    stored = PasswordHasher(**CHEAP, type=kind).hash(password)
    assert verify(stored, password) is True
    assert argon2_cffi_says(stored, password) is True
    for wrong in (password + "x", password[:-1], password.upper() + "!", "nul"):
        if wrong != password:
            assert verify(stored, wrong) is argon2_cffi_says(stored, wrong) is False


def test_parameters_come_from_the_stored_hash(verify):
    """A hash made with older parameters still verifies (the login then rehashes it)."""
    stored = PasswordHasher(time_cost=2, memory_cost=4 * 1024, parallelism=2).hash("pw-1234")
    assert verify(stored, "pw-1234")
    assert not verify(stored, "pw-1235")


@pytest.mark.parametrize("stored", [
    "not an argon2 hash",
    "",
    "$argon2id$",
    "$argon2id$v=19$m=8192,t=1,p=1$c2FsdHNhbHQ",  # no digest
    "$argon2id$v=19$m=8192,t=1,p=1$c2FsdHNhbHQ$!!!!",
    "$scrypt$ln=16,r=8,p=1$c2FsdA$aGFzaA",
    "$argon2id$v=19$m=8192,t=1,p=1$c2Fsd\x00HNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
    "$argon2id$v=19$m=8192,t=1,p=1$sälz$aGFzaGhhc2hoYXNoaGFzaA",
])
def test_anything_but_an_argon2_hash_never_matches(verify, stored):
    assert verify(stored, "Correct-Horse-42") is False
    assert argon2_cffi_says(stored.encode("ascii", "replace").decode(), "Correct-Horse-42") is False


def test_a_tampered_digest_or_parameter_fails(verify):
    stored = PasswordHasher(**CHEAP).hash("Correct-Horse-42")
    head, digest = stored.rsplit("$", 1)
    flipped = head + "$" + ("A" if digest[0] != "A" else "B") + digest[1:]
    assert not verify(flipped, "Correct-Horse-42")
    assert not verify(stored.replace("t=1", "t=2"), "Correct-Horse-42")


def progress_of_another_thread_during(call) -> int:  # type: ignore[no-untyped-def]
    """How far a busy Python thread counts while ``call`` runs on this one."""
    counter = [0]
    running = threading.Event()
    running.set()
    started = threading.Event()

    def count() -> None:
        started.set()
        while running.is_set():
            counter[0] += 1

    other = threading.Thread(target=count)
    previous = sys.getswitchinterval()
    sys.setswitchinterval(0.001)
    try:
        other.start()
        started.wait()
        time.sleep(0.01)
        before = counter[0]
        call()
        after = counter[0]
    finally:
        running.clear()
        other.join()
        sys.setswitchinterval(previous)
    return after - before


def test_it_keeps_the_gil_for_the_whole_verify_where_argon2_cffi_releases_it(verify):
    """The point of the module: no other Python thread runs while the verify does."""
    hasher = PasswordHasher(time_cost=3, memory_cost=64 * 1024, parallelism=1)
    stored = hasher.hash("Correct-Horse-42")
    kept = progress_of_another_thread_during(lambda: verify(stored, "Correct-Horse-42"))
    released = progress_of_another_thread_during(lambda: hasher.verify(stored, "Correct-Horse-42"))
    # Released, the other thread counts through the whole verify (tens of ms); kept, at most
    # for about a switch interval (1 ms) around it.
    assert released > 5 * max(kept, 1)


def test_a_process_on_one_cpu_verifies_keeping_the_gil_and_on_more_with_argon2_cffi(monkeypatch):
    tenant = cheap_tenant()
    stored = passwords.hash_password(tenant, "Correct-Horse-42")
    calls: list[str] = []
    real = holding_verifier()
    assert real is not None

    def spy(encoded: str, password: str) -> bool:
        calls.append(threading.current_thread().name)
        return real(encoded, password)

    monkeypatch.setattr(passwords, "holding_verifier", lambda: spy)
    for cpus, expected in ((1, True), (2, False)):
        calls.clear()
        monkeypatch.setattr(passwords, "_pool", None)
        monkeypatch.setattr(passwords, "hashing_threads", lambda cpus=cpus: cpus)
        assert passwords.verify_password(tenant, stored, "Correct-Horse-42")
        assert not passwords.verify_password(tenant, stored, "Correct-Horse-43")
        assert not passwords.verify_password(tenant, None, "Correct-Horse-42")
        assert bool(calls) is expected
        assert all(name.startswith("argon2") for name in calls)  # still on the hashing thread
