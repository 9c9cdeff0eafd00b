"""Security review fixes for shared customer accounts: a removed owner's invitations no longer
hand the account back, a MitID/FTN login obeys the account-kind rule (seed 003) like a proof
from the bill, and an owner cannot make the utility mail any number of addresses."""

from __future__ import annotations

import io
import secrets
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from broker import login_session
from broker.customers.importer import import_stream
from broker.models import AuditEvent, OutboxMessage, User, utcnow
from flows.binding import bind_by_national_id, bind_with_proof, customer_accounts_for
from flows.delegation import MAX_OPEN_INVITATIONS, accept, invite, remove_user

from .customers_support import Broker, as_csv, customer_rows
from .staff_support import TENANT_A, add_account, add_user, bind, count, make_app, sessions

SLUG = "norrnat"
ROW = customer_rows(2)[1]


@pytest.fixture
def broker(database_url):
    instance = Broker(database_url)
    instance.load(SLUG, customer_rows(2))
    yield instance
    instance.close()


@pytest.fixture
def co_owned(broker):
    """Anna and Bo both own customer 100001 (each bound with a previous invoice number)."""
    db = broker.session()
    anna = broker.add_user(db, SLUG, "anna@example.se", name="Anna Svensson")
    bo = broker.add_user(db, SLUG, "bo@example.se", name="Bo Svensson")
    for user, invoice in ((anna, ROW["invoice_numbers"][0]), (bo, ROW["invoice_numbers"][1])):
        result = bind_with_proof(db, broker.tenant(SLUG), broker.hmac_key, user,
                                 ROW["customer_number"], "invoice", invoice, None)
        assert result.ok
    db.commit()
    yield db, anna, bo, result.binding.customer_account_id
    db.close()


def _invite(broker, db, owner, account_id, email="erik@example.se", now=None):
    result = invite(db, broker.tenant(SLUG), broker.config.public_url, owner, account_id, email,
                    "sv", now=now)
    db.commit()
    return result


def _token(result) -> str:
    return result.link.rsplit("/", 1)[1]


# --- a removed owner's invitations ------------------------------------------------------------


def test_a_removed_owner_cannot_regain_access_through_their_own_pending_invitation(
    broker, co_owned,
):
    db, anna, bo, account_id = co_owned
    sent = _invite(broker, db, anna, account_id, "anna.other@example.se")
    assert remove_user(db, broker.tenant(SLUG), bo, account_id, anna.id).ok
    db.commit()

    second_login = broker.add_user(db, SLUG, "anna.other@example.se")
    result = accept(db, broker.tenant(SLUG), _token(sent), second_login)
    db.commit()
    assert (result.ok, result.reason) == (False, "revoked")
    assert customer_accounts_for(db, second_login.id) == []
    refusal = db.scalars(select(AuditEvent).where(AuditEvent.event == "invitation_refused")).one()
    assert (refusal.reason, refusal.outcome) == ("revoked", "refused")


def test_removing_an_owner_ends_their_invitations_even_if_they_become_owner_again(
    broker, co_owned,
):
    db, anna, bo, account_id = co_owned
    sent = _invite(broker, db, anna, account_id)
    from_bo = _invite(broker, db, bo, account_id, "frida@example.se")
    assert remove_user(db, broker.tenant(SLUG), bo, account_id, anna.id).ok
    db.commit()
    removal = db.scalars(select(AuditEvent).where(AuditEvent.event == "customer_unbound")).one()
    assert removal.details["invitations_ended"] == 1

    # Anna still has her invoice and binds again: the invitation she sent before stays ended.
    again = bind_with_proof(db, broker.tenant(SLUG), broker.hmac_key, anna,
                            ROW["customer_number"], "invoice", ROW["invoice_numbers"][0], None)
    assert again.ok
    db.commit()
    erik = broker.add_user(db, SLUG, "erik@example.se")
    result = accept(db, broker.tenant(SLUG), _token(sent), erik)
    assert (result.ok, result.reason) == (False, "expired")
    assert customer_accounts_for(db, erik.id) == []
    # The co-owner who stays keeps their invitations.
    frida = broker.add_user(db, SLUG, "frida@example.se")
    assert accept(db, broker.tenant(SLUG), _token(from_bo), frida).ok


