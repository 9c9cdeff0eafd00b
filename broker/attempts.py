"""Exact attempt counters for guessable secrets: passwords, TOTP codes, activation codes, PINs.

One attempt is *reserved* atomically before the secret is checked, so the limit holds however
many broker processes check guesses at once:

1. ``UPDATE ... SET failures = failures + 1 WHERE not locked RETURNING failures`` takes one try
   (for a key, ``INSERT ... ON CONFLICT DO UPDATE`` of the same, so a new key needs no second
   statement). PostgreSQL's row lock makes concurrent reservations queue and re-read the row,
   SQLite's ``BEGIN IMMEDIATE`` serialises writers, so exactly ``max_attempts`` succeed.
2. The reservation that takes the last try also sets the lock (with growth) in the same
   statement: ``CASE`` picks the lock's end among those the rule gives (bound as parameters,
   ``policies.lockout.lock_durations``) by the lock count the row holds. If its guess turns
   out right, ``record_success`` lifts it again; if it was wrong the lock is already in place,
   and a crash between the two steps can only leave the account locked (temporarily, or until
   the emailed link or support unlocks it), never open.

A reservation is one statement, so it needs no transaction of its own: it can run alone, in
autocommit, one network round trip. Commit it before checking the secret
(``authenticate_password`` does): the attempt then stays counted even if the request dies, and
the row lock is not held during a slow hash. The counters for keys live in
``attempt_counters``; a user's password counter lives on the ``users`` row
(``failed_logins``, ``lock_count``, ``locked_at``, ``locked_until``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Integer, Table, and_, bindparam, case, delete, or_, select, true, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from policies.lockout import (
    LOCKED_UNTIL_UNLOCKED,
    LockoutRule,
    decide_after_failure,
    is_locked,
    lock_durations,
)

from .config import LockoutConfig
from .direct_sql import DirectStatement
from .models import AttemptCounter, User, utcnow

ATTEMPTS = AttemptCounter.__table__
USERS = User.__table__


def rule_from_config(config: LockoutConfig) -> LockoutRule:
    """The tenant's lockout settings as the pure rule the counters apply."""
    return LockoutRule(
        max_attempts=config.max_attempts,
        lock_minutes=config.lock_minutes,
        growth_factor=config.growth_factor,
        max_lock_minutes=config.max_lock_minutes,
        until_unlocked=config.until_unlocked,
    )


@dataclass(frozen=True)
class AttemptReservation:
    """The answer to "may I check one more guess?".

    ``allowed``: check the secret now, then call ``record_success`` or ``record_failure``.
    ``locked_until``: when refused, the end of the lock (``LOCKED_UNTIL_UNLOCKED`` for a lock
    only an unlock ends). ``last_attempt``: this reservation took the final
    try, so a wrong guess leaves the counter locked (the caller tells the owner once).
    """

    allowed: bool
    locked_until: datetime | None = None
    attempts_left: int = 0
    last_attempt: bool = False


LOCK_ENDS = 16
"""The most lock ends one reservation carries. A rule whose locks grow to their cap in more
steps (a growth factor under about 1.35 for the defaults) gets later locks at the cap, then
corrected to the exact end by a second statement: the lock is in place throughout."""


