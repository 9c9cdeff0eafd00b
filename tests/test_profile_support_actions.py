"""The user sees what customer service did on their account, and why (issue 8)."""

from __future__ import annotations

import pytest

from broker import audit
from broker.models import AuditEvent

from .accounts_support import NO, db_session, register_and_activate, running_app, user

EMAIL = "kari@example.no"


@pytest.fixture
def broker_app(sqlite_url):  # type: ignore[no-untyped-def]
    yield from running_app(sqlite_url)


def test_the_profile_lists_support_actions_with_their_reason_but_not_who(broker_app):
    client = register_and_activate(broker_app, NO, EMAIL)
    page = client.get(f"/t/{NO}/profile").get_data(as_text=True)
    assert "Customer service has not changed anything on your account." in page

    target = user(broker_app, EMAIL)
    with db_session(broker_app) as db, db.begin():
        audit.record(db, "account_unlocked", tenant=NO, actor_type="staff", actor_id=7,
                     target_user_id=target.id, reason="Customer called from the cabin",
                     action="unlock")
        audit.record(db, "account_unlocked", tenant=NO, actor_type="staff", actor_id=7,
                     target_user_id=target.id, reason="refused attempt", outcome="refused")
        assert db.query(AuditEvent).count() >= 2
    page = client.get(f"/t/{NO}/profile").get_data(as_text=True)
    assert "Customer called from the cabin" in page
    assert "refused attempt" not in page  # only what was done
