"""Rate counters for the throttles: the ``limits`` library's strategies on Redis or in memory.

Redis is shared by every broker process; without ``redis_url`` each process counts in its own
memory. When Redis stops answering, counting goes on in this process's memory rather than
refusing logins, and Redis is tried again after 1, 2, 4 ... up to 64 seconds; its counters are
used again as soon as it answers. A Redis call gives up after 0.25 s unless the URL says
otherwise (``?socket_timeout=...``).

Why not Flask-Limiter (which the broker used before): its per-view wrapper resolves default,
blueprint, meta and dynamic limits, exemptions and header bookkeeping on every request, none
of which the broker uses, at about a tenth of a password login's CPU outside argon2
(BENCHMARKS.md). The counting itself was always ``limits``' and still is, under the same keys.
In memory it counts in ``SweptMemoryStorage``: ``limits``' own memory storage started a new
thread for nearly every request under steady traffic.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from limits import RateLimitItem
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import STRATEGIES, RateLimiter

log = logging.getLogger(__name__)

MAX_RETRY_SECONDS = 64.0
REDIS_TIMEOUT_SECONDS = 0.25  # a healthy Redis answers a counter in well under a millisecond


class SweptMemoryStorage(MemoryStorage):
    """``limits``' memory storage, with its expired entries dropped by the caller's thread.

    ``MemoryStorage`` drops them from a ``threading.Timer`` that it starts afresh, 10 ms after
    the previous one fired, on the next hit: under steady traffic a new OS thread for nearly
    every request, at some 0.1 ms of CPU each (BENCHMARKS.md). Dropping expired entries only
    frees memory: an expired counter is never counted (``get`` checks its expiry) and an old
    event never falls inside a window. So here one hit in ``sweep_seconds`` sweeps, and no hit
    waits for another's sweep. A sweep that fails (it races other threads over the dicts, as
    the base class's timer did) is logged and retried later; the request it rode on goes on.

    ``_MemoryStorage__schedule_expiry`` is the name the base class calls before each count;
    ``limits`` is pinned below its next major version, and tests/test_rate_counters.py fails
    if a hit starts a thread.
    """

    def __init__(self, uri: str = "memory://", *, sweep_seconds: float = 1.0,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time, **options: object) -> None:
        super().__init__(uri, **options)
        self.timer.cancel()  # the base class started one; none is needed
        self._sweep_seconds = sweep_seconds
        self._clock = clock
        self._wall_clock = wall_clock  # what entries' expiry times are in (``limits``: time.time)
        self._next_sweep = clock() + sweep_seconds
        self._sweeping = threading.Lock()

    def __getstate__(self) -> dict[str, object]:
        state = super().__getstate__()
        del state["_sweeping"]
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        super().__setstate__(state)
        self.timer.cancel()
        self._sweeping = threading.Lock()

    def _MemoryStorage__schedule_expiry(self) -> None:
        if self._clock() < self._next_sweep or not self._sweeping.acquire(blocking=False):
            return
        try:
            self._next_sweep = self._clock() + self._sweep_seconds
            self.sweep()
        except Exception:  # noqa: BLE001 - memory upkeep must never fail a request
            log.debug("rate counter sweep failed; retried on a later hit", exc_info=True)
        finally:
            self._sweeping.release()

    def sweep(self) -> None:
        """Drop expired counters and events, and keys left with no events."""
        now = self._wall_clock()
        for key in list(self.events):
            with self.locks[key]:
                events = self.events.get(key) or []
                live = [event for event in events if event.expiry > now]
                if live:
                    self.events[key] = live
                else:
                    self.events.pop(key, None)
                    self.locks.pop(key, None)
        for key, expiry in list(self.expirations.items()):
            if expiry > now:
                continue
            with self.locks[key]:  # incr sets a fresh expiry under this lock: check again
                if self.expirations.get(key, now + 1) <= now:
                    self.storage.pop(key, None)
                    self.expirations.pop(key, None)
                    self.locks.pop(key, None)


def _storage(storage_uri: str, **options: object):  # type: ignore[no-untyped-def]
    if storage_uri.startswith("memory://"):
        return SweptMemoryStorage(storage_uri)
    return storage_from_string(storage_uri, **options)


class RateCounters:
    """``hit`` and ``reset_at`` on the primary storage, or on memory while it is unreachable."""

    def __init__(self, storage_uri: str, strategy: str, *, fall_back_to_memory: bool,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown rate limit strategy {strategy!r}")
        options = {}
        if storage_uri.startswith(("redis://", "rediss://")):
            # A Redis that takes connections but does not answer must not hold a login for
            # seconds (redis-py's own default); settings in the URL's query still win.
            options = {"socket_timeout": REDIS_TIMEOUT_SECONDS,
                       "socket_connect_timeout": REDIS_TIMEOUT_SECONDS}
        self._primary: RateLimiter = STRATEGIES[strategy](_storage(storage_uri, **options))
        self._fallback: RateLimiter | None = (
            STRATEGIES[strategy](SweptMemoryStorage()) if fall_back_to_memory else None
        )
        self._clock = clock
        self._lock = threading.Lock()
        self._primary_down_until = 0.0  # clock time of the next attempt at the primary
        self._failed_at = float("-inf")  # clock time the primary was last marked down
        self._retry_seconds = 1.0

    def hit(self, item: RateLimitItem, *identifiers: str) -> bool:
        """Count one request; False when it is over the limit."""
        return bool(self._call("hit", item, *identifiers))

    def reset_at(self, item: RateLimitItem, *identifiers: str) -> float:
        """The epoch second at which the window of ``identifiers`` lets one request in again."""
        return float(self._call("get_window_stats", item, *identifiers).reset_time)

    def clear(self, item: RateLimitItem, *identifiers: str) -> None:
        self._call("clear", item, *identifiers)

    def _call(self, method: str, item: RateLimitItem, *identifiers: str):  # type: ignore[no-untyped-def]
        if self._fallback is None:
            return getattr(self._primary, method)(item, *identifiers)
        started = self._clock()
        if started >= self._primary_down_until:
            try:
                answer = getattr(self._primary, method)(item, *identifiers)
            except Exception:  # noqa: BLE001 - any storage failure: count in memory meanwhile
                self._primary_failed(started)
            else:
                self._primary_answered(started)
                return answer
        return getattr(self._fallback, method)(item, *identifiers)

    def _primary_failed(self, started: float) -> None:
        """Back off once per failure of the primary, however many threads saw it fail: a call
        that began before the primary was last marked down adds nothing."""
        with self._lock:
            if started <= self._failed_at:
                return
            if self._primary_down_until == 0.0:
                log.warning("rate limit storage unreachable: counting in memory meanwhile")
            self._failed_at = self._clock()
            self._primary_down_until = self._failed_at + self._retry_seconds
            self._retry_seconds = min(self._retry_seconds * 2, MAX_RETRY_SECONDS)

    def _primary_answered(self, started: float) -> None:
        """Back to the primary, unless this call began before its last failure (a slow answer
        from before the failure proves nothing about now)."""
        if self._primary_down_until:
            with self._lock:
                if self._primary_down_until and started > self._failed_at:
                    log.info("rate limit storage answers again")
                    self._primary_down_until, self._retry_seconds = 0.0, 1.0
