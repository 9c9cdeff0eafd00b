"""Proof, again, that the person at the keyboard owns the account, before a change that a
stolen session must not be able to make: deleting the account, changing its email address.

The proof is the current password, its guesses counted with the profile's password change
(one lockout for every form that asks for it); an account without a password needs a login no
older than ``FRESH_LOGIN_MINUTES`` instead.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from .. import audit
from ..attempts import record_failure, record_success, reserve_attempt, rule_from_config
from ..config import TenantConfig
from ..models import LoginSession, User, utcnow
from ..passwords import verify_password
from ..state import db
from .tenancy import source_address

FRESH_LOGIN_MINUTES = 5

Refusal = Literal["login_again", "locked", "wrong_password"]


def fresh(login: LoginSession) -> bool:
    return utcnow() - login.auth_time <= timedelta(minutes=FRESH_LOGIN_MINUTES)


def reauthenticate(tenant: TenantConfig, login: LoginSession, user: User, password: str, *,
                   refused_event: str) -> Refusal | None:
    """None when the person proved it is them just now; else why not. A wrong password is
    audited as ``refused_event``."""
    session = db()
    if user.password_hash is None:
        return None if fresh(login) else "login_again"
    key = f"password-change:{user.id}"
    rule = rule_from_config(tenant.lockout)
    reservation = reserve_attempt(session, key, rule)
    session.commit()
    if not reservation.allowed:
        return "locked"
    if not verify_password(tenant, user.password_hash, password):
        locked_until = record_failure(session, key, rule)
        audit.record(session, refused_event, tenant=tenant.slug, actor_type="user",
                     actor_id=user.id, target_user_id=user.id, source_address=source_address(),
                     reason="wrong current password", outcome="refused")
        session.commit()
        return "locked" if locked_until is not None else "wrong_password"
    record_success(session, key)
    return None
