"""Binding a login to customer accounts: proofs from the bill, lockout per customer number,
PIN expiry, national-id binding after MitID/FTN, account kinds, and who may unbind."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from sqlalchemy import select

from broker.customers.digests import proof_hmac
from broker.customers.importer import import_stream
from broker.models import AuditEvent, Binding, CustomerAccount, utcnow
from flows.binding import (
    bind_by_national_id,
    bind_with_proof,
    customer_accounts_for,
    unbind,
)

from .customers_support import Broker, as_csv, customer_rows

# Customer 100001 of customer_rows(): the proofs printed on the bill.
NUMBER = "100001"
ROW = customer_rows(3)[1]


@pytest.fixture
def broker(sqlite_url):
    instance = Broker(sqlite_url)
    for slug in ("fjordvarme", "aaro-vand", "norrnat", "stadsenergi", "aguas-del-valle"):
        instance.load(slug, customer_rows(3))
    yield instance
    instance.close()


@pytest.fixture
def broker_on_both(database_url):
    instance = Broker(database_url)
    instance.load("fjordvarme", customer_rows(3))
    yield instance
    instance.close()


def _bind(broker, db, slug, user, number, kind, value):
    return bind_with_proof(
        db, broker.tenant(slug), broker.hmac_key, user, number, kind, value, "192.0.2.7"
    )


@pytest.mark.parametrize(
    ("slug", "kind", "right"),
    [
        ("fjordvarme", "pin", ROW["pin"]),
        ("aaro-vand", "bill_code", ROW["bill_code"]),
        ("norrnat", "invoice", ROW["invoice_numbers"][1]),
    ],
)
def test_each_proof_binds_with_the_right_value_and_not_with_a_wrong_one(broker, slug, kind, right):
    with broker.session() as db:
        user = broker.add_user(db, slug, "kari@example.no")
        wrong = _bind(broker, db, slug, user, NUMBER, kind, "999999")
        assert not wrong.ok and wrong.reason == "wrong_proof"
        assert customer_accounts_for(db, user.id) == []
        right_result = _bind(broker, db, slug, user, NUMBER, kind, right)
        assert right_result.ok, right_result.reason
        assert customer_accounts_for(db, user.id) == [
            {"number": NUMBER, "kind": "private", "role": "owner", "name": ROW["name"]}
        ]
        db.flush()
        events = db.scalars(select(AuditEvent.event).order_by(AuditEvent.id)).all()
        assert events == ["binding_failed", "customer_bound"]


def test_typed_proofs_may_carry_spaces_and_dashes_like_on_the_bill(broker):
    with broker.session() as db:
        user = broker.add_user(db, "aaro-vand", "a@example.dk")
        result = _bind(broker, db, "aaro-vand", user, " 100-001 ", "bill_code", "bc 000001")
        assert result.ok


def test_a_proof_the_tenant_does_not_accept_is_refused_even_when_right(broker):
    with broker.session() as db:
        user = broker.add_user(db, "fjordvarme", "kari@example.no")
        result = _bind(broker, db, "fjordvarme", user, NUMBER, "bill_code", ROW["bill_code"])
        assert (result.ok, result.reason) == (False, "proof_not_accepted")


def test_a_pin_never_passes_as_a_bill_code_of_the_same_digits(broker):
    with broker.session() as db:
        account = db.scalar(select(CustomerAccount).where(
            CustomerAccount.tenant == "aaro-vand", CustomerAccount.number == NUMBER))
        assert account.pin_hmac != proof_hmac(broker.hmac_key, "bill_code", ROW["pin"])
        user = broker.add_user(db, "aaro-vand", "a@example.dk")
        assert not _bind(broker, db, "aaro-vand", user, NUMBER, "bill_code", ROW["pin"]).ok


def test_fourth_proof_after_three_wrong_ones_from_different_users_is_refused_even_when_right(
    broker_on_both,
):
    broker = broker_on_both
    with broker.session() as db:
        users = [broker.add_user(db, "fjordvarme", f"guess{i}@example.no") for i in range(4)]
        db.commit()
        for user in users[:3]:
            result = _bind(broker, db, "fjordvarme", user, NUMBER, "pin", "000000")
            db.commit()
            assert result.reason == "wrong_proof"
        assert result.locked_until is not None
        fourth = _bind(broker, db, "fjordvarme", users[3], NUMBER, "pin", ROW["pin"])
        db.commit()
        assert (fourth.ok, fourth.reason) == (False, "locked")
        assert customer_accounts_for(db, users[3].id) == []
        # Other customer numbers are not affected by the lock on this one.
        other = customer_rows(3)[2]
        assert _bind(broker, db, "fjordvarme", users[3], other["customer_number"], "pin",
                     other["pin"]).ok


def test_an_overlong_customer_number_is_a_wrong_proof_not_a_server_error(broker_on_both):
    """No account has it, and its attempt counter's key would overflow on PostgreSQL."""
    broker = broker_on_both
    with broker.session() as db:
        user = broker.add_user(db, "fjordvarme", "long@example.no")
        db.commit()
        result = _bind(broker, db, "fjordvarme", user, "7" * 5000, "pin", "000000")
        db.commit()
        assert (result.ok, result.reason) == (False, "wrong_proof")
        assert customer_accounts_for(db, user.id) == []


