"""The throttles' counters: Redis shared, memory while Redis is away, Redis again once it answers.

Redis is real (127.0.0.1:6379, required with CI=true); "Redis away" is a port nothing listens on
and then the real server again, by swapping the counters' primary strategy for one on a dead
address and back.
"""

from __future__ import annotations

import secrets
import threading
import time

import pytest
from limits import parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from broker import rate_counters
from broker.rate_counters import RateCounters

from .test_throttle import (
    REDIS_URL,
    redis_server,  # noqa: F401 - the fixture, with its CI rule
)

TWO_A_MINUTE = parse("2/minute")


def fresh_key() -> tuple[str, str, str]:
    return "test" + secrets.token_hex(4), "addr:" + secrets.token_hex(8), "login:address"


def test_in_memory_counters_allow_the_limit_then_refuse_and_say_when_it_reopens():
    counters = RateCounters("memory://", "moving-window", fall_back_to_memory=False)
    key = fresh_key()
    assert [counters.hit(TWO_A_MINUTE, *key) for _ in range(3)] == [True, True, False]
    assert time.time() < counters.reset_at(TWO_A_MINUTE, *key) <= time.time() + 61
    assert counters.hit(TWO_A_MINUTE, *fresh_key())  # another key has its own allowance


def test_two_processes_share_counts_through_redis(redis_server):  # noqa: F811
    first = RateCounters(REDIS_URL, "moving-window", fall_back_to_memory=True)
    second = RateCounters(REDIS_URL, "moving-window", fall_back_to_memory=True)
    key = fresh_key()
    try:
        assert first.hit(TWO_A_MINUTE, *key)
        assert second.hit(TWO_A_MINUTE, *key)
        assert not first.hit(TWO_A_MINUTE, *key)
        assert not second.hit(TWO_A_MINUTE, *key)
    finally:
        first.clear(TWO_A_MINUTE, *key)


def test_while_redis_is_away_counting_goes_on_in_memory_and_returns_to_redis(
    redis_server,  # noqa: F811
):
    clock = [1000.0]
    counters = RateCounters(REDIS_URL, "moving-window", fall_back_to_memory=True,
                            clock=lambda: clock[0])
    live_primary = counters._primary
    dead = MovingWindowRateLimiter(storage_from_string("redis://127.0.0.1:9/0"))
    key = fresh_key()
    try:
        counters._primary = dead
        # Redis away: nothing is refused for it, and the limit still holds (in memory).
        assert [counters.hit(TWO_A_MINUTE, *key) for _ in range(3)] == [True, True, False]
        assert redis_server.keys(f"*{key[1]}*") == []

        # Redis back: within the retry interval memory still counts; after it, Redis does.
        counters._primary = live_primary
        assert not counters.hit(TWO_A_MINUTE, *key)  # memory: the third hit was refused
        clock[0] += rate_counters.MAX_RETRY_SECONDS + 1
        assert counters.hit(TWO_A_MINUTE, *key)  # Redis: a fresh count for this key
        assert redis_server.keys(f"*{key[1]}*") != []
    finally:
        live_primary.clear(TWO_A_MINUTE, *key)


def test_an_unknown_strategy_is_named():
    with pytest.raises(ValueError, match="unknown rate limit strategy 'fastest'"):
        RateCounters("memory://", "fastest", fall_back_to_memory=False)