class _Counter:
    """Where one counter lives (a row of a table, the names of its columns), with its
    statements built once: building a statement costs more CPU than running it, and a login
    runs two of them. A reservation's statement depends on how many lock ends its rule has
    (``policies.lockout.lock_durations``), so there is one per count, built on first use."""

    def __init__(self, table: Table, id_column: str, failures: str, stamp: str, *,
                 stamp_on_lock_only: bool) -> None:
        c = table.c
        self._table, self._failures, self._stamp = table, failures, stamp
        self._stamp_on_lock_only = stamp_on_lock_only
        row = c[id_column] == bindparam("row")
        now = bindparam("now", type_=c.locked_until.type)
        self.unlocked = or_(c.locked_until.is_(None), c.locked_until <= now)
        self.counts = (c[failures], c.lock_count, c.locked_until)  # what a reservation returns
        self._reservations: dict[int, DirectStatement] = {}
        self._row = row
        # Only the lock this reservation set: an unlock or success since then stays.
        self.exact_end = update(table).where(
            row, c.locked_until == bindparam("provisional_end", type_=c.locked_until.type),
            c.lock_count == bindparam("lock_number"),
        ).values(locked_until=bindparam("exact_end"))
        self.current_lock = select(c.locked_until).where(row)
        self.reset = update(table).where(row).values(
            {failures: 0, "lock_count": 0, "locked_until": None,
             stamp: None if stamp_on_lock_only else now}
        )

    def taken(self, ends: int) -> dict[str, Any]:
        """The SET of a reservation: take one try and, when it is the last, lock in the same
        statement. ``ends``: how many lock ends are bound (``lock_end_1`` ...); the lock count
        the row had picks one (``_LockPlan.parameters``)."""
        c = self._table.c
        now = bindparam("now", type_=c.locked_until.type)
        lock_expired = and_(c.locked_until.is_not(None), c.locked_until <= now)
        # An expired lock starts a fresh allowance; growth is kept until a success.
        failures = case((lock_expired, 1), else_=c[self._failures] + 1)
        locking = failures >= bindparam("max_attempts", type_=Integer)
        end = [bindparam(f"lock_end_{n}", type_=c.locked_until.type) for n in range(1, ends + 1)]
        lock_end = case(dict(enumerate(end[:-1])), value=c.lock_count, else_=end[-1]) \
            if ends > 1 else end[0]
        return {
            self._failures: failures,
            "lock_count": case((locking, c.lock_count + 1), else_=c.lock_count),
            "locked_until": case((locking, lock_end), else_=None),
            self._stamp: case((locking, now), else_=c[self._stamp])
            if self._stamp_on_lock_only else now,
        }

    def reserve(self, ends: int) -> DirectStatement:
        """The reservation of the row named ``row``."""
        if ends not in self._reservations:
            self._reservations[ends] = DirectStatement(self.reserve_where(self._row, ends=ends))
        return self._reservations[ends]

    def reserve_where(self, *where: Any, ends: int, returning: tuple[Any, ...] = ()) -> Any:
        """The reservation for the row(s) ``where`` selects, returning the new count, lock
        count and lock end first, then ``returning``; a locked row is left alone and returns
        nothing."""
        return (
            update(self._table)
            .where(*where, self.unlocked)
            .values(self.taken(ends))
            .returning(*self.counts, *returning)
        )


KEY_COUNTER = _Counter(ATTEMPTS, "key", "failures", "updated_at", stamp_on_lock_only=False)
USER_COUNTER = _Counter(USERS, "id", "failed_logins", "locked_at", stamp_on_lock_only=True)


@dataclass(frozen=True)
class _LockPlan:
    """A rule as its reservations bind it: the lengths of locks 1, 2, ... (``lock_durations``,
    at most ``LOCK_ENDS``), and whether later locks all share the last one."""

    rule: LockoutRule
    durations: tuple[timedelta | None, ...]
    complete: bool

    @property
    def ends(self) -> int:
        return len(self.durations)

    def parameters(self, now: datetime) -> dict[str, Any]:
        """A reservation's parameters: the allowance, and when locks 1, 2, ... that start
        ``now`` end."""
        parameters: dict[str, Any] = {"max_attempts": self.rule.max_attempts, "now": now}
        for number, duration in enumerate(self.durations, 1):
            parameters[f"lock_end_{number}"] = (
                LOCKED_UNTIL_UNLOCKED if duration is None else now + duration
            )
        return parameters


@functools.lru_cache(maxsize=64)
def _lock_plan(rule: LockoutRule) -> _LockPlan:
    return _LockPlan(rule, *lock_durations(rule, LOCK_ENDS))