def test_a_number_that_does_not_exist_counts_and_locks_exactly_like_one_that_does(
    broker_on_both,
):
    broker = broker_on_both
    with broker.session() as db:
        users = [broker.add_user(db, "fjordvarme", f"guess{i}@example.no") for i in range(4)]
        db.commit()
        answers = []
        for user in users:
            result = _bind(broker, db, "fjordvarme", user, "424242", "pin", "000000")
            db.commit()
            answers.append(result.reason)
        assert answers == ["wrong_proof", "wrong_proof", "wrong_proof", "locked"]


def test_an_expired_pin_does_not_bind(broker):
    with broker.session() as db:
        account = db.scalar(select(CustomerAccount).where(
            CustomerAccount.tenant == "fjordvarme", CustomerAccount.number == NUMBER))
        account.pin_expires_at = utcnow() - timedelta(minutes=1)
        user = broker.add_user(db, "fjordvarme", "kari@example.no")
        result = _bind(broker, db, "fjordvarme", user, NUMBER, "pin", ROW["pin"])
        assert (result.ok, result.reason) == (False, "pin_expired")
        assert customer_accounts_for(db, user.id) == []


def test_a_second_user_with_the_proof_becomes_owner_too(broker):
    with broker.session() as db:
        first = broker.add_user(db, "fjordvarme", "kari@example.no")
        second = broker.add_user(db, "fjordvarme", "ola@example.no")
        assert _bind(broker, db, "fjordvarme", first, NUMBER, "pin", ROW["pin"]).ok
        assert _bind(broker, db, "fjordvarme", second, NUMBER, "pin", ROW["pin"]).ok
        roles = db.scalars(select(Binding.role).order_by(Binding.id)).all()
        assert roles == ["owner", "owner"]


def test_mitid_login_binds_every_account_with_the_cpr_and_prefills_the_profile(broker):
    # Customers 100001 and 100002 share one CPR in this register.
    rows = customer_rows(3)
    rows[2]["national_id"] = rows[1]["national_id"]
    tenant = broker.tenant("aaro-vand").model_copy(
        update={"binding": broker.tenant("aaro-vand").binding.model_copy(
            update={"national_id_match": True})}
    )
    import_stream(broker.engine, tenant, broker.hmac_key, io.StringIO(as_csv(rows)), "csv")
    cpr_as_mitid_sends_it = rows[1]["national_id"].replace("-", "")
    with broker.session() as db:
        user = broker.add_user(db, "aaro-vand", "mitid-user@example.dk")
        result = bind_by_national_id(
            db, tenant, broker.hmac_key, user, cpr_as_mitid_sends_it, "192.0.2.7"
        )
        assert result.ok
        assert [a["number"] for a in result.accounts] == ["100001", "100002"]
        assert result.prefill == {
            "name": rows[1]["name"], "email": rows[1]["email"].lower(), "phone": "+4790000001",
        }
        assert [a["role"] for a in customer_accounts_for(db, user.id)] == ["owner", "owner"]


