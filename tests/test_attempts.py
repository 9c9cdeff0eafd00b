"""Exact attempt counters for guessable secrets, on SQLite and PostgreSQL."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import select

from broker import attempts
from broker import db as database
from broker.attempts import (
    LOCK_ENDS,
    purge_idle_counters,
    record_failure,
    record_success,
    reserve_attempt,
    rule_from_config,
    unlock,
)
from broker.config import LockoutConfig
from broker.models import AttemptCounter, utcnow
from policies.lockout import LOCKED_UNTIL_UNLOCKED, LockoutRule, lock_durations, lock_until

RULE = LockoutRule(max_attempts=3, lock_minutes=10, growth_factor=2, max_lock_minutes=25)
KEY = "totp:42"


@pytest.fixture
def sessions(database_url):
    engine = database.make_engine(database_url)
    yield database.make_sessionmaker(engine)
    engine.dispose()


def guess(sessions, right: bool, now=None, rule=RULE, key=KEY):
    """One guess as a caller makes it: reserve, commit, check, record."""
    with sessions() as db:
        reservation = reserve_attempt(db, key, rule, now)
        db.commit()
        if not reservation.allowed:
            return "locked", reservation.locked_until
        if right:
            record_success(db, key)
            db.commit()
            return "ok", None
        locked_until = record_failure(db, key, rule, now)
        db.commit()
        return ("locked" if locked_until else "wrong"), locked_until


def test_three_wrong_guesses_lock_and_the_fourth_is_refused_even_if_right(sessions):
    now = utcnow()
    assert guess(sessions, False, now)[0] == "wrong"
    assert guess(sessions, False, now)[0] == "wrong"
    outcome, locked_until = guess(sessions, False, now)
    assert outcome == "locked" and locked_until == now + timedelta(minutes=10)
    assert guess(sessions, True, now) == ("locked", locked_until)


def test_a_right_guess_resets_the_count(sessions):
    guess(sessions, False)
    guess(sessions, False)
    assert guess(sessions, True)[0] == "ok"
    assert guess(sessions, False)[0] == "wrong"
    assert guess(sessions, False)[0] == "wrong"


def test_a_temporary_lock_expires_and_the_next_lock_lasts_longer_up_to_the_cap(sessions):
    now = utcnow()
    for _ in range(3):
        outcome, until = guess(sessions, False, now)
    assert until == now + timedelta(minutes=10)
    assert guess(sessions, True, now + timedelta(minutes=9))[0] == "locked"

    later = now + timedelta(minutes=10)
    for _ in range(3):
        outcome, until = guess(sessions, False, later)
    assert (outcome, until) == ("locked", later + timedelta(minutes=20))

    latest = later + timedelta(minutes=20)
    for _ in range(3):
        outcome, until = guess(sessions, False, latest)
    assert until == latest + timedelta(minutes=25)  # 40 capped at max_lock_minutes

    assert guess(sessions, True, latest + timedelta(minutes=25))[0] == "ok"
    for _ in range(3):
        outcome, until = guess(sessions, False, latest + timedelta(minutes=30))
    assert until == latest + timedelta(minutes=40)  # growth starts over after a success


def test_a_lock_until_unlocked_never_expires_but_unlock_lifts_it(sessions):
    rule = LockoutRule(max_attempts=2, until_unlocked=True)
    now = utcnow()
    guess(sessions, False, now, rule)
    assert guess(sessions, False, now, rule) == ("locked", LOCKED_UNTIL_UNLOCKED)
    assert guess(sessions, True, now + timedelta(days=3650), rule)[0] == "locked"
    with sessions() as db:
        unlock(db, KEY)
        db.commit()
    assert guess(sessions, True, now, rule)[0] == "ok"


def test_counters_are_separate_per_key(sessions):
    for _ in range(3):
        guess(sessions, False, key="bind:aaro-vand:100234")
    assert guess(sessions, True, key="bind:aaro-vand:100235")[0] == "ok"


def test_the_last_reservation_is_marked_so_the_caller_announces_a_lock_once(sessions):
    with sessions() as db:
        marks = [reserve_attempt(db, KEY, RULE).last_attempt for _ in range(3)]
        refused = reserve_attempt(db, KEY, RULE)
        db.commit()
    assert marks == [False, False, True]
    assert not refused.allowed and not refused.last_attempt


def test_exactly_max_attempts_concurrent_reservations_succeed(sessions):
    rule = LockoutRule(max_attempts=5)

    def reserve(_: int) -> bool:
        with sessions() as db:
            allowed = reserve_attempt(db, "code:concurrent", rule).allowed
            db.commit()
            return allowed

    with ThreadPoolExecutor(max_workers=10) as pool:
        results = list(pool.map(reserve, range(30)))
    assert results.count(True) == 5


def test_idle_unlocked_counters_are_purged_and_locked_ones_kept(sessions):
    now = utcnow()
    with sessions() as db:
        reserve_attempt(db, "idle", RULE, now - timedelta(days=2))
        for _ in range(3):
            reserve_attempt(db, "locked", LockoutRule(until_unlocked=True), now - timedelta(days=2))
        db.commit()
        assert purge_idle_counters(db, timedelta(days=1), now) == 1
        db.commit()
        assert list(db.scalars(select(AttemptCounter.key))) == ["locked"]


def test_rule_from_config_carries_the_tenants_settings():
    config = LockoutConfig(max_attempts=5, lock_minutes=3, growth_factor=1.5,
                           max_lock_minutes=60, until_unlocked=True)
    assert rule_from_config(config) == LockoutRule(5, 3, 1.5, 60, True)


def test_one_allowed_try_locks_a_new_key_in_the_statement_that_creates_it(sessions):
    rule = LockoutRule(max_attempts=1, lock_minutes=5)
    now = utcnow()
    with sessions() as db:
        first = reserve_attempt(db, "code:once", rule, now)
        refused = reserve_attempt(db, "code:once", rule, now)
        db.commit()
    assert first.allowed and first.last_attempt
    assert (refused.allowed, refused.locked_until) == (False, now + timedelta(minutes=5))


def test_locks_beyond_the_bound_ends_still_last_exactly_as_the_rule_says(sessions):
    """A slowly growing rule has more distinct lock lengths than one reservation carries;
    every lock still ends where ``policies.lockout`` says, and is in place at once."""
    rule = LockoutRule(max_attempts=1, lock_minutes=1, growth_factor=1.1, max_lock_minutes=600)
    assert not lock_durations(rule, LOCK_ENDS)[1]
    now = utcnow()
    for number in range(1, LOCK_ENDS + 4):
        outcome, until = guess(sessions, False, now, rule)
        assert (outcome, until) == ("locked", lock_until(rule, number, now)), number
        assert guess(sessions, True, until - timedelta(seconds=1), rule)[0] == "locked"
        now = until


def test_lock_durations_stop_at_the_length_every_later_lock_shares():
    minute = timedelta(minutes=1)
    assert lock_durations(LockoutRule(lock_minutes=1, max_lock_minutes=4), 16) == (
        (minute, 2 * minute, 4 * minute), True)
    assert lock_durations(LockoutRule(growth_factor=1), 16) == ((15 * minute,), True)
    assert lock_durations(LockoutRule(until_unlocked=True), 16) == ((None,), True)
    assert lock_durations(LockoutRule(lock_minutes=1, max_lock_minutes=4), 2) == (
        (minute, 2 * minute), False)
    with pytest.raises(ValueError):
        lock_durations(LockoutRule(), 0)


def test_an_unlock_between_a_reservation_and_its_lock_correction_stays(
        sessions, database_url, monkeypatch):
    """PostgreSQL runs a login's reservation in autocommit: the correction of a lock beyond
    the bound ends comes after it is committed. It corrects only the lock it set."""
    if not database_url.startswith("postgresql"):
        pytest.skip("on SQLite the reservation and its correction share one transaction")
    rule = LockoutRule(max_attempts=1, lock_minutes=1, growth_factor=1.1, max_lock_minutes=600)
    now = utcnow()
    for _ in range(LOCK_ENDS):  # locks 1..16, each run out
        now = guess(sessions, False, now, rule)[1]
    real_decide = attempts.decide_after_failure

    def unlocked_meanwhile(*args, **kwargs):  # type: ignore[no-untyped-def]
        with sessions() as other:
            unlock(other, KEY)
            other.commit()
        return real_decide(*args, **kwargs)

    monkeypatch.setattr(attempts, "decide_after_failure", unlocked_meanwhile)
    with sessions() as db:
        database.statements_stand_alone(db)
        assert reserve_attempt(db, KEY, rule, now).last_attempt  # lock 17, then the unlock
        db.commit()
    with sessions() as db:
        counter = db.get(AttemptCounter, KEY)
        assert (counter.failures, counter.lock_count, counter.locked_until) == (0, 0, None)


def test_statements_stand_alone_until_ended_and_never_with_unwritten_changes(
        sessions, database_url):
    """``end_stand_alone`` returns to transactions; it refuses when ORM changes were made while
    statements stood alone, since a commit would then write them one statement at a time."""
    with sessions() as db:
        database.statements_stand_alone(db)
        postgresql = database_url.startswith("postgresql")
        assert database.runs_stand_alone(db) is postgresql
        assert reserve_attempt(db, KEY, RULE).allowed
        assert database.runs_stand_alone(db) is postgresql  # the same connection, still
        database.end_stand_alone(db)
        assert not database.runs_stand_alone(db)
        db.add(AttemptCounter(key="other", failures=0, lock_count=0, updated_at=utcnow()))
        db.commit()  # in a transaction of its own
        database.statements_stand_alone(db)
        assert database.runs_stand_alone(db) is postgresql
        if postgresql:
            db.add(AttemptCounter(key="third", failures=0, lock_count=0, updated_at=utcnow()))
            with pytest.raises(RuntimeError, match="end that first"):
                database.end_stand_alone(db)
            db.rollback()
