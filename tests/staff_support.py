"""Helpers for the support console, admin API and staff action tests: a broker with two
utilities in play, staff members with known passwords and TOTP secrets, customers to help."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from typing import Any

import pyotp
from sqlalchemy import func, select

from broker.app import create_app
from broker.demo import demo_tenants
from broker.models import (
    AuditEvent,
    Binding,
    CustomerAccount,
    LoginSession,
    OutboxMessage,
    RecoveryCode,
    Staff,
    Token,
    User,
    utcnow,
)
from broker.security import new_token, sha256_hex
from broker.staff import auth

from .conftest import PORTAL_SECRET, make_config

TENANT_A = "fjordvarme"  # seed 001: customer number + PIN, forgot PIN by email or SMS
TENANT_B = "aaro-vand"  # seed 000: another utility, whose users tenant A's staff must not touch
STAFF_PASSWORD = "staff-Password-for-tests-1"


@lru_cache(maxsize=1)
def staff_password_hash() -> str:
    """One argon2 hash for every test staff member (hashing costs tens of milliseconds)."""
    return auth.hash_staff_password(STAFF_PASSWORD)


def make_app(database_url: str, **overrides: Any):  # type: ignore[no-untyped-def]
    tenants = demo_tenants(PORTAL_SECRET, "http://portal.test", "http://emulator.test")
    for tenant in tenants.values():
        tenant.update(argon2_time_cost=1, argon2_memory_kib=8192, resend_cooldown_seconds=0)
    application = create_app(make_config(database_url, tenants=tenants, **overrides))
    application.config["TESTING"] = True
    return application


def sessions(app):  # type: ignore[no-untyped-def]
    return app.extensions["broker"].sessions


def config(app):  # type: ignore[no-untyped-def]
    return app.extensions["broker"].config


@dataclass(frozen=True)
class StaffMember:
    id: int
    email: str
    totp_secret: str


def add_staff(app, email: str, roles: list[str], tenants: list[str]) -> StaffMember:  # type: ignore[no-untyped-def]
    secret = pyotp.random_base32()
    with sessions(app).begin() as db:
        staff = Staff(email=email, name=email.split("@")[0], password_hash=staff_password_hash(),
                      totp_secret=secret, roles=roles, tenants=tenants)
        db.add(staff)
        db.flush()
        return StaffMember(staff.id, email, secret)


def staff_token(app, member: StaffMember, kind: str = "bearer") -> str:  # type: ignore[no-untyped-def]
    """A signed-in session without going through the (slow) password step."""
    with sessions(app).begin() as db:
        staff = db.get(Staff, member.id)
        _row, token = auth.start_session(db, staff, kind=kind)
        return token


def add_user(app, tenant: str, email: str, **fields: Any) -> int:  # type: ignore[no-untyped-def]
    values: dict[str, Any] = {"status": "active", "email_verified": True, "name": "Kari Nordmann",
                              "phone": "+4791234567", "password_hash": "argon2-not-used"}
    values.update(fields)
    with sessions(app).begin() as db:
        user = User(tenant=tenant, subject=new_token(16), email=email, **values)
        db.add(user)
        db.flush()
        return user.id


def add_account(app, tenant: str, number: str, **fields: Any) -> int:  # type: ignore[no-untyped-def]
    with sessions(app).begin() as db:
        account = CustomerAccount(tenant=tenant, number=number, name="Kari Nordmann",
                                  address_label="Fjordgata 1", **fields)
        db.add(account)
        db.flush()
        return account.id


def bind(app, user_id: int, account_id: int, role: str = "owner") -> None:  # type: ignore[no-untyped-def]
    with sessions(app).begin() as db:
        db.add(Binding(user_id=user_id, customer_account_id=account_id, role=role, proof="pin"))


def give_sessions_and_tokens(app, user_id: int, tenant: str) -> None:  # type: ignore[no-untyped-def]
    now = utcnow()
    with sessions(app).begin() as db:
        login = LoginSession(token_sha256=sha256_hex(new_token()), tenant=tenant, user_id=user_id,
                             expires_at=now + timedelta(hours=1))
        db.add(login)
        db.flush()
        db.add(Token(tenant=tenant, client_id="portal", user_id=user_id,
                     login_session_id=login.id, family_id=new_token(8),
                     access_token_sha256=sha256_hex(new_token()),
                     refresh_token_sha256=sha256_hex(new_token()), scope="openid",
                     auth_time=now, access_expires_at=now + timedelta(minutes=10),
                     refresh_expires_at=now + timedelta(days=1)))


def lock(app, user_id: int) -> None:  # type: ignore[no-untyped-def]
    with sessions(app).begin() as db:
        user = db.get(User, user_id)
        user.failed_logins, user.lock_count = 3, 1
        user.locked_at, user.locked_until = utcnow(), utcnow() + timedelta(hours=1)


def enrol_totp(app, user_id: int) -> None:  # type: ignore[no-untyped-def]
    with sessions(app).begin() as db:
        db.get(User, user_id).totp_secret = pyotp.random_base32()
        db.add_all([RecoveryCode(user_id=user_id, code_hmac=f"{n:064d}") for n in range(3)])


def audit_records(app, **filters: Any) -> list[AuditEvent]:  # type: ignore[no-untyped-def]
    with sessions(app)() as db:
        statement = select(AuditEvent).order_by(AuditEvent.id)
        for name, value in filters.items():
            statement = statement.where(getattr(AuditEvent, name) == value)
        return list(db.scalars(statement))


def staff_records(app) -> list[AuditEvent]:  # type: ignore[no-untyped-def]
    """Records of actions taken by staff on customers (logins excluded)."""
    return [r for r in audit_records(app, actor_type="staff") if r.target_user_id is not None]


def get_user(app, user_id: int) -> User:  # type: ignore[no-untyped-def]
    with sessions(app)() as db:
        return db.get(User, user_id)


def count(app, model: Any, *conditions: Any) -> int:  # type: ignore[no-untyped-def]
    with sessions(app)() as db:
        return db.scalar(select(func.count()).select_from(model).where(*conditions)) or 0


@dataclass
class Scene:
    """Two utilities, their staff, and a customer at each."""

    agent_a: StaffMember
    admin_a: StaffMember
    agent_b: StaffMember
    user_a: int
    user_b: int
    account_a: int
    account_a_number: str


def build_scene(app) -> Scene:  # type: ignore[no-untyped-def]
    agent_a = add_staff(app, "agent.a@fjordvarme.test", ["support_agent"], [TENANT_A])
    admin_a = add_staff(app, "admin.a@fjordvarme.test", ["tenant_admin"], [TENANT_A])
    agent_b = add_staff(app, "agent.b@aarovand.test", ["support_agent"], [TENANT_B])
    user_a = add_user(app, TENANT_A, "kari@example.com")
    user_b = add_user(app, TENANT_B, "jens@example.com", name="Jens Jensen", phone="+4520123456")
    account_a = add_account(app, TENANT_A, "100234", email="kari@example.com",
                            phone="+4791234567")
    return Scene(agent_a, admin_a, agent_b, user_a, user_b, account_a, "100234")


# What each action needs to succeed, given a scene prepared by ``prepare``.
ACTION_PARAMS: dict[str, dict[str, str]] = {
    "bind_customer": {"customer_number": "100 234", "role": "delegate"},
    "unbind_customer": {"customer_number": "100234"},
    "send_binding_pin": {"customer_number": "100234", "channel": "sms"},
}


def prepare(app, scene: Scene, action: str) -> None:  # type: ignore[no-untyped-def]
    """Put the user in the state where ``action`` makes sense."""
    if action == "unlock":
        lock(app, scene.user_a)
    elif action == "resend_activation":
        with sessions(app).begin() as db:
            user = db.get(User, scene.user_a)
            user.status, user.email_verified = "pending", False
    elif action == "reset_totp":
        enrol_totp(app, scene.user_a)
    elif action == "enable":
        with sessions(app).begin() as db:
            db.get(User, scene.user_a).status = "disabled"
    elif action == "unbind_customer":
        bind(app, scene.user_a, scene.account_a)
    elif action in ("disable", "revoke_sessions"):
        give_sessions_and_tokens(app, scene.user_a, TENANT_A)


def check_effect(app, scene: Scene, action: str) -> None:  # type: ignore[no-untyped-def]
    """What the user (or the customer account) shows after ``action`` succeeded."""
    user = get_user(app, scene.user_a)
    live_sessions = count(app, LoginSession, LoginSession.user_id == scene.user_a,
                          LoginSession.revoked_at.is_(None))
    live_tokens = count(app, Token, Token.user_id == scene.user_a, Token.revoked_at.is_(None))
    if action == "unlock":
        assert user.locked_until is None and user.failed_logins == 0
    elif action == "resend_activation":
        assert count(app, OutboxMessage, OutboxMessage.recipient == "kari@example.com") == 1
    elif action == "send_password_reset":
        assert count(app, OutboxMessage, OutboxMessage.recipient == "kari@example.com") == 1
        assert user.password_hash == "argon2-not-used"  # staff never set a password
    elif action == "reset_totp":
        assert user.totp_secret is None
        assert count(app, RecoveryCode, RecoveryCode.user_id == scene.user_a) == 0
    elif action == "disable":
        assert user.status == "disabled" and live_sessions == 0 and live_tokens == 0
    elif action == "enable":
        assert user.status == "active"
    elif action == "bind_customer":
        with sessions(app)() as db:
            binding = db.scalar(select(Binding).where(Binding.user_id == scene.user_a))
            assert binding is not None and binding.role == "delegate"
    elif action == "unbind_customer":
        assert count(app, Binding, Binding.user_id == scene.user_a) == 0
    elif action == "revoke_sessions":
        assert live_sessions == 0 and live_tokens == 0 and user.status == "active"
    elif action == "send_binding_pin":
        assert count(app, OutboxMessage, OutboxMessage.recipient == "+4791234567",
                     OutboxMessage.channel == "sms") == 1
        with sessions(app)() as db:
            account = db.get(CustomerAccount, scene.account_a)
            assert account.pin_hmac and account.pin_expires_at > utcnow()
    else:
        raise AssertionError(f"no check for {action}")


def totp_now(member: StaffMember) -> str:
    return pyotp.TOTP(member.totp_secret).now()
