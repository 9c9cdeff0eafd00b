"""Support runs a customer's export or erasure by phone: with a reason, within its utilities."""

from __future__ import annotations

import pytest

from broker.models import AuditEvent, Staff, User
from broker.staff.actions import Actor
from broker.staff.privacy import erase_for_staff, export_for_staff

from .accounts_support import running_app
from .privacy_support import NO, rich_account, rows_naming


@pytest.fixture
def app(sqlite_url):  # type: ignore[no-untyped-def]
    yield from running_app(sqlite_url)


def _staff(db, tenants: list[str], roles: list[str] | None = None) -> Staff:  # type: ignore[no-untyped-def]
    staff = Staff(email=f"agent{len(tenants)}@utility.example", name="Agent", password_hash="x",
                  roles=roles or ["support_agent"], tenants=tenants)
    db.add(staff)
    db.flush()
    return staff


def test_support_exports_with_a_reason_and_it_is_audited(app):
    ids = rich_account(app)
    state = app.extensions["broker"]
    with state.sessions() as db, db.begin():
        actor = Actor(_staff(db, [NO]), "198.51.100.4")
        result, data = export_for_staff(db, state.config, actor, ids["kari"],
                                        reason="Customer asked by phone, ticket 881")
        assert result.ok
        assert data["profile"]["email"] == "kari@example.no"
        record = db.query(AuditEvent).filter_by(event="data_exported").one()
        assert record.actor_type == "staff"
        assert record.reason == "Customer asked by phone, ticket 881"


def test_without_a_reason_support_gets_nothing_and_nothing_is_recorded(app):
    ids = rich_account(app)
    state = app.extensions["broker"]
    with state.sessions() as db, db.begin():
        actor = Actor(_staff(db, [NO]), None)
        result, data = export_for_staff(db, state.config, actor, ids["kari"], reason="  ")
        assert (result.outcome, data) == ("invalid", None)
        assert db.query(AuditEvent).filter_by(event="data_exported").count() == 0


def test_support_of_another_utility_is_refused_and_the_refusal_audited(app):
    ids = rich_account(app)
    state = app.extensions["broker"]
    with state.sessions() as db, db.begin():
        actor = Actor(_staff(db, ["aaro-vand"]), None)
        result, erasure = erase_for_staff(db, state.config, actor, ids["kari"], reason="asked")
        assert (result.outcome, result.error, erasure) == ("refused", "tenant_not_allowed", None)
        assert db.get(User, ids["kari"]) is not None
        refused = db.query(AuditEvent).filter_by(event="account_erased").one()
        assert refused.outcome == "refused"


def test_support_erases_the_account_and_the_reason_stays_without_the_name(app):
    ids = rich_account(app)
    state = app.extensions["broker"]
    with state.sessions() as db, db.begin():
        actor = Actor(_staff(db, [NO]), "198.51.100.4")
        result, erasure = erase_for_staff(db, state.config, actor, ids["kari"],
                                          reason="Kari Nordmann asked by phone")
        assert result.ok
        assert erasure.portals == {"demo-portal"}
    assert rows_naming(app, ["kari@example.no", "Kari Nordmann", "+4791234567"]) == []
    with state.sessions() as db:
        record = db.query(AuditEvent).filter_by(event="account_erased").one()
        assert record.actor_type == "staff"
        assert record.reason == "[erased] asked by phone"