def test_threads_failing_together_back_off_once_and_a_stale_answer_does_not_end_it():
    clock = [1000.0]
    counters = RateCounters("memory://", "moving-window", fall_back_to_memory=True,
                            clock=lambda: clock[0])
    counters._primary = MovingWindowRateLimiter(storage_from_string("redis://127.0.0.1:9/0"))
    threads = [threading.Thread(target=counters.hit, args=(TWO_A_MINUTE, *fresh_key()))
               for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Eight calls saw the same outage: the first retry is one second away, not 2**8.
    assert counters._primary_down_until == 1001.0
    # An answer from a call that began before the outage was noticed does not end it.
    counters._primary_answered(started=999.0)
    assert counters._primary_down_until == 1001.0
    counters._primary_answered(started=1001.0)
    assert counters._primary_down_until == 0.0


def test_a_silent_redis_is_given_up_on_quickly_unless_the_url_says_otherwise():
    def socket_timeouts(url: str) -> tuple[float, float]:
        counters = RateCounters(url, "moving-window", fall_back_to_memory=True)
        options = counters._primary.storage.storage.connection_pool.connection_kwargs
        return options["socket_timeout"], options["socket_connect_timeout"]

    assert socket_timeouts(REDIS_URL) == (rate_counters.REDIS_TIMEOUT_SECONDS,) * 2
    assert socket_timeouts("redis://127.0.0.1:6379/0?socket_timeout=2")[0] == 2.0


@pytest.mark.parametrize("strategy", ["sliding-window-counter", "moving-window", "fixed-window"])
def test_counting_in_memory_starts_no_thread_per_hit(strategy: str, monkeypatch) -> None:
    """limits' MemoryStorage started a Timer thread on nearly every hit; ours starts none."""
    counters = RateCounters("memory://", strategy, fall_back_to_memory=False)
    storage = counters._primary.storage
    assert isinstance(storage, rate_counters.SweptMemoryStorage)
    started: list[threading.Thread] = []
    start = threading.Thread.start
    monkeypatch.setattr(threading.Thread, "start",
                        lambda thread: (started.append(thread), start(thread))[1])
    timer = storage.timer
    limit = parse("1000/minute")
    for number in range(5):
        assert counters.hit(limit, "login", f"198.51.100.{number}")
        time.sleep(0.012)  # longer than the base class's 10 ms timer: it would start anew
    # Other tests' background threads may start meanwhile in this process: count ours only.
    ours = [thread for thread in started
            if getattr(getattr(thread, "function", None), "__self__", None) is storage]
    assert ours == [] and storage.timer is timer


def test_a_sweep_drops_expired_entries_and_never_changes_a_count(monkeypatch) -> None:
    now = [100.0]
    wall = [time.time()]
    storage = rate_counters.SweptMemoryStorage(sweep_seconds=5, clock=lambda: now[0],
                                               wall_clock=lambda: wall[0])
    limiter = MovingWindowRateLimiter(storage)
    limit = parse("2/second")
    assert limiter.hit(limit, "k") and limiter.hit(limit, "k")
    assert not limiter.hit(limit, "k")  # counting is limits' own
    storage.incr("counter", expiry=60)
    storage.incr("short", expiry=30)
    wall[0] += 45  # by the sweep's clock: the events (1 s) and "short" (30 s) have expired
    storage.incr("counter", expiry=60)
    assert "short" in storage.storage  # not yet swept: the interval has not passed
    now[0] += 5
    storage.incr("counter", expiry=60)  # this hit sweeps
    assert "short" not in storage.storage and limit.key_for("k") not in storage.events
    assert storage.get("counter") == 3  # a live counter is kept whole


def test_a_failing_sweep_does_not_fail_the_hit(monkeypatch) -> None:
    now = [0.0]
    storage = rate_counters.SweptMemoryStorage(sweep_seconds=1, clock=lambda: now[0])

    def broken() -> None:
        raise KeyError("raced")

    monkeypatch.setattr(storage, "sweep", broken)
    now[0] += 2
    assert storage.incr("k", expiry=60) == 1  # swept (and failed) on this hit: still counted
    assert not storage._sweeping.locked()


def test_the_swept_storage_survives_a_pickle_round_trip() -> None:
    import pickle

    storage = rate_counters.SweptMemoryStorage()
    storage.incr("k", expiry=60)
    copy = pickle.loads(pickle.dumps(storage))
    assert copy.get("k") == 1 and copy.incr("k", expiry=60) == 2