def test_the_invitation_page_says_the_invitation_was_withdrawn(sqlite_url):
    app = make_app(sqlite_url)
    tenant = app.extensions["broker"].config.tenants[TENANT_A]
    account = add_account(app, TENANT_A, "100001")
    anna, bo = (add_user(app, TENANT_A, email) for email in ("anna@example.no", "bo@example.no"))
    bind(app, anna, account)
    bind(app, bo, account)
    with sessions(app).begin() as db:
        sent = invite(db, tenant, "http://broker.test", db.get(User, anna), account,
                      "anna.other@example.no", "en")
    with sessions(app).begin() as db:
        assert remove_user(db, tenant, db.get(User, bo), account, anna).ok
    second_login = add_user(app, TENANT_A, "anna.other@example.no")
    with sessions(app).begin() as db:
        _login, cookie = login_session.start(db, tenant, db.get(User, second_login), amr=["pwd"])
    client = app.test_client()
    client.set_cookie(login_session.cookie_name(TENANT_A), cookie, path=f"/t/{TENANT_A}")

    answer = client.post(f"/t/{TENANT_A}/invitations/{_token(sent)}")
    assert answer.status_code == 400
    assert "the person who sent it no longer manages" in answer.get_data(as_text=True)
    app.extensions["broker"].engine.dispose()


# --- the account-kind rule after a MitID/FTN login (seed 003) ----------------------------------


def _separating_tenant(broker, rows):
    """aaro-vand separating private and company users, matching national ids, with ``rows``."""
    base = broker.tenant("aaro-vand")
    tenant = base.model_copy(update={
        "registration_types": ["private", "company"],
        "binding": base.binding.model_copy(update={"national_id_match": True}),
    })
    import_stream(broker.engine, tenant, broker.hmac_key, io.StringIO(as_csv(rows)), "csv")
    return tenant


def test_a_private_mitid_login_does_not_become_owner_of_the_company_account_with_its_cpr(
    broker,
):
    rows = customer_rows(2)  # 100000 is a company account, 100001 a private one
    rows[0]["national_id"] = rows[1]["national_id"]
    tenant = _separating_tenant(broker, rows)
    with broker.session() as db:
        user = broker.add_user(db, "aaro-vand", "p@example.dk", registration_type="private")
        result = bind_by_national_id(db, tenant, broker.hmac_key, user,
                                     rows[1]["national_id"].replace("-", ""), "192.0.2.7")
        assert result.ok
        assert [(a["number"], a["kind"]) for a in customer_accounts_for(db, user.id)] == [
            ("100001", "private")
        ]
        assert [a["number"] for a in result.accounts] == ["100001"]
        assert result.prefill["name"] == rows[1]["name"]  # not the company's
        refusal = db.scalars(select(AuditEvent).where(AuditEvent.event == "binding_failed")).one()
        assert (refusal.reason, refusal.outcome) == ("account_kind_needs_company_user", "refused")
        assert refusal.details["proof"] == "national_id"


def test_a_company_login_gets_one_company_account_from_its_identity_code_at_every_login(broker):
    rows = customer_rows(11)  # 100000 and 100010 are company accounts
    rows[10]["national_id"] = rows[0]["national_id"]
    tenant = _separating_tenant(broker, rows)
    national_id = rows[0]["national_id"].replace("-", "")
    with broker.session() as db:
        user = broker.add_user(db, "aaro-vand", "c@example.dk", registration_type="company")
        first = bind_by_national_id(db, tenant, broker.hmac_key, user, national_id, None)
        db.commit()
        again = bind_by_national_id(db, tenant, broker.hmac_key, user, national_id, None)
        db.commit()
        assert [a["number"] for a in customer_accounts_for(db, user.id)] == ["100000"]
        assert [a["number"] for a in first.accounts] == ["100000"]
        assert [a["number"] for a in again.accounts] == ["100000"]  # their own, still allowed
        reasons = db.scalars(
            select(AuditEvent.reason).where(AuditEvent.event == "binding_failed")
        ).all()
        assert reasons == ["company_user_has_one_account"] * 2


