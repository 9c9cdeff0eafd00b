"""Security review fixes for races: two requests at once must not both win.

Each test runs the first request in one session and leaves its transaction open, then runs the
second in another session on a thread. On PostgreSQL the second must wait for the first (a row
lock) and then see its result; before the fixes it went ahead and both won. On SQLite every
writer already queues (BEGIN IMMEDIATE), so there the tests show the same outcome.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pyotp
import pytest
from sqlalchemy import func, select

from broker.models import Binding, RecoveryCode, User, Verification
from flows import totp
from flows.binding import grant_binding, unbind
from flows.password_reset import PURPOSE as RESET
from flows.password_reset import send_reset_link

from .staff_support import TENANT_A, add_account, add_user, bind, config, make_app, sessions

WAIT_FOR_THE_LOCK_SECONDS = 2


@pytest.fixture
def app(database_url):  # type: ignore[no-untyped-def]
    application = make_app(database_url)
    yield application
    application.extensions["broker"].engine.dispose()


def _while_open(app, first: Callable[[Any], None], second: Callable[[Any], Any]) -> Any:  # type: ignore[no-untyped-def]
    """Run ``first`` and keep its transaction open while ``second`` starts in another session
    on a thread; commit ``first`` once ``second`` finished or is waiting; return its result."""
    result: dict[str, Any] = {}
    outer = sessions(app)()
    first(outer)

    def run() -> None:
        with sessions(app)() as inner:
            result["value"] = second(inner)
            inner.commit()

    worker = threading.Thread(target=run)
    worker.start()
    worker.join(WAIT_FOR_THE_LOCK_SECONDS)  # done (no lock taken) or blocked on the lock
    outer.commit()
    outer.close()
    worker.join()
    return result["value"]


def _count(app, model: Any, *where: Any) -> int:  # type: ignore[no-untyped-def]
    with sessions(app)() as db:
        return db.scalar(select(func.count()).select_from(model).where(*where)) or 0


def test_two_owners_removing_each_other_at_once_leave_one_owner(app):
    anna = add_user(app, TENANT_A, "anna@example.no")
    erik = add_user(app, TENANT_A, "erik@example.no")
    account = add_account(app, TENANT_A, "100001")
    bind(app, anna, account)
    bind(app, erik, account)
    tenant = config(app).tenants[TENANT_A]

    def remove(db, actor_id: int, target_id: int):  # type: ignore[no-untyped-def]
        binding = db.scalar(select(Binding).where(Binding.user_id == target_id))
        return unbind(db, tenant, binding, actor_user=db.get(User, actor_id))

    second = _while_open(app, lambda db: remove(db, anna, erik),
                         lambda db: remove(db, erik, anna))
    assert not second.ok
    assert _count(app, Binding, Binding.customer_account_id == account,
                  Binding.role == "owner") == 1


def test_two_forgot_password_requests_at_once_send_one_link(app):
    kari = add_user(app, TENANT_A, "kari@example.no")
    tenant = config(app).tenants[TENANT_A].model_copy(update={"resend_cooldown_seconds": 60})

    def send(db):  # type: ignore[no-untyped-def]
        return send_reset_link(db, tenant, db.get(User, kari), public_url="http://broker.test")

    assert _while_open(app, send, send) is False
    assert _count(app, Verification, Verification.purpose == RESET) == 1


def test_confirming_one_totp_enrolment_twice_makes_one_set_of_recovery_codes(app):
    kari = add_user(app, TENANT_A, "kari@example.no")
    tenant = config(app).tenants[TENANT_A]
    key = config(app).hmac_key
    with sessions(app).begin() as db:
        enrol_id = totp.start_enrolment(db, tenant, db.get(User, kari), purpose="profile").id
    with sessions(app)() as first, sessions(app)() as second:
        # Both requests found the enrolment before either confirmed it.
        loaded = []
        for db in (first, second):
            loaded.append((totp.enrolment(db, tenant, enrol_id, kari), db.get(User, kari)))
            db.commit()
        code = pyotp.TOTP(totp.enrolment_secret(loaded[0][0])).now()
        shown = totp.confirm_enrolment(first, tenant, loaded[0][1], loaded[0][0], code,
                                       hmac_key=key, source_address=None)
        again = totp.confirm_enrolment(second, tenant, loaded[1][1], loaded[1][0], code,
                                       hmac_key=key, source_address=None)
    assert shown is not None and again is None
    with sessions(app)() as db:
        stored = set(db.scalars(select(RecoveryCode.code_hmac)))
    assert stored == {totp._recovery_digest(key, kari, c) for c in shown}


def test_two_grants_of_one_binding_at_once_give_one_binding_and_no_error(app):
    kari = add_user(app, TENANT_A, "kari@example.no")
    account = add_account(app, TENANT_A, "100001")

    def grant(db):  # type: ignore[no-untyped-def]
        return grant_binding(db, db.get(User, kari), account, "owner", "pin").user_id

    assert _while_open(app, grant, grant) == kari
    assert _count(app, Binding) == 1