def _reserve(
    db: Session, counter: _Counter, row: Any, rule: LockoutRule, now: datetime
) -> AttemptReservation:
    plan = _lock_plan(rule)
    connection = db.connection()
    taken = counter.reserve(plan.ends).first(connection, {"row": row, **plan.parameters(now)})
    if taken is None:
        current = connection.execute(counter.current_lock, {"row": row}).scalar()
        return AttemptReservation(allowed=False, locked_until=current)
    count, locks, locked_until = taken
    return _decide(connection, counter, row, plan, count, locks, locked_until, now)


def _decide(connection: Any, counter: _Counter, row: Any, plan: _LockPlan, count: int,
            locks: int, locked_until: datetime | None, now: datetime) -> AttemptReservation:
    """After a reservation took try number ``count`` (and locked, if it was the last)."""
    rule = plan.rule
    if locked_until is None:
        return AttemptReservation(allowed=True, attempts_left=rule.max_attempts - count)
    if locks > plan.ends and not plan.complete:  # a lock beyond the bound ends: make it exact
        exact = decide_after_failure(rule, failures=count, lock_count=locks - 1, now=now)
        connection.execute(counter.exact_end, {
            "row": row, "provisional_end": locked_until, "lock_number": locks,
            "exact_end": exact.locked_until})
    return AttemptReservation(allowed=True, attempts_left=0, last_attempt=True)


def _locked_until(db: Session, counter: _Counter, row: Any, now: datetime) -> datetime | None:
    current = db.connection().execute(counter.current_lock, {"row": row}).scalar()
    return current if is_locked(current, now) else None


def _reset(db: Session, counter: _Counter, row: Any) -> None:
    db.connection().execute(counter.reset, {"row": row, "now": utcnow()})


# --- Counters for keys (TOTP, activation codes, binding proofs) --------------------------


def _reserve_by_upsert(insert: Any, ends: int) -> Any:
    """A key's reservation in one statement: a new key starts at one try taken (and locked,
    when the rule allows one); an existing unlocked one takes the next (``_Counter`` rules); a
    locked one is left alone and returns nothing. The conflicting row is locked while it is
    updated, so concurrent reservations queue (PostgreSQL) or are serialised (SQLite's
    ``BEGIN IMMEDIATE``), as with an UPDATE."""
    return (
        insert(ATTEMPTS)
        .values(key=bindparam("row"), failures=1, lock_count=bindparam("first_lock_count"),
                locked_until=bindparam("first_lock_end"), updated_at=bindparam("now"))
        .on_conflict_do_update(index_elements=["key"], set_=KEY_COUNTER.taken(ends),
                               where=KEY_COUNTER.unlocked)
        .returning(*KEY_COUNTER.counts)
    )


_INSERTS = {"postgresql": postgresql_insert, "sqlite": sqlite_insert}


@functools.cache
def _key_reservation(dialect: str, ends: int) -> DirectStatement:
    insert = _INSERTS.get(dialect)
    if insert is None:
        raise RuntimeError(f"attempt counters need PostgreSQL or SQLite, not {dialect}")
    return DirectStatement(_reserve_by_upsert(insert, ends))


def reserve_attempt(
    db: Session, key: str, rule: LockoutRule, now: datetime | None = None
) -> AttemptReservation:
    """Take one attempt at the secret named ``key`` before checking it; refused while locked.

    ``key`` names what is guessed, not who guesses: ``totp:<user id>``,
    ``bind:<tenant>:<customer number>``, so that spreading guesses over users or addresses
    does not buy more tries.
    """
    now = now or utcnow()
    plan = _lock_plan(rule)
    connection = db.connection()
    statement = _key_reservation(connection.dialect.name, plan.ends)
    parameters = plan.parameters(now)
    first_lock = rule.max_attempts <= 1
    taken = statement.first(connection, {
        "row": key, **parameters,
        "first_lock_count": 1 if first_lock else 0,
        "first_lock_end": parameters["lock_end_1"] if first_lock else None,
    })
    if taken is None:
        current = connection.execute(KEY_COUNTER.current_lock, {"row": key}).scalar()
        return AttemptReservation(allowed=False, locked_until=current)
    count, locks, locked_until = taken
    return _decide(connection, KEY_COUNTER, key, plan, count, locks, locked_until, now)


