"""Browser login sessions per tenant, kept server-side so they can be ended from anywhere.

The cookie ``bsid_<tenant>`` holds a random token; the database keeps its SHA-256. Setting a
new password, support, or logout revokes rows, and the next request sees it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.orm import Session

from . import audit
from .attempts import USER_COUNTER, LoginAccount, record_login_success
from .config import TenantConfig
from .direct_sql import DirectStatement
from .models import AuditEvent, LoginSession, Token, User, utcnow
from .security import new_token, sha256_hex

_SESSIONS, _USERS, _AUDIT = LoginSession.__table__, User.__table__, AuditEvent.__table__
_SESSION_COLUMNS = ("token_sha256", "tenant", "user_id", "auth_time", "amr", "acr", "remember",
                    "expires_at", "created_at")

_INSERT_SESSION = insert(_SESSIONS).returning(_SESSIONS.c.id)
_STAMP_LAST_LOGIN = (
    update(_USERS).where(_USERS.c.id == bindparam("user")).values(last_login_at=bindparam("now"))
)


def _start_after_password() -> Any:
    """PostgreSQL: a right password's bookkeeping and the new session in one statement, so
    one round trip instead of four. The session row is the INSERT; the user's attempt counter
    reset (``USER_COUNTER.reset``) with the last-login stamp, and the audit record, are
    data-modifying CTEs. Every value is a named parameter that matches no column name:
    SQLAlchemy adds a parameter named like a column to the SET of an UPDATE in the statement."""
    accepted = USER_COUNTER.reset.values(last_login_at=bindparam("stamp_now")).cte("accepted")
    audited = insert(_AUDIT).values(
        {column: bindparam(f"audit_{column}") for column in audit.ENTRY_COLUMNS}
    ).cte("audited")
    return (
        insert(_SESSIONS)
        .values({column: bindparam(f"session_{column}") for column in _SESSION_COLUMNS})
        .add_cte(accepted)
        .add_cte(audited)
        .returning(_SESSIONS.c.id)
    )


_START_AFTER_PASSWORD = DirectStatement(_start_after_password())


@dataclass(frozen=True, slots=True)
class StartedLogin:
    """A session just opened: its row's id, and what its cookie needs. Not an ORM
    ``LoginSession``: building and attaching one cost a login about 0.08 ms (BENCHMARKS.md);
    load the row by id to change it."""

    id: int
    expires_at: datetime
    remember: bool


@dataclass(frozen=True)
class PasswordAccepted:
    """What a right password leaves to write: the user's attempt counter reset and the
    ``login_succeeded`` audit record (``flows.password_login`` builds it). ``start`` writes it
    with the session, one statement on PostgreSQL; when no session starts yet (a second factor
    is due), ``write`` writes it at once. Until one of the two runs, the counter still holds
    the try this login took."""

    user_id: int
    audit_entry: dict[str, Any]  # ``audit.entry``'s columns, ``at`` included

    def write(self, db: Session) -> None:
        record_login_success(db, self.user_id)
        audit.record_entry(db, self.audit_entry)


# Every page of a signed-in browser runs this one: built once (building costs more than running).
_LIVE_SESSION = (
    select(LoginSession, User)
    .join(User, User.id == LoginSession.user_id)
    .where(
        LoginSession.token_sha256 == bindparam("digest"),
        LoginSession.tenant == bindparam("tenant"),
        LoginSession.revoked_at.is_(None),
        LoginSession.expires_at > bindparam("now"),
        User.status == "active",
    )
)


def cookie_name(tenant: str) -> str:
    return f"bsid_{tenant}"


def start(
    db: Session,
    tenant: TenantConfig,
    user: User | LoginAccount,
    *,
    amr: list[str],
    acr: str = "low",
    remember: bool = False,
    accepted: PasswordAccepted | None = None,
) -> tuple[StartedLogin, str]:
    """Open a session for ``user``; returns what the cookie needs and the token for it. With
    ``accepted``, the right password's bookkeeping is written in the same statement."""
    token = new_token()
    now = utcnow()
    if remember:
        lifetime = timedelta(days=tenant.remember_me_days)
    else:
        lifetime = timedelta(hours=tenant.session_hours)
    values = {
        "token_sha256": sha256_hex(token),
        "tenant": tenant.slug,
        "user_id": user.id,
        "auth_time": now,
        "amr": list(amr),
        "acr": acr,
        "remember": remember,
        "expires_at": now + lifetime,
        "created_at": now,
    }
    # Core statements instead of an ORM flush and object (a login's largest costs after
    # argon2). Each network round trip costs more than its CPU here: the worker's other
    # threads run argon2 meanwhile, and the request resumes with cold caches (BENCHMARKS.md).
    connection = db.connection()
    if accepted is not None and accepted.user_id != user.id:
        raise ValueError("the accepted password is another user's")
    if accepted is not None and connection.dialect.name == "postgresql":
        started = _START_AFTER_PASSWORD.first(connection, {
            "row": accepted.user_id, "stamp_now": now,
            **{f"session_{column}": values[column] for column in _SESSION_COLUMNS},
            **{f"audit_{column}": value for column, value in accepted.audit_entry.items()},
        })
        assert started is not None  # noqa: S101 - an INSERT ... RETURNING returns its row
        login_id = started[0]
    else:
        if accepted is not None:
            accepted.write(db)
        login_id = connection.execute(_INSERT_SESSION, values).scalar_one()
        connection.execute(_STAMP_LAST_LOGIN, {"user": user.id, "now": now})
    return StartedLogin(login_id, values["expires_at"], remember), token


def load(db: Session, tenant: str, token: str | None) -> tuple[LoginSession, User] | None:
    """The live session and its user for a cookie token, in one query; None when not valid."""
    if not token:
        return None
    params = {"digest": sha256_hex(token), "tenant": tenant, "now": utcnow()}
    row = db.execute(_LIVE_SESSION, params).first()
    return (row[0], row[1]) if row else None


def end(db: Session, login: LoginSession) -> None:
    login.revoked_at = utcnow()


ENDED_SESSIONS = "ended_login_sessions"  # db.info key: (tenant, subject, session, portals)


def end_all_for_user(db: Session, user_id: int, *, keep_id: int | None = None) -> int:
    """Revoke every live session of a user (after a password reset or change, a support
    sign-out, a disable); returns how many. The portals that got tokens in them are noted in
    ``db.info[ENDED_SESSIONS]``, for their back-channel logout once this commits
    (broker.oidc.logout.notify_after_commit)."""
    statement = (
        update(LoginSession)
        .where(LoginSession.user_id == user_id, LoginSession.revoked_at.is_(None))
        .values(revoked_at=utcnow())
        .returning(LoginSession.id)
        .execution_options(synchronize_session=False)
    )
    if keep_id is not None:
        statement = statement.where(LoginSession.id != keep_id)
    ended = list(db.scalars(statement))
    if ended:
        _note_portals_of(db, user_id, ended)
    return len(ended)


def _note_portals_of(db: Session, user_id: int, ended: list[int]) -> None:
    portals: dict[int, set[str]] = {}
    for session_id, client_id in db.execute(
        select(Token.login_session_id, Token.client_id)
        .where(Token.login_session_id.in_(ended)).distinct()
    ):
        portals.setdefault(session_id, set()).add(client_id)
    if not portals:
        return
    tenant, subject = db.execute(select(User.tenant, User.subject).where(User.id == user_id)).one()
    db.info.setdefault(ENDED_SESSIONS, []).extend(
        (tenant, subject, session_id, clients) for session_id, clients in portals.items())
