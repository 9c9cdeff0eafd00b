"""Exact attempt counters for guessable secrets: passwords, TOTP codes, activation codes, PINs.

One attempt is *reserved* atomically before the secret is checked, so the limit holds however
many broker processes check guesses at once:

1. ``UPDATE ... SET failures = failures + 1 WHERE not locked RETURNING failures`` takes one try.
   PostgreSQL's row lock makes concurrent reservations queue and re-read the row, SQLite's
   ``BEGIN IMMEDIATE`` serialises writers, so exactly ``max_attempts`` reservations succeed.
2. The reservation that takes the last try also sets the lock (with growth) in the same
   transaction. If its guess turns out right, ``record_success`` lifts it again; if it was wrong
   the lock is already in place, and a crash between the two steps can only leave the account
   locked (temporarily, or until the emailed link or support unlocks it), never open.

Commit the reservation before checking the secret (``authenticate_password`` does): the
attempt then stays counted even if the request dies, and the row lock is not held during a
slow hash. The counters for keys live in ``attempt_counters``; a user's password counter
lives on the ``users`` row (``failed_logins``, ``lock_count``, ``locked_at``, ``locked_until``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, and_, bindparam, case, delete, or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from policies.lockout import LockoutRule, decide_after_failure, is_locked

from .config import LockoutConfig
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


class _Counter:
    """Where one counter lives (a row of a table, the names of its columns), with its four
    statements built once: building a statement costs more CPU than running it, and a login
    runs two of them."""

    def __init__(self, table: Table, id_column: str, failures: str, stamp: str, *,
                 stamp_on_lock_only: bool) -> None:
        c = table.c
        row = c[id_column] == bindparam("row")
        now = bindparam("now")
        lock_expired = and_(c.locked_until.is_not(None), c.locked_until <= now)
        taken: dict[str, Any] = {
            # An expired lock starts a fresh allowance; growth is kept until a success.
            failures: case((lock_expired, 1), else_=c[failures] + 1),
            "locked_until": None,
        }
        if not stamp_on_lock_only:
            taken[stamp] = now
        self._table, self._taken = table, taken
        self._unlocked = or_(c.locked_until.is_(None), c.locked_until <= now)
        self._counts = (c[failures], c.lock_count)
        self.reserve = self.reserve_where(row)
        self.lock = update(table).where(row).values(
            {"lock_count": bindparam("lock_count"), "locked_until": bindparam("locked_until"),
             stamp: now}
        )
        self.current_lock = select(c.locked_until).where(row)
        self.reset = update(table).where(row).values(
            {failures: 0, "lock_count": 0, "locked_until": None,
             stamp: None if stamp_on_lock_only else now}
        )

    def reserve_where(self, *where: Any, returning: tuple[Any, ...] = ()) -> Any:
        """The reservation for the row(s) ``where`` selects, returning the new count and lock
        count first, then ``returning``; a locked row is left alone and returns nothing."""
        return (
            update(self._table)
            .where(*where, self._unlocked)
            .values(self._taken)
            .returning(*self._counts, *returning)
        )


KEY_COUNTER = _Counter(ATTEMPTS, "key", "failures", "updated_at", stamp_on_lock_only=False)
USER_COUNTER = _Counter(USERS, "id", "failed_logins", "locked_at", stamp_on_lock_only=True)


def _reserve(
    db: Session, counter: _Counter, row: Any, rule: LockoutRule, now: datetime
) -> AttemptReservation:
    connection = db.connection()
    taken = connection.execute(counter.reserve, {"row": row, "now": now}).first()
    if taken is None:
        current = connection.execute(counter.current_lock, {"row": row}).scalar()
        return AttemptReservation(allowed=False, locked_until=current)
    count, locks = taken
    return _decide(connection, counter, row, rule, count, locks, now)


def _decide(connection: Any, counter: _Counter, row: Any, rule: LockoutRule, count: int,
            locks: int, now: datetime) -> AttemptReservation:
    """After a reservation took try number ``count``: lock now if it was the last one."""
    decision = decide_after_failure(rule, failures=count, lock_count=locks, now=now)
    if not decision.locked:
        return AttemptReservation(allowed=True, attempts_left=rule.max_attempts - count)
    connection.execute(counter.lock, {"row": row, "now": now, "lock_count": decision.lock_count,
                                      "locked_until": decision.locked_until})
    return AttemptReservation(allowed=True, attempts_left=0, last_attempt=True)


def _locked_until(db: Session, counter: _Counter, row: Any, now: datetime) -> datetime | None:
    current = db.connection().execute(counter.current_lock, {"row": row}).scalar()
    return current if is_locked(current, now) else None


def _reset(db: Session, counter: _Counter, row: Any) -> None:
    db.connection().execute(counter.reset, {"row": row, "now": utcnow()})


# --- Counters for keys (TOTP, activation codes, binding proofs) --------------------------


def _ensure_row(db: Session, key: str, now: datetime) -> None:
    dialect = db.get_bind().dialect.name
    if dialect == "postgresql":
        insert = postgresql_insert(ATTEMPTS)
    elif dialect == "sqlite":
        insert = sqlite_insert(ATTEMPTS)
    else:
        raise RuntimeError(f"attempt counters need PostgreSQL or SQLite, not {dialect}")
    db.execute(
        insert.values(key=key, failures=0, lock_count=0, updated_at=now)
        .on_conflict_do_nothing(index_elements=["key"])
    )


def reserve_attempt(
    db: Session, key: str, rule: LockoutRule, now: datetime | None = None
) -> AttemptReservation:
    """Take one attempt at the secret named ``key`` before checking it; refused while locked.

    ``key`` names what is guessed, not who guesses: ``totp:<user id>``,
    ``bind:<tenant>:<customer number>``, so that spreading guesses over users or addresses
    does not buy more tries.
    """
    now = now or utcnow()
    _ensure_row(db, key, now)
    return _reserve(db, KEY_COUNTER, key, rule, now)


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


# What a login reads of the user (the rest loads on first use, if ever): each column returned
# costs CPU in psycopg and SQLAlchemy on every login, about 0.02 ms.
LOGIN_COLUMNS = ("id", "tenant", "subject", "email", "email_verified", "name", "locale",
                 "status", "password_hash", "totp_secret")
_RESERVE_LOGIN_BY_EMAIL = USER_COUNTER.reserve_where(
    # (bind names differ from the column names: an UPDATE reserves those for its SET clause)
    USERS.c.tenant == bindparam("in_tenant"), USERS.c.email == bindparam("by_email"),
    returning=tuple(USERS.c[name] for name in LOGIN_COLUMNS),
)


def reserve_login_attempt_by_email(
    db: Session, tenant: str, email: str, rule: LockoutRule, now: datetime | None = None
) -> tuple[Any, AttemptReservation] | None:
    """Find the user by email and take one attempt from their password counter, in one
    statement: ``(the LOGIN_COLUMNS of the users row, reservation)``. None when no unlocked
    account has this email (unknown, or locked: ``user_lock_by_email`` tells which)."""
    now = now or utcnow()
    connection = db.connection()
    taken = connection.execute(
        _RESERVE_LOGIN_BY_EMAIL, {"in_tenant": tenant, "by_email": email, "now": now}
    ).first()
    if taken is None:
        return None
    count, locks, *columns = taken
    user = dict(zip(LOGIN_COLUMNS, columns, strict=True))
    reservation = _decide(connection, USER_COUNTER, user["id"], rule, count, locks, now)
    return user, reservation


_USER_LOCK_BY_EMAIL = select(USERS.c.id, USERS.c.locked_until).where(
    USERS.c.tenant == bindparam("tenant"), USERS.c.email == bindparam("email")
)


def user_lock_by_email(db: Session, tenant: str, email: str) -> tuple[int, datetime] | None:
    """After ``reserve_login_attempt_by_email`` found nothing: ``(user id, locked_until)`` of a
    locked account with this email, or None when there is no such account."""
    row = db.connection().execute(
        _USER_LOCK_BY_EMAIL, {"tenant": tenant, "email": email}
    ).first()
    return None if row is None else (row.id, row.locked_until)


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
