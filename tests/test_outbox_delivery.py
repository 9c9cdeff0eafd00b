"""Email leaves the outbox over real SMTP (aiosmtpd on loopback): once, with a stable Message-ID."""

from __future__ import annotations

import email
import socket
import threading
from datetime import timedelta
from email import policy
from email.message import EmailMessage

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select, update

from broker import db as database
from broker.db import transaction
from broker.messaging import worker
from broker.messaging.compose import send_email
from broker.messaging.delivery import Envelope
from broker.messaging.outbox import dead_messages, retry_dead
from broker.messaging.worker import RetryPolicy, WorkerSettings, claim, run_once
from broker.models import OutboxMessage, utcnow

from .conftest import make_config

SENDER = "no-reply@utility.test"
FAST = WorkerSettings(retry=RetryPolicy(base_seconds=1, max_seconds=4, jitter=0))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Mailbox:
    """An SMTP server's handler that keeps what it accepted; some recipients it refuses."""

    def __init__(self, refuse: tuple[str, ...] = ()) -> None:
        self.refuse = refuse
        self.messages: list[EmailMessage] = []
        self.lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        if address in self.refuse:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        message = email.message_from_bytes(envelope.content, policy=policy.default)
        with self.lock:
            self.messages.append(message)
        return "250 OK: queued"

    def message_ids(self) -> list[str]:
        return [m["Message-ID"] for m in self.messages]


def start_smtp(handler: Mailbox, port: int) -> Controller:
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    return controller


@pytest.fixture
def smtp_port() -> int:
    return free_port()


@pytest.fixture
def mailbox(smtp_port):
    handler = Mailbox(refuse=("nobody@utility.test",))
    controller = start_smtp(handler, smtp_port)
    yield handler
    controller.stop()


def broker_state(database_url: str, smtp_port: int, max_attempts: int = 8):
    """Config, sessions and tenant rows for a broker whose SMTP server is on ``smtp_port``."""
    from broker.app import create_app

    config = make_config(
        database_url,
        messaging={
            "smtp": {"port": smtp_port, "timeout_seconds": 5},
            "default_sender": SENDER,
            "max_attempts": max_attempts,
        },
    )
    return create_app(config).extensions["broker"]


def enqueue_activation(state, to: str = "kunde@example.test", locale: str = "da") -> OutboxMessage:
    tenant = state.config.tenants["aaro-vand"]
    with transaction(state.sessions) as db:
        return send_email(db, tenant, to, "activation_link", locale,
                          link="http://broker.test/t/aaro-vand/activate?token=abc&x=1", hours=48)


def stored(state, message_id: int) -> OutboxMessage:
    with state.sessions() as db:
        return db.get(OutboxMessage, message_id)


def test_activation_email_arrives_with_text_and_html_from_the_utility(sqlite_url, smtp_port,
                                                                        mailbox):
    state = broker_state(sqlite_url, smtp_port)
    queued = enqueue_activation(state)

    assert run_once(state, "worker-1", settings=FAST) == 1

    [received] = mailbox.messages
    assert received["Subject"] == "Aktivér din konto"
    assert received["From"].addresses[0].display_name == "Aarø Vand & Affald"
    assert received["From"].addresses[0].addr_spec == SENDER
    assert received["To"] == "kunde@example.test"
    assert received["Message-ID"] == f"<{queued.message_key}@utility.test>"
    assert received["Auto-Submitted"] == "auto-generated"
    assert received["Date"]
    text = received.get_body(("plain",)).get_content()
    html = received.get_body(("html",)).get_content()
    assert "http://broker.test/t/aaro-vand/activate?token=abc&x=1" in text
    assert '<a href="http://broker.test/t/aaro-vand/activate?token=abc&amp;x=1">' in html
    row = stored(state, queued.id)
    assert row.status == "sent" and row.sent_at is not None and row.attempts == 1


