"""Staff login: password (argon2id), then a TOTP code that works once, then a short session.

Staff are not customers: their own table, their own hash parameters (not a tenant's), TOTP on
every login, and sessions that end after 30 idle minutes. A session is a random token (cookie
for the console, bearer for the API) kept server-side as a SHA-256 digest so it can be ended.
Wrong passwords and wrong codes count in the shared attempt counters, so the limit holds across
broker processes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from policies.lockout import LockoutRule

from .. import audit
from ..attempts import record_success, reserve_attempt
from ..models import Staff, StaffSession, utcnow
from ..passwords import on_hashing_threads
from ..security import keyed_hmac, new_token, sha256_hex

# Fixed parameters for staff (RFC 9106's second recommendation): staff log in rarely.
STAFF_HASHER = PasswordHasher(time_cost=3, memory_cost=64 * 1024, parallelism=1)
IDLE_TIMEOUT = timedelta(minutes=30)
MAX_SESSION = timedelta(hours=10)
TOTP_STEP_TIMEOUT = timedelta(minutes=5)
TOTP_ISSUER = "Utility broker staff"
TOTP_WINDOW = 1  # one 30-second step either side, for clock drift
LOGIN_RULE = LockoutRule(
    max_attempts=5, lock_minutes=15, growth_factor=2.0, max_lock_minutes=24 * 60,
    until_unlocked=False,
)
STAGE_TOTP = "totp"
STAGE_FULL = "full"


def hash_staff_password(password: str) -> str:
    return on_hashing_threads(lambda: STAFF_HASHER.hash(password))


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return on_hashing_threads(lambda: STAFF_HASHER.hash("no such staff member: equal-time verify"))


def verify_staff_password(stored_hash: str | None, password: str) -> bool:
    """True when ``password`` matches; without a hash a dummy verify keeps the time equal.
    On the hashing threads (broker.passwords): a request thread that ran one 64 MiB staff
    verify would keep the buffer for the life of the process."""
    reference = stored_hash or _dummy_hash()

    def verify() -> bool:
        try:
            return STAFF_HASHER.verify(reference, password)
        except (VerificationError, InvalidHashError):
            return False

    return on_hashing_threads(verify) and bool(stored_hash)


def normalise_staff_email(email: str) -> str:
    return (email or "").strip().lower()


def provisioning_uri(staff: Staff) -> str:
    """The ``otpauth://`` URI for an authenticator app; shown once, at creation."""
    if not staff.totp_secret:
        raise ValueError("staff member has no TOTP secret")
    return pyotp.TOTP(staff.totp_secret).provisioning_uri(name=staff.email, issuer_name=TOTP_ISSUER)


@dataclass(frozen=True)
class NewStaff:
    """A created staff member with the secrets shown exactly once."""

    staff: Staff
    password: str
    totp_uri: str


def create_staff(
    db: Session,
    *,
    email: str,
    name: str,
    roles: list[str],
    tenants: list[str],
    password: str | None = None,
    created_by: int | None = None,
) -> NewStaff:
    """Add a staff member with a fresh TOTP secret; a random first password when none given."""
    password = password or new_token(18)
    staff = Staff(
        email=normalise_staff_email(email),
        name=name.strip(),
        password_hash=hash_staff_password(password),
        totp_secret=pyotp.random_base32(),
        roles=list(roles),
        tenants=list(tenants),
        created_by_staff_id=created_by,
    )
    db.add(staff)
    db.flush()
    return NewStaff(staff, password, provisioning_uri(staff))


def staff_by_email(db: Session, email: str) -> Staff | None:
    return db.scalar(select(Staff).where(Staff.email == normalise_staff_email(email)))


@dataclass(frozen=True)
class PasswordCheck:
    """``outcome``: ok, invalid (unknown email or wrong password, one answer), locked."""

    outcome: str
    staff: Staff | None = None


def check_password(
    db: Session, email: str, password: str, *, source_address: str | None
) -> PasswordCheck:
    """First step of a staff login. Commits the attempt reservation before the slow hash."""
    address = normalise_staff_email(email)
    key = f"staff-login:{sha256_hex(address)}"  # fixed length whatever was typed; no email kept
    reservation = reserve_attempt(db, key, LOGIN_RULE)
    db.commit()
    staff = staff_by_email(db, address)
    if not reservation.allowed:
        _audit_login(db, staff, "staff_login", "refused", "locked", source_address)
        db.commit()
        return PasswordCheck("locked")
    matched = verify_staff_password(staff.password_hash if staff else None, password)
    if not matched or staff is None or staff.disabled:
        _audit_login(db, staff, "staff_login", "refused", "invalid_password", source_address)
        db.commit()
        return PasswordCheck("invalid")
    record_success(db, key)
    return PasswordCheck("ok", staff)


