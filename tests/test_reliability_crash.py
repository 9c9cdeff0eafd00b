"""kill -9 of a broker process in the middle of its work: all or nothing, nothing lost.

Each test starts a real broker process (a child, spawned), lets it run into the transaction it
is about, makes it stop right before the commit (its writes flushed to the database, a hook
tells the parent "inside" and waits), and SIGKILLs it. The database must then hold nothing of
that transaction; the same request made again must then give everything, exactly once.
The hook is the only thing the child does differently from a broker: it pauses, it never
changes what the flow writes. No timing is asserted; waits only guard against a hang.
"""

from __future__ import annotations

import multiprocessing
import os
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
import requests
from sqlalchemy import func, select

from broker import login_session
from broker.customers.digests import proof_hmac
from broker.messaging.worker import WorkerSettings, run_once
from broker.models import (
    AttemptCounter,
    AuditEvent,
    Binding,
    CustomerAccount,
    OutboxMessage,
    User,
    Verification,
    utcnow,
)

from .conftest import make_config
from .test_outbox_delivery import SENDER, Mailbox, enqueue_activation, free_port, start_smtp

TENANT = "aaro-vand"
EMAIL = "kirsten@example.dk"
PASSWORD = "Vandhane-Blaa-2024!"
BILL_CODE = "AB12CD34"
CUSTOMER_NUMBER = "7700123"
GUARD_SECONDS = 120  # only against a hang; never an assertion about speed
SPAWN = multiprocessing.get_context("spawn")


def _config(database_url: str, smtp_port: int = 1025):  # type: ignore[no-untyped-def]
    return make_config(database_url, messaging={
        "smtp": {"port": smtp_port, "timeout_seconds": 5}, "default_sender": SENDER,
    })


def _pause_inside(conn: Any, flush: Callable[[], None]) -> None:
    """Make the writes so far reach the database, tell the parent, and wait to be killed."""
    flush()
    conn.send("inside")
    time.sleep(GUARD_SECONDS * 10)


def _broker_child(config_data: dict[str, Any], pause_event: str, conn: Any) -> None:
    """A broker serving HTTP that pauses inside the transaction recording ``pause_event``."""
    from werkzeug.serving import make_server

    from broker import audit
    from broker.app import create_app
    from broker.config import parse_config

    real_record = audit.record

    def record(db, event, **fields):  # type: ignore[no-untyped-def]
        entry = real_record(db, event, **fields)
        if event == pause_event:
            _pause_inside(conn, db.flush)
        return entry

    audit.record = record  # type: ignore[assignment]
    app = create_app(parse_config(config_data))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    conn.send(server.server_port)
    server.serve_forever()


def _worker_child(config_data: dict[str, Any], conn: Any) -> None:
    """An outbox worker that pauses after its first delivery, before recording it as sent."""
    from broker.app import create_app
    from broker.config import parse_config
    from broker.messaging import worker

    def mark_sent(sessions, envelope):  # type: ignore[no-untyped-def]
        _pause_inside(conn, lambda: None)

    worker._mark_sent = mark_sent  # type: ignore[assignment]
    state = create_app(parse_config(config_data)).extensions["broker"]
    conn.send("ready")
    worker.run_once(state, "worker-killed")


@contextmanager
def _child(target: Callable[..., None], *args: Any) -> Iterator[tuple[Any, Any]]:
    parent_end, child_end = SPAWN.Pipe()
    process = SPAWN.Process(target=target, args=(*args, child_end), daemon=True)
    process.start()
    try:
        yield process, parent_end
    finally:
        if process.is_alive():
            os.kill(process.pid, signal.SIGKILL)
        process.join(GUARD_SECONDS)


def _receive(conn: Any) -> Any:
    assert conn.poll(GUARD_SECONDS), "the broker child did not answer"
    return conn.recv()


def _kill(process: Any) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.join(GUARD_SECONDS)
    assert process.exitcode == -signal.SIGKILL


def _post_in_background(url: str, data: dict[str, str],
                        cookies: dict[str, str] | None = None) -> threading.Thread:
    def post() -> None:
        try:
            requests.post(url, data=data, cookies=cookies, allow_redirects=False,
                          timeout=GUARD_SECONDS)
        except requests.RequestException:
            pass  # the server died under it: that is the point

    thread = threading.Thread(target=post, daemon=True)
    thread.start()
    return thread


def _count(app, model, *where) -> int:  # type: ignore[no-untyped-def]
    with app.extensions["broker"].sessions() as db:
        return db.scalar(select(func.count()).select_from(model).where(*where)) or 0


def _registration_form() -> dict[str, str]:
    return {"email": EMAIL, "name": "Kirsten Holm", "password": PASSWORD,
            "password_confirmation": PASSWORD, "privacy": "on"}


