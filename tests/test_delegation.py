"""Owners share an account with relatives: who has access, invitations, removing users."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from broker.models import Invitation, OutboxMessage, utcnow
from flows.binding import bind_with_proof, customer_accounts_for
from flows.delegation import accept, invite, remove_user, who_has_access

from .customers_support import Broker, customer_rows

SLUG = "norrnat"
ROW = customer_rows(2)[1]


@pytest.fixture
def broker(sqlite_url):
    instance = Broker(sqlite_url)
    instance.load(SLUG, customer_rows(2))
    yield instance
    instance.close()


@pytest.fixture
def owned(broker):
    """Anna owns customer 100001 (bound with a previous invoice number, seed 004)."""
    db = broker.session()
    anna = broker.add_user(db, SLUG, "anna@example.se", name="Anna Svensson")
    result = bind_with_proof(
        db, broker.tenant(SLUG), broker.hmac_key, anna, ROW["customer_number"], "invoice",
        ROW["invoice_numbers"][0], None,
    )
    db.commit()
    yield db, anna, result.binding.customer_account_id
    db.close()


def _invite(broker, db, owner, account_id, email="erik@example.se", now=None):
    result = invite(
        db, broker.tenant(SLUG), broker.config.public_url, owner, account_id, email, "sv",
        now=now,
    )
    db.commit()
    return result


def test_an_invited_relative_accepts_and_becomes_a_delegate_the_owner_sees(broker, owned):
    db, anna, account_id = owned
    sent = _invite(broker, db, anna, account_id)
    assert sent.ok
    [message] = db.scalars(select(OutboxMessage)).all()
    assert message.recipient == "erik@example.se"
    assert sent.link in message.body_text
    assert sent.link.startswith("http://broker.test/t/norrnat/invitations/")
    token = sent.link.rsplit("/", 1)[1]
    assert db.scalar(select(Invitation.token_sha256)) != token

    # Erik logs in with another address than the one invited: allowed, and recorded.
    erik = broker.add_user(db, SLUG, "erik.private@example.se", name="Erik")
    accepted = accept(db, broker.tenant(SLUG), token, erik)
    db.commit()
    assert accepted.ok and accepted.customer_number == "100001"
    assert customer_accounts_for(db, erik.id)[0]["role"] == "delegate"
    access = who_has_access(db, anna, account_id)
    assert [(e.email, e.role) for e in access] == [
        ("anna@example.se", "owner"), ("erik.private@example.se", "delegate")
    ]


def test_an_invitation_works_once(broker, owned):
    db, anna, account_id = owned
    token = _invite(broker, db, anna, account_id).link.rsplit("/", 1)[1]
    erik = broker.add_user(db, SLUG, "erik@example.se")
    mallory = broker.add_user(db, SLUG, "mallory@example.se")
    assert accept(db, broker.tenant(SLUG), token, erik).ok
    again = accept(db, broker.tenant(SLUG), token, mallory)
    assert (again.ok, again.reason) == (False, "used")
    assert customer_accounts_for(db, mallory.id) == []


def test_an_expired_invitation_is_refused(broker, owned):
    db, anna, account_id = owned
    days = broker.tenant(SLUG).binding.invitation_valid_days
    long_ago = utcnow() - timedelta(days=days, minutes=1)
    token = _invite(broker, db, anna, account_id, now=long_ago).link.rsplit("/", 1)[1]
    erik = broker.add_user(db, SLUG, "erik@example.se")
    result = accept(db, broker.tenant(SLUG), token, erik)
    assert (result.ok, result.reason) == (False, "expired")
    assert customer_accounts_for(db, erik.id) == []


def test_a_made_up_token_is_refused(broker, owned):
    db, _, _ = owned
    erik = broker.add_user(db, SLUG, "erik@example.se")
    assert accept(db, broker.tenant(SLUG), "not-a-real-token", erik).reason == "unknown"


def test_a_delegate_can_neither_invite_nor_see_who_has_access(broker, owned):
    db, anna, account_id = owned
    token = _invite(broker, db, anna, account_id).link.rsplit("/", 1)[1]
    erik = broker.add_user(db, SLUG, "erik@example.se")
    accept(db, broker.tenant(SLUG), token, erik)
    assert who_has_access(db, erik, account_id) is None
    refused = _invite(broker, db, erik, account_id, email="friend@example.se")
    assert (refused.ok, refused.reason) == (False, "not_owner")


def test_the_owner_removes_a_delegate_but_not_themself_as_the_last_owner(broker, owned):
    db, anna, account_id = owned
    token = _invite(broker, db, anna, account_id).link.rsplit("/", 1)[1]
    erik = broker.add_user(db, SLUG, "erik@example.se")
    accept(db, broker.tenant(SLUG), token, erik)
    assert remove_user(db, broker.tenant(SLUG), anna, account_id, erik.id).ok
    assert customer_accounts_for(db, erik.id) == []
    last = remove_user(db, broker.tenant(SLUG), anna, account_id, anna.id)
    assert (last.ok, last.reason) == (False, "last_owner")
    assert customer_accounts_for(db, anna.id)[0]["role"] == "owner"


def test_a_delegate_cannot_remove_the_owner(broker, owned):
    db, anna, account_id = owned
    token = _invite(broker, db, anna, account_id).link.rsplit("/", 1)[1]
    erik = broker.add_user(db, SLUG, "erik@example.se")
    accept(db, broker.tenant(SLUG), token, erik)
    result = remove_user(db, broker.tenant(SLUG), erik, account_id, anna.id)
    assert (result.ok, result.reason) == (False, "not_owner")
