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


def test_a_hash_with_anything_after_a_nul_never_matches(verify):
    """C would read such a hash only up to the NUL, and argon2-cffi then says yes; no stored
    hash has a NUL, so this one says no."""
    stored = PasswordHasher(**CHEAP).hash("Correct-Horse-42")
    assert verify(stored, "Correct-Horse-42")
    assert not verify(stored + "\x00junk", "Correct-Horse-42")


def test_a_tampered_digest_or_parameter_fails(verify):
    stored = PasswordHasher(**CHEAP).hash("Correct-Horse-42")
    head, digest = stored.rsplit("$", 1)
    flipped = head + "$" + ("A" if digest[0] != "A" else "B") + digest[1:]
    assert not verify(flipped, "Correct-Horse-42")
    assert not verify(stored.replace("t=1", "t=2"), "Correct-Horse-42")


def another_thread_during(call) -> tuple[int, float, float]:  # type: ignore[no-untyped-def]
    """While ``call`` runs on this thread, a busy Python thread counts and notes the longest
    pause between two of its steps: (steps during the call, that pause, the CPU time of the
    call). CPU time, not wall time: waits for the GIL around the call, which a loaded machine
    stretches, are in the call's wall time but not in the pause."""
    steps = [0]
    longest = [0.0]
    running = threading.Event()
    running.set()
    started = threading.Event()

    def count() -> None:
        last = time.perf_counter()
        started.set()
        while running.is_set():
            now = time.perf_counter()
            longest[0] = max(longest[0], now - last)
            last = now
            steps[0] += 1

    other = threading.Thread(target=count)
    other.start()
    started.wait()
    time.sleep(0.01)
    before, longest[0] = steps[0], 0.0
    began = time.thread_time()
    call()
    took = time.thread_time() - began
    during = steps[0] - before
    running.clear()
    other.join()
    return during, longest[0], took


def test_it_keeps_the_gil_for_the_whole_verify_where_argon2_cffi_releases_it(verify):
    """The point of the module: no other Python thread runs while the verify does. Kept, the
    other thread's longest pause spans the whole call; released, it goes on counting."""
    hasher = PasswordHasher(time_cost=2, memory_cost=32 * 1024, parallelism=1)
    stored = hasher.hash("Correct-Horse-42")
    _, pause, took = another_thread_during(lambda: verify(stored, "Correct-Horse-42"))
    assert pause >= 0.9 * took
    steps, _, _ = another_thread_during(lambda: hasher.verify(stored, "Correct-Horse-42"))
    assert steps > 0


def test_a_pinned_worker_verifies_keeping_the_gil_and_any_other_process_with_argon2_cffi(
    monkeypatch,
):
    """Right, wrong, and unknown (the dummy hash, for equal time): each costs one verify, on
    the hashing thread, by the path the process's CPUs call for."""
    tenant = cheap_tenant()
    stored = passwords.hash_password(tenant, "Correct-Horse-42")
    holding: list[str] = []
    releasing: list[str] = []
    real = holding_verifier()
    assert real is not None
    real_argon2_cffi = PasswordHasher.verify

    def spy_holding(encoded: str, password: str) -> bool:
        holding.append(threading.current_thread().name)
        return real(encoded, password)

    def spy_releasing(self, encoded, password):  # type: ignore[no-untyped-def]
        releasing.append(threading.current_thread().name)
        return real_argon2_cffi(self, encoded, password)

    monkeypatch.setattr(passwords, "holding_verifier", lambda: spy_holding)
    monkeypatch.setattr(PasswordHasher, "verify", spy_releasing)
    # keep_gil: what broker serve --pin-workers turns on in each worker (broker.worker_cpus)
    for cpus, keep_gil in ((1, True), (2, True), (1, False)):
        holding.clear()
        releasing.clear()
        monkeypatch.setattr(passwords, "_pool", None)
        monkeypatch.setattr(passwords, "_keep_gil", keep_gil)
        monkeypatch.setattr(passwords, "hashing_threads", lambda cpus=cpus: cpus)
        assert passwords.verify_password(tenant, stored, "Correct-Horse-42")
        assert not passwords.verify_password(tenant, stored, "Correct-Horse-43")
        # no account: the dummy hash is verified, and even its own password does not match
        assert not passwords.verify_password(tenant, None, "no such user: equal-time verify")
        used, unused = (holding, releasing) if cpus == 1 and keep_gil else (releasing, holding)
        assert len(used) == 3 and not unused
        assert all(name.startswith("argon2") for name in used)  # on the hashing thread


def test_threads_waiting_for_the_gil_sleep_through_a_kept_verify_and_no_longer(monkeypatch):
    """While a pinned worker's verify keeps the GIL, the switch interval is long, so waiting
    threads do not wake every 5 ms to ask for a GIL they cannot get; it is restored right
    after, also when the verify fails."""
    tenant = cheap_tenant()
    stored = passwords.hash_password(tenant, "Correct-Horse-42")
    real = holding_verifier()
    assert real is not None
    seen: list[float] = []

    def spy_holding(encoded: str, password: str) -> bool:
        seen.append(sys.getswitchinterval())
        if password == "boom":
            raise MemoryError("argon2 could not allocate")
        return real(encoded, password)

    normal = sys.getswitchinterval()
    monkeypatch.setattr(passwords, "holding_verifier", lambda: spy_holding)
    monkeypatch.setattr(passwords, "_pool", None)
    monkeypatch.setattr(passwords, "_keep_gil", True)
    monkeypatch.setattr(passwords, "hashing_threads", lambda: 1)
    assert passwords.verify_password(tenant, stored, "Correct-Horse-42")
    assert sys.getswitchinterval() == normal
    with pytest.raises(MemoryError):
        passwords.verify_password(tenant, stored, "boom")
    assert sys.getswitchinterval() == normal
    assert seen == [pytest.approx(passwords.QUIET_SWITCH_INTERVAL)] * 2 and normal < seen[0]

    monkeypatch.setattr(passwords, "_pool", None)  # argon2-cffi releases the GIL: no change
    monkeypatch.setattr(passwords, "_keep_gil", False)
    monkeypatch.setattr(PasswordHasher, "verify", lambda self, encoded, password: seen.append(
        sys.getswitchinterval()) or True)
    assert passwords.verify_password(tenant, stored, "Correct-Horse-42")
    assert seen[-1] == normal