def current_totp_step(now: datetime | None = None) -> int:
    return int((now or utcnow()).timestamp()) // 30


def check_totp(
    db: Session, staff: Staff, code: str, *, source_address: str | None,
    now: datetime | None = None,
) -> bool:
    """Second step: the code must match a step newer than the last one used (no replay).

    The last step is claimed with one conditional UPDATE, so a code accepted by one broker
    process is refused by every other. Guesses count against ``staff-totp:<id>``.
    """
    now = now or utcnow()
    key = f"staff-totp:{staff.id}"
    reservation = reserve_attempt(db, key, LOGIN_RULE, now)
    db.commit()
    typed = "".join((code or "").split())
    step = _matching_step(staff.totp_secret, typed, now) if reservation.allowed else None
    claimed = False
    if step is not None:
        claimed = bool(
            db.execute(
                update(Staff)
                .where(
                    Staff.id == staff.id,
                    or_(Staff.totp_last_step.is_(None), Staff.totp_last_step < step),
                )
                .values(totp_last_step=step, last_login_at=now)
                .execution_options(synchronize_session=False)
            ).rowcount
        )
    if not claimed:
        reason = "locked" if not reservation.allowed else (
            "replayed_code" if step is not None else "invalid_code"
        )
        _audit_login(db, staff, "staff_totp", "refused", reason, source_address)
        db.commit()
        return False
    record_success(db, key)
    _audit_login(db, staff, "staff_login", "ok", "password and totp", source_address)
    return True


def _matching_step(secret: str | None, typed: str, now: datetime) -> int | None:
    if not secret or not typed.isdigit() or len(typed) != 6:
        return None
    totp = pyotp.TOTP(secret)
    step_now = current_totp_step(now)
    found = None
    for offset in range(-TOTP_WINDOW, TOTP_WINDOW + 1):
        step = step_now + offset
        if pyotp.utils.strings_equal(totp.generate_otp(step), typed):
            found = step
    return found


def _audit_login(
    db: Session, staff: Staff | None, event: str, outcome: str, reason: str,
    source_address: str | None,
) -> None:
    audit.record(
        db, event, tenant=None, actor_type="staff", actor_id=staff.id if staff else None,
        source_address=source_address, reason=reason, outcome=outcome,
    )


def start_session(
    db: Session, staff: Staff, *, kind: str, stage: str = STAGE_FULL,
    source_address: str | None = None, now: datetime | None = None,
) -> tuple[StaffSession, str]:
    """A new staff session; returns the row and the token (cookie value or bearer token)."""
    now = now or utcnow()
    token = new_token()
    if stage == STAGE_TOTP:
        idle_until = expires_at = now + TOTP_STEP_TIMEOUT
    else:
        idle_until, expires_at = now + IDLE_TIMEOUT, now + MAX_SESSION
    row = StaffSession(
        token_sha256=sha256_hex(token), staff_id=staff.id, kind=kind, stage=stage,
        source_address=source_address, created_at=now, idle_until=idle_until,
        expires_at=expires_at,
    )
    db.add(row)
    db.flush()
    return row, token


def load_session(
    db: Session, token: str | None, *, kind: str, stage: str = STAGE_FULL,
    now: datetime | None = None,
) -> tuple[StaffSession, Staff] | None:
    """The live session and its staff member; using a full session extends its idle time."""
    if not token:
        return None
    now = now or utcnow()
    row = db.execute(
        select(StaffSession, Staff)
        .join(Staff, Staff.id == StaffSession.staff_id)
        .where(
            StaffSession.token_sha256 == sha256_hex(token),
            StaffSession.kind == kind,
            StaffSession.stage == stage,
            StaffSession.revoked_at.is_(None),
            StaffSession.idle_until > now,
            StaffSession.expires_at > now,
            Staff.disabled.is_(False),
        )
    ).first()
    if row is None:
        return None
    session, staff = row[0], row[1]
    if stage == STAGE_FULL:
        session.idle_until = min(now + IDLE_TIMEOUT, session.expires_at)
    return session, staff


def end_session(db: Session, session: StaffSession) -> None:
    session.revoked_at = utcnow()


def end_all_staff_sessions(db: Session, staff_id: int) -> int:
    return int(
        db.execute(
            update(StaffSession)
            .where(StaffSession.staff_id == staff_id, StaffSession.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        ).rowcount or 0
    )


def csrf_token_for(secret_key: str, session_token: str) -> str:
    """The API's CSRF token for cookie-authenticated calls: bound to the session token."""
    return keyed_hmac(secret_key, session_token, purpose="staff-api-csrf")


def staff_count(db: Session) -> int:
    return db.scalar(select(func.count(Staff.id))) or 0