def record_success(db: Session, key: str) -> None:
    """The reserved guess was right: the count and the lock growth start over."""
    _reset(db, KEY_COUNTER, key)


def record_failure(
    db: Session, key: str, rule: LockoutRule, now: datetime | None = None
) -> datetime | None:
    """The reserved guess was wrong. Returns ``locked_until`` when the key is now locked
    (``policies.lockout.LOCKED_UNTIL_UNLOCKED`` for a lock until unlocked), else None.

    The lock itself was set when the last attempt was reserved (see the module docstring), so
    concurrent failures all report the same lock; use ``AttemptReservation.last_attempt`` to
    act once on a new lock. ``rule`` is accepted so callers state the rule they guard with.
    """
    del rule
    return _locked_until(db, KEY_COUNTER, key, now or utcnow())


def unlock(db: Session, key: str) -> None:
    """Lift a lock (support, or a proof of ownership): the allowance and growth start over."""
    _reset(db, KEY_COUNTER, key)


def purge_idle_counters(db: Session, idle_for: timedelta, now: datetime | None = None) -> int:
    """Delete unlocked counters untouched for ``idle_for`` (guesses at unknown addresses leave
    one row each). Returns how many went."""
    now = now or utcnow()
    result = db.execute(
        delete(ATTEMPTS).where(
            ATTEMPTS.c.updated_at < now - idle_for,
            or_(ATTEMPTS.c.locked_until.is_(None), ATTEMPTS.c.locked_until <= now),
        )
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


# --- A user's password counter, on the users row -----------------------------------------


def reserve_login_attempt(
    db: Session, user_id: int, rule: LockoutRule, now: datetime | None = None
) -> AttemptReservation:
    """``reserve_attempt`` for the user's password, counted in ``users.failed_logins``."""
    return _reserve(db, USER_COUNTER, user_id, rule, now or utcnow())


@dataclass(frozen=True, slots=True)
class LoginAccount:
    """What a password login reads of the account, with its reservation: enough to check the
    password and open a session. Not an ORM ``User``: building and attaching one cost a login
    about 0.1 ms (BENCHMARKS.md); the paths that change the account load one
    (``flows.password_login``). Each column read costs a login about 0.02 ms more."""

    id: int
    tenant: str
    subject: str
    email: str | None
    email_verified: bool
    name: str
    locale: str | None
    status: str
    password_hash: str | None
    totp_secret: str | None


LOGIN_COLUMNS = tuple(field.name for field in fields(LoginAccount))
# (bind names differ from the column names: an UPDATE reserves those for its SET clause)
_BY_EMAIL = and_(USERS.c.tenant == bindparam("in_tenant"), USERS.c.email == bindparam("by_email"))
_USER_LOCK_BY_EMAIL = select(USERS.c.id, USERS.c.locked_until).where(_BY_EMAIL)
_ACCOUNT_BY_EMAIL = select(
    *(USERS.c[name] for name in LOGIN_COLUMNS), USERS.c.locked_until
).where(_BY_EMAIL)
_ACCOUNT = USERS.alias("account")


@functools.cache
def _reserve_or_explain_by_email(ends: int) -> DirectStatement:
    """PostgreSQL: the reservation and, when it takes nothing, the account's lock, in one
    statement (the UPDATE as a data-modifying CTE; the outer SELECT sees the row as it was
    before it). SQLite, without such CTEs, reads the account, then reserves by id. Up to the
    hash, an unknown address then costs at most one statement more than a registered one (its
    own counter's upsert, on PostgreSQL), so the database work hardly tells them apart."""
    reserved = USER_COUNTER.reserve_where(
        _BY_EMAIL, ends=ends, returning=tuple(USERS.c[name] for name in LOGIN_COLUMNS)
    ).cte("reserved")
    return DirectStatement(
        select(*reserved.c, _ACCOUNT.c.id, _ACCOUNT.c.locked_until)
        .select_from(_ACCOUNT.outerjoin(reserved, true()))
        .where(_ACCOUNT.c.tenant == bindparam("in_tenant"),
               _ACCOUNT.c.email == bindparam("by_email"))
    )


@dataclass(frozen=True)
class PasswordAttempt:
    """What reserving a password attempt by email found: no account (``user_id`` None), a
    locked one (``reservation.allowed`` False), or an attempt taken (``user``: the account)."""

    user_id: int | None
    reservation: AttemptReservation
    user: LoginAccount | None = None


def reserve_login_attempt_by_email(
    db: Session, tenant: str, email: str, rule: LockoutRule, now: datetime | None = None
) -> PasswordAttempt:
    """Find the account by email and take one attempt from its password counter: one
    statement on PostgreSQL, two on SQLite."""
    now = now or utcnow()
    plan = _lock_plan(rule)
    connection = db.connection()
    params = {"in_tenant": tenant, "by_email": email, **plan.parameters(now)}
    if connection.dialect.name == "postgresql":
        taken = _take_login_try_on_postgresql(connection, plan.ends, params, now)
    else:
        taken = _take_login_try_on_sqlite(connection, plan.ends, params)
    if isinstance(taken, PasswordAttempt):  # refused: unknown or locked
        return taken
    count, locks, locked_until, columns = taken
    user = LoginAccount(*columns)
    reservation = _decide(connection, USER_COUNTER, user.id, plan, count, locks,
                          locked_until, now)
    return PasswordAttempt(user.id, reservation, user)


# the new count, the lock count, the lock this try set (or None), the LOGIN_COLUMNS
_Taken = tuple[int, int, datetime | None, list[Any]]


def _take_login_try_on_postgresql(connection: Any, ends: int, params: dict[str, Any],
                                  now: datetime) -> _Taken | PasswordAttempt:
    for _ in range(2):
        row = _reserve_or_explain_by_email(ends).first(connection, params)
        if row is None:
            return PasswordAttempt(None, AttemptReservation(allowed=False))
        count, locks, new_lock, *columns, user_id, locked_until = row
        if count is not None:
            return count, locks, new_lock, columns
        if is_locked(locked_until, now):
            return PasswordAttempt(user_id, AttemptReservation(False, locked_until))
        # Nothing reserved, yet no lock in the statement's snapshot: the UPDATE waited for a
        # concurrent transaction that locked, deleted or re-addressed the account. Ask again
        # what is committed now.
        current = connection.execute(_USER_LOCK_BY_EMAIL, params).first()
        if current is None or current.id != user_id:
            return PasswordAttempt(None, AttemptReservation(allowed=False))
        if is_locked(current.locked_until, now):
            return PasswordAttempt(user_id, AttemptReservation(False, current.locked_until))
    # Twice no reservation and no lock: refuse as locked; the hash is never checked untaken.
    return PasswordAttempt(user_id, AttemptReservation(False, locked_until))


def _take_login_try_on_sqlite(connection: Any, ends: int,
                              params: dict[str, Any]) -> _Taken | PasswordAttempt:
    """The account, then its reservation by id, under BEGIN IMMEDIATE's write lock."""
    account = connection.execute(_ACCOUNT_BY_EMAIL, params).first()
    if account is None:
        return PasswordAttempt(None, AttemptReservation(allowed=False))
    *columns, locked_until = account
    taken = USER_COUNTER.reserve(ends).first(connection, {"row": account.id, **params})
    if taken is None:
        return PasswordAttempt(account.id, AttemptReservation(False, locked_until))
    count, locks, new_lock = taken
    return count, locks, new_lock, columns


def record_login_success(db: Session, user_id: int) -> None:
    _reset(db, USER_COUNTER, user_id)


def record_login_failure(
    db: Session, user_id: int, rule: LockoutRule, now: datetime | None = None
) -> datetime | None:
    """``record_failure`` for the user's password: the lock's end, or None if not locked."""
    del rule
    return _locked_until(db, USER_COUNTER, user_id, now or utcnow())


def unlock_user(db: Session, user_id: int) -> None:
    """Lift a user's password lock (unlock link or support)."""
    _reset(db, USER_COUNTER, user_id)