def test_a_broker_killed_inside_signup_leaves_no_half_made_account(database_url):
    from broker.app import create_app

    config = _config(database_url)
    app = create_app(config)
    with _child(_broker_child, config.model_dump(), "user_registered") as (process, conn):
        port = _receive(conn)
        request = _post_in_background(f"http://127.0.0.1:{port}/t/{TENANT}/register",
                                      _registration_form())
        assert _receive(conn) == "inside"
        _kill(process)
        request.join(GUARD_SECONDS)

    assert _count(app, User, User.email == EMAIL) == 0
    assert _count(app, Verification) == 0
    assert _count(app, OutboxMessage) == 0
    assert _count(app, AuditEvent, AuditEvent.event == "user_registered") == 0

    # The address is not blocked by a ghost: signing up again makes the whole account once.
    answer = app.test_client().post(f"/t/{TENANT}/register", data=_registration_form())
    assert answer.status_code == 200, answer.get_data(as_text=True)[:500]
    assert _count(app, User, User.email == EMAIL, User.status == "pending") == 1
    assert _count(app, Verification, Verification.purpose == "activation") == 1
    assert _count(app, OutboxMessage, OutboxMessage.recipient == EMAIL) == 1
    assert _count(app, AuditEvent, AuditEvent.event == "user_registered") == 1
    app.extensions["broker"].engine.dispose()


def _user_with_session(app) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    state = app.extensions["broker"]
    tenant = state.config.tenants[TENANT]
    with state.sessions() as db, db.begin():
        user = User(tenant=TENANT, subject=secrets.token_hex(16), email=EMAIL,
                    email_verified=True, name="Kirsten Holm", status="active")
        db.add(user)
        db.add(CustomerAccount(
            tenant=TENANT, number=CUSTOMER_NUMBER, kind="private", name="Kirsten Holm",
            bill_code_hmac=proof_hmac(state.config.hmac_key, "bill_code", BILL_CODE),
        ))
        db.flush()
        _, token = login_session.start(db, tenant, user, amr=["pwd"])
        return user.id, token


def test_a_broker_killed_inside_binding_binds_nothing_and_the_next_try_binds_once(
        database_url):
    from broker.app import create_app

    config = _config(database_url)
    app = create_app(config)
    user_id, token = _user_with_session(app)
    form = {"customer_number": CUSTOMER_NUMBER, "proof_kind": "bill_code",
            "proof_value": BILL_CODE}
    with _child(_broker_child, config.model_dump(), "customer_bound") as (process, conn):
        port = _receive(conn)
        request = _post_in_background(f"http://127.0.0.1:{port}/t/{TENANT}/customer-accounts",
                                      form, cookies={login_session.cookie_name(TENANT): token})
        assert _receive(conn) == "inside"
        _kill(process)
        request.join(GUARD_SECONDS)

    assert _count(app, Binding) == 0
    assert _count(app, AuditEvent, AuditEvent.event == "customer_bound") == 0
    # The attempt reserved in that transaction went with it: no try was used up.
    assert _count(app, AttemptCounter) == 0

    browser = app.test_client()
    browser.set_cookie(login_session.cookie_name(TENANT), token, path=f"/t/{TENANT}")
    answer = browser.post(f"/t/{TENANT}/customer-accounts", data=form)
    assert answer.status_code == 200, answer.get_data(as_text=True)[:500]
    assert _count(app, Binding, Binding.user_id == user_id) == 1
    assert _count(app, AuditEvent, AuditEvent.event == "customer_bound") == 1
    app.extensions["broker"].engine.dispose()


def test_a_worker_killed_mid_delivery_loses_nothing_and_repeats_only_with_the_same_message_id(
        database_url):
    from broker.app import create_app

    smtp_port = free_port()
    mailbox = Mailbox()
    controller = start_smtp(mailbox, smtp_port)
    try:
        config = _config(database_url, smtp_port)
        state = create_app(config).extensions["broker"]
        queued = [enqueue_activation(state, to=f"kunde{i}@example.test") for i in range(3)]
        keys = {m.message_key for m in queued}

        with _child(_worker_child, config.model_dump()) as (process, conn):
            assert _receive(conn) == "ready"
            assert _receive(conn) == "inside"  # one message handed to SMTP, not yet recorded
            _kill(process)

        assert len(mailbox.messages) == 1
        [in_flight] = mailbox.message_ids()
        with state.sessions() as db:
            rows = db.scalars(select(OutboxMessage)).all()
        assert {r.status for r in rows} == {"pending"}  # none lost, none recorded as sent

        # Once the dead worker's claims run out, another worker finishes the job.
        later = utcnow() + timedelta(seconds=WorkerSettings().claim_seconds + 1)
        assert run_once(state, "worker-2", now=later) == 3
        assert run_once(state, "worker-2", now=later + timedelta(hours=1)) == 0

        received = mailbox.message_ids()
        assert sorted(received) == sorted(
            [in_flight] + [f"<{key}@utility.test>" for key in keys]
        )
        # The only repeat is the message in flight at the kill, under the same Message-ID,
        # so the receiving side can drop it; every other message arrived exactly once.
        assert received.count(in_flight) == 2
        assert len(set(received)) == 3
        with state.sessions() as db:
            rows = db.scalars(select(OutboxMessage)).all()
        assert {r.status for r in rows} == {"sent"}
        state.engine.dispose()
    finally:
        controller.stop()


@pytest.fixture(autouse=True)
def _no_stray_children() -> Iterator[None]:
    yield
    for child in SPAWN.active_children():
        os.kill(child.pid, signal.SIGKILL)
        child.join(GUARD_SECONDS)