def test_a_private_login_whose_identity_code_matches_only_company_accounts_binds_none(broker):
    rows = customer_rows(1)
    tenant = _separating_tenant(broker, rows)
    with broker.session() as db:
        user = broker.add_user(db, "aaro-vand", "p@example.dk", registration_type="private")
        result = bind_by_national_id(db, tenant, broker.hmac_key, user,
                                     rows[0]["national_id"].replace("-", ""), None)
        assert (result.ok, result.reason) == (False, "account_kind_needs_company_user")
        assert result.accounts == [] and result.prefill == {}
        assert customer_accounts_for(db, user.id) == []


# --- invitation emails ------------------------------------------------------------------------


def test_an_account_has_at_most_a_handful_of_open_invitations(broker, co_owned):
    db, anna, _bo, account_id = co_owned
    sent = [_invite(broker, db, anna, account_id, f"victim{i}@example.org")
            for i in range(MAX_OPEN_INVITATIONS + 3)]
    assert [r.ok for r in sent] == [True] * MAX_OPEN_INVITATIONS + [False] * 3
    assert {r.reason for r in sent[MAX_OPEN_INVITATIONS:]} == {"too_many_open"}
    assert db.scalar(select(func.count()).select_from(OutboxMessage)) == MAX_OPEN_INVITATIONS
    refused = db.scalars(select(AuditEvent.reason).where(
        AuditEvent.event == "invitation_refused")).all()
    assert refused == ["too_many_open"] * 3

    # Accepted or expired invitations are no longer open: the owner may invite again.
    erik = broker.add_user(db, SLUG, "erik@example.se")
    assert accept(db, broker.tenant(SLUG), _token(sent[0]), erik).ok
    db.commit()
    assert _invite(broker, db, anna, account_id, "frida@example.se").ok
    later = utcnow() + timedelta(days=broker.tenant(SLUG).binding.invitation_valid_days, hours=1)
    assert _invite(broker, db, anna, account_id, "gustav@example.se", now=later).ok


def test_the_invite_form_is_throttled_per_invited_address_by_default(sqlite_url):
    """Owners of different accounts, from different addresses, cannot together mail one
    victim more than the default ``[throttle.invitation] per_target`` (5/hour)."""
    app = make_app(sqlite_url, throttle={"key_prefix": "t" + secrets.token_hex(6),
                                         "strategy": "moving-window"})
    tenant = app.extensions["broker"].config.tenants[TENANT_A]

    def owner_of(number: str):  # type: ignore[no-untyped-def]
        owner, account = add_user(app, TENANT_A, f"owner{number}@example.no"), add_account(
            app, TENANT_A, number)
        bind(app, owner, account)
        with sessions(app).begin() as db:
            _login, cookie = login_session.start(db, tenant, db.get(User, owner), amr=["pwd"])
        client = app.test_client()
        client.set_cookie(login_session.cookie_name(TENANT_A), cookie, path=f"/t/{TENANT_A}")

        def invite_address(email: str) -> int:
            return client.post(f"/t/{TENANT_A}/customer-accounts/{account}/invite",
                               data={"email": email},
                               environ_base={"REMOTE_ADDR": f"198.51.100.{account}"}).status_code

        return invite_address

    first, second = owner_of("100001"), owner_of("100002")
    spellings = ["victim@example.org", " Victim@Example.org", "VICTIM@example.org"]
    assert [first(email) for email in spellings] == [200, 200, 200]
    assert [second(email) for email in spellings] == [200, 200, 429]
    assert second("someone.else@example.org") == 200
    assert count(app, OutboxMessage, OutboxMessage.recipient == "victim@example.org") == 5
    app.extensions["broker"].engine.dispose()
