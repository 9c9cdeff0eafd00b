"""The token endpoint's statements, in SQLAlchemy Core: the hot path of every portal.

Why Core and not the ORM: a grant touches two or three rows once and never edits them again,
so the ORM's identity map and unit of work only cost CPU (they were half of a grant's time).
The statements run on the session's connection directly (``db.connection().execute``),
which skips the ORM's per-statement bookkeeping for Core statements; those of the success
path also skip SQLAlchemy's execution layer on PostgreSQL (``broker.direct_sql``). Each
redemption is one ``UPDATE ... RETURNING`` that both claims the code or refresh token and
checks everything the grant depends on (client, expiry, user still active, session still live),
so the success path is: claim, (customer accounts,) insert the new token, commit.

A claim that matches nothing is then explained by one ``SELECT`` (``explain_*``), because the
reasons differ in what they trigger: a replayed code or rotated refresh token revokes what was
issued from it; an expired one does not.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, exists, insert, select, update
from sqlalchemy.orm import Session

from flows.binding import ACCOUNT_CLAIM_COLUMNS, account_claim

from ..direct_sql import DirectStatement
from ..models import AuthorizationCode, Binding, CustomerAccount, LoginSession, Token, User

codes = AuthorizationCode.__table__
tokens = Token.__table__
users = User.__table__
login_sessions = LoginSession.__table__


@dataclass(frozen=True, slots=True)
class TokenHolder:
    """The user as a grant needs them: id for the new token, claims for the ID token."""

    id: int
    subject: str
    name: str
    locale: str | None
    email: str | None
    email_verified: bool
    phone: str | None
    customer_accounts: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class RedeemedCode:
    code_sha256: str
    login_session_id: int | None
    redirect_uri: str
    scope: str
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    auth_time: datetime
    amr: list[Any]
    acr: str


@dataclass(frozen=True, slots=True)
class RotatedToken:
    """The refresh token just rotated: what its successor inherits."""

    id: int
    user_id: int
    family_id: str
    code_sha256: str | None
    login_session_id: int | None
    scope: str
    auth_time: datetime
    amr: list[Any]
    acr: str


_HOLDER = (users.c.id, users.c.subject, users.c.name, users.c.locale, users.c.email,
           users.c.email_verified, users.c.phone)
_CODE = (codes.c.code_sha256, codes.c.login_session_id, codes.c.redirect_uri, codes.c.scope,
         codes.c.nonce, codes.c.code_challenge, codes.c.code_challenge_method, codes.c.auth_time,
         codes.c.amr, codes.c.acr)
_ROTATED = (tokens.c.id, tokens.c.user_id, tokens.c.family_id, tokens.c.code_sha256,
            tokens.c.login_session_id, tokens.c.scope, tokens.c.auth_time, tokens.c.amr,
            tokens.c.acr)

_USER_ACTIVE = exists().where(users.c.status == "active")
_SESSION_ENDED = exists().where(
    login_sessions.c.id == codes.c.login_session_id, login_sessions.c.revoked_at.is_not(None)
)

# Built once, executed with parameters: building a statement costs more CPU than running it.
_REDEEM_CODE = (
    update(codes)
    .where(
        codes.c.code_sha256 == bindparam("digest"),
        codes.c.used_at.is_(None),
        codes.c.tenant == bindparam("in_tenant"),
        codes.c.client_id == bindparam("for_client"),
        codes.c.expires_at > bindparam("now"),
        _USER_ACTIVE.where(users.c.id == codes.c.user_id),
        ~_SESSION_ENDED,
    )
    .values(used_at=bindparam("now"))
    .returning(*_CODE, codes.c.user_id)
)
_CODE_STATE = select(codes.c.used_at, codes.c.tenant, codes.c.client_id).where(
    codes.c.code_sha256 == bindparam("digest")
)
_ROTATE_REFRESH_TOKEN = DirectStatement(
    update(tokens)
    .where(
        tokens.c.refresh_token_sha256 == bindparam("digest"),
        tokens.c.rotated_at.is_(None),
        tokens.c.revoked_at.is_(None),
        tokens.c.refresh_expires_at > bindparam("now"),
        tokens.c.tenant == bindparam("in_tenant"),
        tokens.c.client_id == bindparam("for_client"),
        _USER_ACTIVE.where(users.c.id == tokens.c.user_id),
    )
    .values(rotated_at=bindparam("now"))
    .returning(*_ROTATED)
)
_REFRESH_TOKEN_STATE = select(tokens.c.family_id, tokens.c.rotated_at).where(
    tokens.c.refresh_token_sha256 == bindparam("digest")
)
# The user and their customer accounts in one statement (one row per account, or one row).
_TOKEN_HOLDER = (
    select(*_HOLDER, *ACCOUNT_CLAIM_COLUMNS)
    .select_from(users)
    .outerjoin(Binding, Binding.user_id == users.c.id)
    .outerjoin(CustomerAccount, CustomerAccount.id == Binding.customer_account_id)
    .where(users.c.id == bindparam("user_id"))
    .order_by(CustomerAccount.number)
)
# What ``grants.token_values`` gives for a new token: one fixed statement for all of them.
TOKEN_COLUMNS = frozenset((
    "tenant", "client_id", "user_id", "login_session_id", "family_id", "code_sha256",
    "access_token_sha256", "refresh_token_sha256", "scope", "auth_time", "amr", "acr",
    "issued_at", "access_expires_at", "refresh_expires_at",
))
_INSERT_TOKEN = DirectStatement(
    insert(tokens).values({name: bindparam(name) for name in sorted(TOKEN_COLUMNS)})
)
# PostgreSQL: the redemption and the token holder in one round trip, the UPDATE ... RETURNING
# as a data-modifying CTE joined with the user and their accounts. (SQLite has no such CTE.)
_REDEEMED = _REDEEM_CODE.cte("redeemed")
_REDEEM_CODE_WITH_HOLDER = DirectStatement(
    select(*(_REDEEMED.c[column.name] for column in _CODE), *_HOLDER, *ACCOUNT_CLAIM_COLUMNS)
    .select_from(_REDEEMED)
    .join(users, users.c.id == _REDEEMED.c.user_id)
    .outerjoin(Binding, Binding.user_id == users.c.id)
    .outerjoin(CustomerAccount, CustomerAccount.id == Binding.customer_account_id)
    .order_by(CustomerAccount.number)
)


def redeem_code(
    db: Session, digest: str, tenant: str, client_id: str, now: datetime
) -> tuple[RedeemedCode, TokenHolder] | None:
    """Mark the code used if it is this portal's, unused, unexpired, its user active and its
    login session not ended; the row lock makes a concurrent second redemption wait, then miss.
    The user comes with it on PostgreSQL; on SQLite, whose RETURNING sees only the updated
    table, from a second statement."""
    params = {"digest": digest, "in_tenant": tenant, "for_client": client_id, "now": now}
    connection = db.connection()
    if connection.dialect.name == "postgresql":
        rows = _REDEEM_CODE_WITH_HOLDER.all(connection, params)
        if not rows:
            return None
        width = len(_CODE)
        return RedeemedCode(*rows[0][:width]), _holder_of([row[width:] for row in rows])
    row = connection.execute(_REDEEM_CODE, params).first()
    if row is None:
        return None
    *code, user_id = row
    holder = token_holder(db, user_id)
    return None if holder is None else (RedeemedCode(*code), holder)


def explain_unredeemed_code(db: Session, digest: str, tenant: str, client_id: str) -> bool:
    """After a failed redemption: True when the code was this portal's and already used (a
    replay, which revokes what the code gave); False for unknown, foreign, expired or ended."""
    row = db.connection().execute(_CODE_STATE, {"digest": digest}).first()
    if row is None or row.client_id != client_id or row.tenant != tenant:
        return False
    return row.used_at is not None


def rotate_refresh_token(
    db: Session, digest: str, tenant: str, client_id: str, now: datetime
) -> RotatedToken | None:
    """Mark the refresh token rotated if it is this portal's, live, unexpired and its user
    active; its successor is inserted in the same transaction."""
    params = {"digest": digest, "in_tenant": tenant, "for_client": client_id, "now": now}
    row = _ROTATE_REFRESH_TOKEN.first(db.connection(), params)
    return None if row is None else RotatedToken(*row)


def explain_unrotated_token(db: Session, digest: str) -> str | None:
    """After a failed rotation: the family to revoke when the token had already been rotated
    (a replay: someone holds a copy), else None."""
    row = db.connection().execute(_REFRESH_TOKEN_STATE, {"digest": digest}).first()
    if row is None or row.rotated_at is None:
        return None
    return str(row.family_id)


def token_holder(db: Session, user_id: int) -> TokenHolder | None:
    rows = db.connection().execute(_TOKEN_HOLDER, {"user_id": user_id}).all()
    return _holder_of(rows) if rows else None


def _holder_of(rows: list[Any]) -> TokenHolder:
    """Rows of the user's columns then one customer account's (NULLs when they have none)."""
    width = len(_HOLDER)
    accounts = [account_claim(*row[width:]) for row in rows if row[width] is not None]
    return TokenHolder(*rows[0][:width], customer_accounts=accounts)


def insert_token(db: Session, values: dict[str, Any]) -> None:
    """Insert a new token row; ``values`` has exactly ``TOKEN_COLUMNS``."""
    if values.keys() != TOKEN_COLUMNS:
        raise ValueError(f"token columns differ: {sorted(values.keys() ^ TOKEN_COLUMNS)}")
    _INSERT_TOKEN.execute(db.connection(), values)


@dataclass(frozen=True, slots=True)
class UserRef:
    """The user of a refresh grant: only the id is needed (no ID token is issued)."""

    id: int
