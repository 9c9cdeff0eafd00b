"""Browser login sessions per tenant, kept server-side so they can be ended from anywhere.

The cookie ``bsid_<tenant>`` holds a random token; the database keeps its SHA-256. Setting a
new password, support, or logout revokes rows, and the next request sees it.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.orm import Session, make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value

from .config import TenantConfig
from .models import LoginSession, User, utcnow
from .security import new_token, sha256_hex

_INSERT_SESSION = insert(LoginSession.__table__).returning(LoginSession.__table__.c.id)
_STAMP_LAST_LOGIN = (
    update(User.__table__)
    .where(User.__table__.c.id == bindparam("user"))
    .values(last_login_at=bindparam("now"))
)


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
    user: User,
    *,
    amr: list[str],
    acr: str = "low",
    remember: bool = False,
) -> tuple[LoginSession, str]:
    """Open a session for ``user``; returns the row and the token for the cookie."""
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
    # Two Core statements instead of an ORM flush (a login's largest cost after argon2); the
    # row is then attached to ``db`` as persistent, so later edits to it are saved as usual.
    connection = db.connection()
    login_id = connection.execute(_INSERT_SESSION, values).scalar_one()
    connection.execute(_STAMP_LAST_LOGIN, {"user": user.id, "now": now})
    set_committed_value(user, "last_login_at", now)
    login = LoginSession(id=login_id, revoked_at=None, **values)
    make_transient_to_detached(login)
    db.add(login)
    return login, token


def load(db: Session, tenant: str, token: str | None) -> tuple[LoginSession, User] | None:
    """The live session and its user for a cookie token, in one query; None when not valid."""
    if not token:
        return None
    params = {"digest": sha256_hex(token), "tenant": tenant, "now": utcnow()}
    row = db.execute(_LIVE_SESSION, params).first()
    return (row[0], row[1]) if row else None


def end(db: Session, login: LoginSession) -> None:
    login.revoked_at = utcnow()


def end_all_for_user(db: Session, user_id: int, *, keep_id: int | None = None) -> int:
    """Revoke every live session of a user (e.g. after a password reset); returns how many."""
    statement = (
        update(LoginSession)
        .where(LoginSession.user_id == user_id, LoginSession.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    if keep_id is not None:
        statement = statement.where(LoginSession.id != keep_id)
    return db.execute(statement).rowcount or 0