def test_ftn_login_with_a_hetu_in_lower_case_matches_the_register(broker):
    tenant = broker.tenant("stadsenergi")
    rows = customer_rows(2)
    rows[1]["national_id"] = "131052-308T"
    broker.load("stadsenergi", rows)
    with broker.session() as db:
        user = broker.add_user(db, "stadsenergi", "ftn@example.fi")
        result = bind_by_national_id(db, tenant, broker.hmac_key, user, "131052-308t", None)
        assert result.ok and [a["number"] for a in result.accounts] == ["100001"]


def test_ftn_login_without_a_matching_customer_shows_the_support_guidance(broker):
    tenant = broker.tenant("stadsenergi")
    with broker.session() as db:
        user = broker.add_user(db, "stadsenergi", "ftn@example.fi")
        result = bind_by_national_id(db, tenant, broker.hmac_key, user, "010101-123N", None)
        assert not result.ok and result.show_support
        assert result.support["phone"] == tenant.support_phone
        assert customer_accounts_for(db, user.id) == []


def test_national_id_match_is_off_unless_the_tenant_enables_it(broker):
    with broker.session() as db:
        user = broker.add_user(db, "aaro-vand", "a@example.dk")
        result = bind_by_national_id(
            db, broker.tenant("aaro-vand"), broker.hmac_key, user, ROW["national_id"], None
        )
        assert (result.ok, result.reason) == (False, "national_id_match_disabled")


def test_an_administrator_binds_several_company_accounts_and_a_private_user_none(broker):
    # aguas-del-valle separates private, company and administrator users (seed 003).
    rows = customer_rows(25)
    companies = [r for r in rows if r["kind"] == "company"]
    assert len(companies) >= 2
    broker.load("aguas-del-valle", rows)
    with broker.session() as db:
        admin = broker.add_user(db, "aguas-del-valle", "admin@example.es",
                                registration_type="administrator")
        private = broker.add_user(db, "aguas-del-valle", "p@example.es")
        for row in companies:
            result = _bind(broker, db, "aguas-del-valle", admin, row["customer_number"],
                           "bill_code", row["bill_code"])
            assert result.ok, result.reason
        assert {a["kind"] for a in customer_accounts_for(db, admin.id)} == {"company"}
        refused = _bind(broker, db, "aguas-del-valle", private, companies[0]["customer_number"],
                        "bill_code", companies[0]["bill_code"])
        assert (refused.ok, refused.reason) == (False, "account_kind_needs_company_user")


def test_the_last_owner_cannot_unbind_themself_but_a_co_owner_can_remove_them(broker):
    with broker.session() as db:
        kari = broker.add_user(db, "fjordvarme", "kari@example.no")
        first = _bind(broker, db, "fjordvarme", kari, NUMBER, "pin", ROW["pin"]).binding
        refused = unbind(db, broker.tenant("fjordvarme"), first, actor_user=kari)
        assert (refused.ok, refused.reason) == (False, "last_owner")
        ola = broker.add_user(db, "fjordvarme", "ola@example.no")
        assert _bind(broker, db, "fjordvarme", ola, NUMBER, "pin", ROW["pin"]).ok
        assert unbind(db, broker.tenant("fjordvarme"), first, actor_user=ola).ok
        assert customer_accounts_for(db, kari.id) == []


def test_the_fast_digest_is_the_same_keyed_hmac_the_rest_of_the_broker_computes():
    from broker.customers.digests import keyed_hmac_fast, national_id_hmac
    from broker.security import keyed_hmac

    key = "k" * 40
    assert keyed_hmac_fast(key, "123456", purpose="customer.pin") == keyed_hmac(
        key, "123456", purpose="customer.pin"
    )
    assert national_id_hmac(key, "010190-1234", "DK") == keyed_hmac(
        key, "0101901234", purpose="national_id"
    )
