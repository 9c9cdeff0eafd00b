"""SMS: E.164 numbers, hourly caps, and a webhook gateway (werkzeug on loopback) that fails."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import update
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from broker.config import SmsConfig
from broker.db import transaction
from broker.messaging.compose import (
    InvalidPhoneNumber,
    SmsLimitReached,
    normalize_phone,
    send_sms,
)
from broker.messaging.worker import RetryPolicy, WorkerSettings, run_once
from broker.models import OutboxMessage, utcnow

from .conftest import make_config

FAST = WorkerSettings(retry=RetryPolicy(base_seconds=1, max_seconds=4, jitter=0))
TOKEN = "gateway-token-for-tests"
GATEWAY_TIMEOUT = 0.3


class FakeGateway:
    """Answers with a scripted sequence of outcomes; records every request it sees."""

    def __init__(self, script: list[int | str]) -> None:
        self.script = list(script)
        self.requests: list[dict] = []
        self.accepted: dict[str, str] = {}
        self.release = threading.Event()
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        request = Request(environ)
        with self.lock:
            outcome = self.script.pop(0) if self.script else 200
            self.requests.append({
                "json": request.get_json(), "authorization": request.headers.get("Authorization")
            })
        if outcome == "timeout":
            self.release.wait(GATEWAY_TIMEOUT * 10)  # longer than the client waits
            outcome = 503
        if outcome == 200:
            body = request.get_json()
            with self.lock:  # a real gateway drops a repeat of a key it has accepted
                self.accepted.setdefault(body["idempotency_key"], body["text"])
        return Response("{}", status=outcome, mimetype="application/json")(environ, start_response)


@pytest.fixture
def gateway_server():
    servers = []

    def start(script: list[int | str]) -> tuple[FakeGateway, str]:
        gateway = FakeGateway(script)
        server = make_server("127.0.0.1", 0, gateway, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append((server, gateway))
        return gateway, f"http://127.0.0.1:{server.server_port}/send"

    yield start
    for server, gateway in servers:
        gateway.release.set()
        server.shutdown()


def sms_state(database_url: str, sms: dict, max_attempts: int = 8):
    from broker.app import create_app

    config = make_config(database_url, messaging={"sms": sms, "max_attempts": max_attempts})
    return create_app(config).extensions["broker"]


def queue_code(state, to: str = "912 34 567", limits: SmsConfig | None = None) -> OutboxMessage:
    with transaction(state.sessions) as db:
        return send_sms(db, state.config.tenants["fjordvarme"], to, "code", "nb",
                        limits=limits, code="482913", minutes=10)


def stored(state, message_id: int) -> OutboxMessage:
    with state.sessions() as db:
        return db.get(OutboxMessage, message_id)


@pytest.mark.parametrize(
    ("typed", "country", "e164"),
    [
        ("912 34 567", "NO", "+4791234567"),
        ("+47 912 34 567", "SE", "+4791234567"),
        ("20 12 34 56", "DK", "+4520123456"),
        ("070-123 45 67", "SE", "+46701234567"),
        ("040 123 4567", "FI", "+358401234567"),
        ("0046 70 123 45 67", "FI", "+46701234567"),
    ],
)
def test_phone_numbers_are_read_in_the_utilitys_country_and_stored_as_e164(typed, country,
                                                                           e164):
    assert normalize_phone(typed, country) == e164


@pytest.mark.parametrize("typed", ["12", "call me", "+47 123", "", "0000000000000000000"])
def test_a_number_that_cannot_be_a_phone_is_refused_with_a_clear_error(typed):
    with pytest.raises(InvalidPhoneNumber):
        normalize_phone(typed, "NO")
    assert issubclass(InvalidPhoneNumber, ValueError)


def test_sms_text_is_localized_and_numbers_are_stored_as_e164(sqlite_url):
    state = sms_state(sqlite_url, {"kind": "dev"})
    queued = queue_code(state)
    assert queued.recipient == "+4791234567"
    assert queued.body_text.startswith("482913 er koden din for Fjordvarme AS.")


def test_sms_to_one_number_stop_at_the_hourly_cap_and_resume_after_an_hour(database_url):
    state = sms_state(database_url, {"kind": "dev"})
    limits = SmsConfig(max_per_number_per_hour=2, max_per_tenant_per_hour=3)
    queue_code(state, "91234567", limits)
    queue_code(state, "+47 912 34 567", limits)  # the same number, typed differently
    with pytest.raises(SmsLimitReached) as refused:
        queue_code(state, "912 34 567", limits)
    assert refused.value.scope == "number"

    queue_code(state, "41234567", limits)
    with pytest.raises(SmsLimitReached) as refused:
        queue_code(state, "45678901", limits)
    assert refused.value.scope == "tenant"

    with transaction(state.sessions) as db:
        db.execute(update(OutboxMessage).values(created_at=utcnow() - timedelta(minutes=61)))
    assert queue_code(state, "912 34 567", limits).recipient == "+4791234567"


def test_the_hourly_cap_counts_messages_queued_earlier_in_the_same_transaction(sqlite_url):
    state = sms_state(sqlite_url, {"kind": "dev"})
    limits = SmsConfig(max_per_number_per_hour=1)
    tenant = state.config.tenants["fjordvarme"]
    with pytest.raises(SmsLimitReached), transaction(state.sessions) as db:
        send_sms(db, tenant, "91234567", "code", "nb", limits=limits, code="1", minutes=1)
        send_sms(db, tenant, "91234567", "code", "nb", limits=limits, code="2", minutes=1)


def test_gateway_errors_and_timeouts_are_retried_and_the_sms_is_delivered_once(sqlite_url,
                                                                               gateway_server):
    gateway, url = gateway_server([500, "timeout", 502, 200])
    state = sms_state(sqlite_url, {"kind": "webhook", "url": url, "token": TOKEN,
                                   "timeout_seconds": GATEWAY_TIMEOUT})
    queued = queue_code(state)

    moment = utcnow()
    delivered = 0
    for _ in range(6):
        delivered += run_once(state, "worker-1", settings=FAST, now=moment)
        moment += timedelta(seconds=10)

    assert delivered == 1
    assert len(gateway.requests) == 4
    assert {r["json"]["idempotency_key"] for r in gateway.requests} == {queued.message_key}
    assert {r["authorization"] for r in gateway.requests} == {f"Bearer {TOKEN}"}
    assert gateway.requests[0]["json"] == {
        "to": "+4791234567", "text": queued.body_text, "idempotency_key": queued.message_key,
    }
    assert list(gateway.accepted) == [queued.message_key]
    row = stored(state, queued.id)
    assert row.status == "sent" and row.attempts == 4


def test_a_gateway_that_refuses_the_request_makes_the_sms_dead_without_retrying(sqlite_url,
                                                                                gateway_server):
    gateway, url = gateway_server([400])
    state = sms_state(sqlite_url, {"kind": "webhook", "url": url, "token": TOKEN})
    queued = queue_code(state)

    assert run_once(state, "worker-1", settings=FAST) == 0
    assert run_once(state, "worker-1", settings=FAST, now=utcnow() + timedelta(hours=1)) == 0

    assert len(gateway.requests) == 1
    row = stored(state, queued.id)
    assert row.status == "dead" and row.last_error == "gateway answered 400"


def test_dev_sms_counts_as_delivered_and_stays_readable_in_the_outbox(sqlite_url):
    state = sms_state(sqlite_url, {"kind": "dev"})
    queued = queue_code(state)
    assert run_once(state, "worker-1", settings=FAST) == 1
    row = stored(state, queued.id)
    assert row.status == "sent" and "482913" in row.body_text
