"""Login with email and password, with the tenant's lockout.

The order of steps is the security argument:

1. The email is normalised and looked up. An unknown email still takes an attempt from a
   counter of its own (keyed by an HMAC of tenant and email) and still costs one argon2 verify,
   so neither the answers, their sequence (invalid, invalid, locked) nor the time taken tell
   whether the address is registered.
2. One attempt is reserved on the user's row and committed *before* the hash is checked:
   however many processes guess at once, exactly ``max_attempts`` guesses reach the hash, and a
   locked account refuses even the right password.
3. Only a right password may learn that the account is pending activation or disabled; a
   wrong one always hears "invalid".

``authenticate_password`` commits the reservation before the verify, and a refusal's outcome.
A success's bookkeeping (counter reset, audit record) is not written: the result carries it as
``accepted``, for ``broker.login_session.start`` to write with the session it opens (one
statement on PostgreSQL), or for ``accepted.write`` when a second factor comes first. Until
then the counter holds the try this login took.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy.orm import Session, make_transient_to_detached
from sqlalchemy.orm.util import identity_key

from broker import audit
from broker import db as database
from broker.attempts import (
    LOGIN_COLUMNS,
    AttemptReservation,
    LoginAccount,
    record_failure,
    record_login_failure,
    record_login_success,
    reserve_attempt,
    reserve_login_attempt_by_email,
    rule_from_config,
)
from broker.config import TenantConfig
from broker.login_session import PasswordAccepted
from broker.models import User, utcnow
from broker.passwords import hash_password, needs_rehash, verify_password
from broker.security import keyed_hmac

from .unlock import send_unlock_link

Outcome = Literal["ok", "invalid", "locked", "not_activated", "disabled"]


@dataclass(frozen=True)
class PasswordLoginResult:
    """``user`` is set only for ``ok``; ``locked_until`` only for ``locked`` (the far-future
    ``policies.lockout.LOCKED_UNTIL_UNLOCKED`` when only an unlock ends it)."""

    outcome: Outcome
    user: LoginAccount | None = None
    locked_until: datetime | None = None
    accepted: PasswordAccepted | None = None  # set for ``ok``: the caller writes it


def normalise_email(email: str) -> str:
    """The form in which emails are stored and looked up: trimmed and lower-case."""
    return email.strip().lower()


def unknown_email_key(tenant: str, email: str, hmac_key: str) -> str:
    """The attempt counter for an address with no account; keyed so the table leaks no emails."""
    return "login-unknown:" + keyed_hmac(hmac_key, f"{tenant}\x00{email}", purpose="login-email")


def authenticate_password(
    db: Session,
    tenant: TenantConfig,
    email: str,
    password: str,
    *,
    source_address: str | None,
    hmac_key: str,
    public_url: str,
    now: datetime | None = None,
) -> PasswordLoginResult:
    """Check one email + password guess at ``tenant``, counting it against the lockout.
    On success the counter reset and audit record come back as ``accepted``, for the caller
    to write (module docstring)."""
    now = now or utcnow()
    email = normalise_email(email)
    rule = rule_from_config(tenant.lockout)
    # No account has a NUL in its email (registration refuses one), and PostgreSQL cannot
    # even compare one: such an address is unknown, answered like any other.
    if "\x00" in email:
        return _unknown_email(db, tenant, email, password, source_address, hmac_key, now)
    attempt = reserve_login_attempt_by_email(db, tenant.slug, email, rule, now)
    if attempt.user_id is None:
        return _unknown_email(db, tenant, email, password, source_address, hmac_key, now)
    reservation = attempt.reservation
    if not reservation.allowed:
        _audit_failure(db, tenant, attempt.user_id, source_address, "account locked")
        db.commit()
        return PasswordLoginResult("locked", locked_until=reservation.locked_until)
    # Commit the reservation before the verify. A statement standing alone (PostgreSQL,
    # ``broker.db.statements_stand_alone``) committed itself: its connection is kept for the
    # session's statement. Every path below that writes more than that one statement ends
    # the mode first (``database.end_stand_alone``), so that its writes are one transaction.
    if not database.runs_stand_alone(db):
        db.commit()
    account = attempt.user
    assert account is not None  # noqa: S101 - set whenever an attempt was taken

    if not verify_password(tenant, account.password_hash, password):
        database.end_stand_alone(db)
        locked_until = record_login_failure(db, account.id, rule, now)
        _audit_failure(db, tenant, account.id, source_address, "wrong password")
        if locked_until is not None and reservation.last_attempt:
            _announce_lock(db, tenant, _attached_user(db, account), locked_until,
                           source_address, public_url, now)
        db.commit()
        if locked_until is not None:
            return PasswordLoginResult("locked", locked_until=locked_until)
        return PasswordLoginResult("invalid")

    # ``account`` was read at the start of this request; its status is not read again here
    # (one query per login saved). A support action landing during the verify cannot be
    # bypassed: every later request loads the session joined with ``status = 'active'``.
    if account.status != "active":
        database.end_stand_alone(db)
        record_login_success(db, account.id)
        outcome: Outcome = "not_activated" if account.status == "pending" else "disabled"
        _audit_failure(db, tenant, account.id, source_address, outcome.replace("_", " "))
        db.commit()
        return PasswordLoginResult(outcome)
    if account.password_hash and needs_rehash(tenant, account.password_hash):
        database.end_stand_alone(db)  # the new hash is saved with the session, together
        _attached_user(db, account).password_hash = hash_password(tenant, password)
    # last_login_at is stamped by ``broker.login_session.start`` once the login completes
    # (after any second factor), in the same transaction as the session.
    accepted = PasswordAccepted(account.id, {"at": utcnow(), **audit.entry(
        "login_succeeded",
        tenant=tenant.slug,
        actor_type="user",
        actor_id=account.id,
        target_user_id=account.id,
        source_address=source_address,
        method="password",
    )})
    return PasswordLoginResult("ok", user=account, accepted=accepted)


def _attached_user(db: Session, account: LoginAccount) -> User:
    """The ``User`` for the account the reservation read, attached to ``db`` as if loaded (no
    second query), for the paths that change it. Columns not read are expired: the ORM loads
    them on first use."""
    existing = db.identity_map.get(identity_key(User, account.id))
    if existing is not None:  # this session had loaded the account already: that object
        return existing  # type: ignore[no-any-return]
    user = User(**{name: getattr(account, name) for name in LOGIN_COLUMNS})
    make_transient_to_detached(user)
    db.add(user)
    return user


def _unknown_email(
    db: Session,
    tenant: TenantConfig,
    email: str,
    password: str,
    source_address: str | None,
    hmac_key: str,
    now: datetime,
) -> PasswordLoginResult:
    """The same steps, answers and cost as for a registered address, without an account."""
    rule = rule_from_config(tenant.lockout)
    key = unknown_email_key(tenant.slug, email, hmac_key)
    reservation: AttemptReservation = reserve_attempt(db, key, rule, now)
    db.commit()
    if not reservation.allowed:
        _audit_failure(db, tenant, None, source_address, "account locked")
        db.commit()
        return PasswordLoginResult("locked", locked_until=reservation.locked_until)
    verify_password(tenant, None, password)
    locked_until = record_failure(db, key, rule, now)
    _audit_failure(db, tenant, None, source_address, "unknown email")
    if locked_until is not None and reservation.last_attempt:
        audit.record(
            db,
            "account_locked",
            tenant=tenant.slug,
            source_address=source_address,
            reason="failed password attempts at an unknown email",
            outcome="locked",
        )
    db.commit()
    if locked_until is not None:
        return PasswordLoginResult("locked", locked_until=locked_until)
    return PasswordLoginResult("invalid")


def _audit_failure(
    db: Session,
    tenant: TenantConfig,
    user_id: int | None,
    source_address: str | None,
    reason: str,
) -> None:
    audit.record(
        db,
        "login_failed",
        tenant=tenant.slug,
        actor_type="user" if user_id else "anonymous",
        actor_id=user_id,
        target_user_id=user_id,
        source_address=source_address,
        reason=reason,
        outcome="refused",
        method="password",
    )


def _announce_lock(
    db: Session,
    tenant: TenantConfig,
    user: User,
    locked_until: datetime,
    source_address: str | None,
    public_url: str,
    now: datetime,
) -> None:
    """Audit the new lock and email the owner an unlock link, in the same transaction."""
    audit.record(
        db,
        "account_locked",
        tenant=tenant.slug,
        target_user_id=user.id,
        source_address=source_address,
        reason=f"{tenant.lockout.max_attempts} failed password attempts",
        outcome="locked",
        locked_until=locked_until.isoformat(),
    )
    send_unlock_link(
        db, tenant, user, locked_until=locked_until, public_url=public_url, now=now
    )