def test_mail_waits_while_the_server_is_down_and_arrives_once_when_it_is_back(sqlite_url,
                                                                              smtp_port):
    state = broker_state(sqlite_url, smtp_port)
    queued = enqueue_activation(state)

    assert run_once(state, "worker-1", settings=FAST) == 0
    row = stored(state, queued.id)
    assert row.status == "pending" and row.attempts == 1 and row.last_error
    assert row.claimed_by is None
    # Not due yet: the retry waits for its backoff.
    assert run_once(state, "worker-1", settings=FAST) == 0
    assert stored(state, queued.id).attempts == 1

    handler = Mailbox()
    controller = start_smtp(handler, smtp_port)
    try:
        later = utcnow() + timedelta(seconds=5)
        assert run_once(state, "worker-1", settings=FAST, now=later) == 1
        assert run_once(state, "worker-1", settings=FAST, now=later + timedelta(hours=1)) == 0
    finally:
        controller.stop()
    assert handler.message_ids() == [f"<{queued.message_key}@utility.test>"]
    assert stored(state, queued.id).status == "sent"


def test_retries_wait_longer_each_time_up_to_the_cap():
    policy_ = RetryPolicy(base_seconds=30, max_seconds=600, jitter=0)
    delays = [policy_.delay(attempt).total_seconds() for attempt in range(1, 8)]
    assert delays == [30, 60, 120, 240, 480, 600, 600]
    jittered = RetryPolicy(base_seconds=100, max_seconds=1000, jitter=0.2)
    assert all(80 <= jittered.delay(1).total_seconds() <= 120 for _ in range(50))


def test_two_workers_on_one_database_send_each_message_exactly_once(database_url, smtp_port,
                                                                    mailbox):
    state = broker_state(database_url, smtp_port)
    tenant = state.config.tenants["fjordvarme"]
    with transaction(state.sessions) as db:
        keys = {
            send_email(db, tenant, f"kunde{n}@example.test", "activation_code", "nb",
                       code=f"{n:06d}", minutes=30).message_key
            for n in range(24)
        }
    errors: list[BaseException] = []

    def work(name: str) -> None:
        engine = database.make_engine(database_url)
        sessions = database.make_sessionmaker(engine)
        settings = WorkerSettings(batch_size=3, retry=FAST.retry)
        try:
            while run_once((sessions, state.config), name, settings=settings):
                pass
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=work, args=(f"worker-{n}",)) for n in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert not errors
    ids = mailbox.message_ids()
    assert sorted(ids) == sorted(f"<{key}@utility.test>" for key in keys)
    with state.sessions() as db:
        rows = db.scalars(select(OutboxMessage)).all()
    assert {row.status for row in rows} == {"sent"}
    assert {row.attempts for row in rows} == {1}


def test_a_worker_that_dies_mid_delivery_leaves_the_message_to_the_next_with_the_same_id(
    database_url, smtp_port, mailbox
):
    state = broker_state(database_url, smtp_port)
    queued = enqueue_activation(state)
    [taken] = claim(state.sessions, "crashed-worker", max_attempts=8, claim_seconds=60)
    assert taken.message_key == queued.message_key
    # ...and the crashed worker never comes back.

    assert run_once(state, "worker-2", settings=FAST) == 0, "the claim still holds"
    assert mailbox.messages == []

    after_expiry = utcnow() + timedelta(seconds=61)
    assert run_once(state, "worker-2", settings=FAST, now=after_expiry) == 1
    assert mailbox.message_ids() == [f"<{queued.message_key}@utility.test>"]
    row = stored(state, queued.id)
    assert row.status == "sent" and row.attempts == 2


class SimulatedCrash(BaseException):
    """The process dies right after the server said 250, before the outbox row is updated."""


def test_a_crash_after_the_server_accepted_repeats_the_mail_with_the_same_message_id(
    sqlite_url, smtp_port, mailbox
):
    state = broker_state(sqlite_url, smtp_port)
    queued = enqueue_activation(state)
    real = worker.transports_for(state.config)

    class CrashAfterSending:
        def deliver(self, envelope: Envelope) -> None:
            real["email"].deliver(envelope)
            raise SimulatedCrash

    with pytest.raises(SimulatedCrash):
        run_once(state, "worker-1", transports={"email": CrashAfterSending()}, settings=FAST)
    assert stored(state, queued.id).status == "pending"

    later = utcnow() + timedelta(seconds=FAST.claim_seconds + 1)
    assert run_once(state, "worker-2", settings=FAST, now=later) == 1
    expected = f"<{queued.message_key}@utility.test>"
    assert mailbox.message_ids() == [expected, expected], "the receiver can drop the repeat"
    assert stored(state, queued.id).status == "sent"


