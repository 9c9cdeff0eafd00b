"""Lockout after N failed attempts: the rule as data and the pure decisions it makes.

Trade-off. A lock that follows failed guesses is also a tool for an attacker: anyone who knows
a customer's email can type three wrong passwords and lock the real customer out. A permanent
lock would hand out that denial of service for free, so the broker bounds it three ways:

- a tenant may choose temporary locks (``until_unlocked = False``, the default), which expire by
  themselves; repeated locks grow (``growth_factor``) up to ``max_lock_minutes``, so guessing
  stays slow while the real customer is kept out for minutes, not for ever;
- every lock sends the account's owner an email with a single-use self-service unlock link,
  which only the owner of the mailbox can use (and which may also demand a new password);
- support staff can unlock an account from the console, and every lock and unlock is audited.

Counting is per account (and per unknown address, so a locked answer does not reveal whether
an account exists), not per source address: spreading guesses over many addresses does not
buy more tries. Per-address throttling is a separate, complementary guard.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

LOCKED_UNTIL_UNLOCKED = datetime(9999, 12, 31, tzinfo=UTC)
"""The ``locked_until`` of a lock that only an unlock ends: far enough to never expire."""


@dataclass(frozen=True)
class LockoutRule:
    """``max_attempts`` failures in a row lock; a success or an unlock resets the count."""

    max_attempts: int = 3
    lock_minutes: float = 15
    growth_factor: float = 2.0
    max_lock_minutes: float = 24 * 60
    until_unlocked: bool = False

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.lock_minutes <= 0 or self.max_lock_minutes <= 0:
            raise ValueError("lock durations must be positive")
        if self.growth_factor < 1:
            raise ValueError("growth_factor must be at least 1 (locks never shrink)")


def lock_duration(rule: LockoutRule, lock_number: int) -> timedelta | None:
    """How long the ``lock_number``-th lock in a row lasts (1 = first); None: until unlocked.

    Each further lock without a success in between lasts ``growth_factor`` times longer, up to
    ``max_lock_minutes``.
    """
    if rule.until_unlocked:
        return None
    if lock_number < 1:
        raise ValueError("lock_number counts from 1")
    minutes = rule.lock_minutes
    for _ in range(lock_number - 1):
        minutes *= rule.growth_factor
        if minutes >= rule.max_lock_minutes:
            break
    return timedelta(minutes=min(minutes, rule.max_lock_minutes))


def lock_until(rule: LockoutRule, lock_number: int, now: datetime) -> datetime:
    """When the ``lock_number``-th lock starting at ``now`` ends (or the far-future sentinel)."""
    duration = lock_duration(rule, lock_number)
    return LOCKED_UNTIL_UNLOCKED if duration is None else now + duration


def is_locked(locked_until: datetime | None, now: datetime) -> bool:
    return locked_until is not None and locked_until > now


def is_until_unlocked(locked_until: datetime | None) -> bool:
    return locked_until is not None and locked_until >= LOCKED_UNTIL_UNLOCKED


def locks_after(rule: LockoutRule, failures: int) -> bool:
    """True when ``failures`` attempts in a row have used up the allowance."""
    return failures >= rule.max_attempts


@dataclass(frozen=True)
class LockDecision:
    """What a counter should hold after one more failure."""

    failures: int
    lock_count: int
    locked_until: datetime | None

    @property
    def locked(self) -> bool:
        return self.locked_until is not None


def decide_after_failure(
    rule: LockoutRule, *, failures: int, lock_count: int, now: datetime
) -> LockDecision:
    """Given the failures so far (including this one) and the locks so far, lock or not.

    The database counters apply exactly this decision inside the one atomic statement that
    takes the try (``broker.attempts``, with the lengths from ``lock_durations``); this
    function states it plainly for readers and tests.
    """
    if not locks_after(rule, failures):
        return LockDecision(failures=failures, lock_count=lock_count, locked_until=None)
    number = lock_count + 1
    return LockDecision(
        failures=failures, lock_count=number, locked_until=lock_until(rule, number, now)
    )


def lock_durations(rule: LockoutRule, limit: int) -> tuple[tuple[timedelta | None, ...], bool]:
    """How long locks number 1, 2, ... last (None: until unlocked), up to the first one that
    every later lock shares (the cap, or a lock only an unlock ends) and at most ``limit`` of
    them; and whether the list reached that shared one. A statement that locks picks its entry
    by the lock count it finds, so computing the lock takes no second statement."""
    if limit < 1:
        raise ValueError("limit counts from 1")
    durations: list[timedelta | None] = []
    for number in range(1, limit + 2):
        duration = lock_duration(rule, number)
        if durations and duration == durations[-1]:
            return tuple(durations), True
        if number > limit:
            return tuple(durations), False
        durations.append(duration)
    raise AssertionError("unreachable")  # pragma: no cover
