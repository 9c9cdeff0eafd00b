"""Forgot customer number / PIN (seed 001): the answer is the same whether anything matched,
and the numbers with fresh single-use PINs go only to the contact on record."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import select

from broker.models import OutboxMessage, utcnow
from flows.binding import bind_with_proof
from flows.forgot_pin import request_customer_number_and_pin

from .customers_support import Broker, customer_rows

SLUG = "fjordvarme"
ROWS = customer_rows(3)
KARI = ROWS[1]  # customer 100001, Kunde1@Example.NO, +47 90000001


@pytest.fixture
def broker(database_url):
    instance = Broker(database_url)
    instance.load(SLUG, ROWS)
    yield instance
    instance.close()


@pytest.fixture
def sqlite_broker(sqlite_url):
    instance = Broker(sqlite_url)
    instance.load(SLUG, ROWS)
    yield instance
    instance.close()


def _ask(broker, db, **fields):
    result = request_customer_number_and_pin(
        db, broker.tenant(SLUG), broker.hmac_key, locale="en",
        sms_limits=broker.config.messaging.sms, **fields,
    )
    db.commit()
    return result


def _outbox(db):
    return db.scalars(select(OutboxMessage).order_by(OutboxMessage.id)).all()


def _pin_in(message) -> str:
    return re.search(r"PIN (\d{6})", message.body_text).group(1)


def test_matched_and_unmatched_email_get_the_same_answer_and_only_the_match_gets_mail(broker):
    with broker.session() as db:
        unmatched = _ask(broker, db, channel="email", email="stranger@example.no")
        assert _outbox(db) == []
        matched = _ask(broker, db, channel="email", email="  kunde1@EXAMPLE.no ")
        assert matched == unmatched
        [message] = _outbox(db)
        assert (message.channel, message.recipient) == ("email", "kunde1@example.no")
        assert "Customer number 100001" in message.body_text


def test_the_sent_pin_binds_once_and_then_no_more(broker):
    with broker.session() as db:
        _ask(broker, db, channel="email", email=KARI["email"])
        pin = _pin_in(_outbox(db)[0])
        first = broker.add_user(db, SLUG, "kari@example.no")
        second = broker.add_user(db, SLUG, "ola@example.no")
        tenant = broker.tenant(SLUG)
        assert bind_with_proof(db, tenant, broker.hmac_key, first, "100001", "pin", pin, None).ok
        again = bind_with_proof(db, tenant, broker.hmac_key, second, "100001", "pin", pin, None)
        assert (again.ok, again.reason) == (False, "wrong_proof")


def test_the_old_pin_from_the_letter_stops_working_when_a_new_one_is_sent(sqlite_broker):
    broker = sqlite_broker
    with broker.session() as db:
        _ask(broker, db, channel="email", email=KARI["email"])
        user = broker.add_user(db, SLUG, "kari@example.no")
        old = bind_with_proof(
            db, broker.tenant(SLUG), broker.hmac_key, user, "100001", "pin", KARI["pin"], None
        )
        assert (old.ok, old.reason) == (False, "wrong_proof")


def test_a_sent_pin_expires_after_the_tenants_pin_valid_days(sqlite_broker):
    broker = sqlite_broker
    tenant = broker.tenant(SLUG)
    with broker.session() as db:
        _ask(broker, db, channel="email", email=KARI["email"])
        pin = _pin_in(_outbox(db)[0])
        user = broker.add_user(db, SLUG, "kari@example.no")
        later = utcnow() + timedelta(days=tenant.binding.pin_valid_days, minutes=1)
        result = bind_with_proof(
            db, tenant, broker.hmac_key, user, "100001", "pin", pin, None, now=later
        )
        assert (result.ok, result.reason) == (False, "pin_expired")


def test_sms_goes_to_the_number_on_record_however_the_user_typed_it(sqlite_broker):
    broker = sqlite_broker
    with broker.session() as db:
        result = _ask(broker, db, channel="sms", phone="900 00 001")
        assert result.ok
        [message] = _outbox(db)
        assert (message.channel, message.recipient) == ("sms", "+4790000001")
        assert "100001" in message.body_text


def test_sms_is_not_sent_when_only_the_email_matches(sqlite_broker):
    broker = sqlite_broker
    with broker.session() as db:
        result = _ask(broker, db, channel="sms", email=KARI["email"], phone="+47 41234567")
        assert result.ok
        assert _outbox(db) == []


def test_a_customer_number_that_does_not_belong_to_the_contact_sends_nothing(sqlite_broker):
    broker = sqlite_broker
    with broker.session() as db:
        result = _ask(broker, db, channel="email", email=KARI["email"], customer_number="100002")
        assert result.ok
        assert _outbox(db) == []
        _ask(broker, db, channel="email", email=KARI["email"], customer_number="100 001")
        assert len(_outbox(db)) == 1


def test_an_invalid_mobile_number_is_a_clear_error(sqlite_broker):
    broker = sqlite_broker
    with broker.session() as db:
        result = _ask(broker, db, channel="sms", phone="12ab")
        assert (result.ok, result.error) == (False, "invalid_phone")


def test_past_the_sms_cap_the_answer_stays_the_same_and_nothing_more_is_sent(sqlite_broker):
    broker = sqlite_broker
    cap = broker.config.messaging.sms.max_per_number_per_hour
    with broker.session() as db:
        answers = {_ask(broker, db, channel="sms", phone=KARI["phone"]) for _ in range(cap + 2)}
        assert len(answers) == 1 and next(iter(answers)).ok
        assert len(_outbox(db)) == cap