def test_a_refused_recipient_is_dead_at_once_and_support_sees_it(sqlite_url, smtp_port, mailbox):
    state = broker_state(sqlite_url, smtp_port)
    refused = enqueue_activation(state, to="nobody@utility.test")
    fine = enqueue_activation(state, to="kunde@example.test")

    assert run_once(state, "worker-1", settings=FAST) == 1

    row = stored(state, refused.id)
    assert row.status == "dead" and row.attempts == 1 and "550" in row.last_error
    with state.sessions() as db:
        assert [m.id for m in dead_messages(db, "aaro-vand")] == [refused.id]
        assert dead_messages(db, "fjordvarme") == []
    assert stored(state, fine.id).status == "sent"


def test_a_message_that_keeps_failing_is_dead_after_max_attempts_and_can_be_retried(
    sqlite_url, smtp_port
):
    state = broker_state(sqlite_url, smtp_port, max_attempts=3)
    queued = enqueue_activation(state)
    moment = utcnow()
    for _ in range(4):
        run_once(state, "worker-1", settings=FAST, now=moment)
        moment += timedelta(seconds=10)

    row = stored(state, queued.id)
    assert row.status == "dead" and row.attempts == 3
    assert "ConnectionRefusedError" in row.last_error

    with transaction(state.sessions) as db:
        assert retry_dead(db, "fjordvarme", queued.id) is False, "another tenant's message"
        assert retry_dead(db, "aaro-vand", queued.id) is True
    handler = Mailbox()
    controller = start_smtp(handler, smtp_port)
    try:
        assert run_once(state, "worker-1", settings=FAST) == 1
    finally:
        controller.stop()
    assert handler.message_ids() == [f"<{queued.message_key}@utility.test>"]


def test_a_message_whose_last_attempt_was_abandoned_is_buried(sqlite_url, smtp_port):
    state = broker_state(sqlite_url, smtp_port, max_attempts=1)
    queued = enqueue_activation(state)
    claim(state.sessions, "crashed-worker", max_attempts=1, claim_seconds=60)

    run_once(state, "worker-2", settings=FAST, now=utcnow() + timedelta(seconds=61))

    row = stored(state, queued.id)
    assert row.status == "dead" and "abandoned" in row.last_error


def test_a_worker_never_takes_a_message_claimed_by_a_live_worker(sqlite_url, smtp_port, mailbox):
    state = broker_state(sqlite_url, smtp_port)
    queued = enqueue_activation(state)
    with transaction(state.sessions) as db:
        db.execute(update(OutboxMessage).where(OutboxMessage.id == queued.id).values(
            claimed_by="busy-worker", claimed_until=utcnow() + timedelta(minutes=5)))

    assert claim(state.sessions, "worker-2", max_attempts=8) == []
    assert run_once(state, "worker-2", settings=FAST) == 0
    assert mailbox.messages == []


def test_the_demo_delivers_from_a_thread_inside_the_broker(sqlite_url, smtp_port, mailbox):
    from broker.app import create_app

    config = make_config(sqlite_url, messaging={
        "smtp": {"port": smtp_port}, "default_sender": SENDER, "run_worker_in_process": True,
    })
    app = create_app(config)
    state = app.extensions["broker"]
    in_process = state.services["outbox_worker"]
    try:
        assert worker.start_in_process_worker(app) is in_process, "one thread per app"
        queued = enqueue_activation(state)
        for _ in range(200):
            if mailbox.messages:
                break
            threading.Event().wait(0.05)
    finally:
        in_process.shutdown()
    assert mailbox.message_ids() == [f"<{queued.message_key}@utility.test>"]
    assert not in_process.thread.is_alive()
