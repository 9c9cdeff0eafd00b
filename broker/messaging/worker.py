"""Delivering the outbox: claim, deliver, record; retry with backoff; bury after max attempts.

A worker claims due messages in one atomic UPDATE (on PostgreSQL over ``FOR UPDATE SKIP
LOCKED``, on SQLite under the write lock of ``BEGIN IMMEDIATE``), so one message has one worker at
a time, across threads, processes and hosts. Delivery happens outside any transaction. A worker
that dies mid-delivery leaves its claim to expire; the message is then retried with the same
``message_key``, so a receiver can drop the one repeat a protocol cannot prevent.

Claiming counts the attempt, so a message that crashes every worker still ends up dead.

Bodies carry codes and links: they are sealed at rest (``broker.crypto``), opened here when a
claim loads them, and replaced by ``REDACTED_BODY`` once delivered. A dead message keeps its
sealed body so support can retry it; so does an SMS the development gateway "delivered", whose
only reader is the outbox table.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from ..config import BrokerConfig
from ..db import transaction
from ..models import OutboxMessage, utcnow
from .delivery import DeliveryFailure, Envelope, Transport
from .sms import DevGateway, gateway_for
from .smtp import SmtpTransport

if TYPE_CHECKING:
    from flask import Flask

log = logging.getLogger("broker.messaging")

PENDING, SENT, DEAD = "pending", "sent", "dead"
REDACTED_BODY = "[delivered; content removed]"


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter: base * 2^(attempt-1), capped, then +-jitter."""

    base_seconds: float = 30.0
    max_seconds: float = 30 * 60.0
    jitter: float = 0.2

    def delay(self, attempts: int) -> timedelta:
        seconds = min(self.max_seconds, self.base_seconds * 2 ** max(0, attempts - 1))
        seconds *= 1 + random.uniform(-self.jitter, self.jitter)
        return timedelta(seconds=max(0.0, seconds))


@dataclass(frozen=True)
class WorkerSettings:
    batch_size: int = 10
    claim_seconds: float = 300.0
    poll_seconds: float = 1.0
    retry: RetryPolicy = RetryPolicy()


def transports_for(config: BrokerConfig) -> dict[str, Transport]:
    """The email and SMS transports the configuration describes."""
    messaging = config.messaging
    senders = {slug: t.sender_email for slug, t in config.tenants.items() if t.sender_email}
    return {
        "email": SmtpTransport(messaging.smtp, messaging.default_sender, tenant_senders=senders),
        "sms": gateway_for(messaging.sms),
    }


def default_worker_id(suffix: str = "") -> str:
    return f"{socket.gethostname()[:40]}:{os.getpid()}{':' + suffix if suffix else ''}"[:64]


def _unpack(source: Any) -> tuple[sessionmaker[Session], BrokerConfig]:
    """A BrokerState (anything with .sessions and .config) or a (sessions, config) pair."""
    if hasattr(source, "sessions") and hasattr(source, "config"):
        return source.sessions, source.config
    sessions, config = source
    return sessions, config


def claim(
    sessions: sessionmaker[Session],
    worker_id: str,
    *,
    max_attempts: int,
    batch_size: int = 10,
    claim_seconds: float = 300.0,
    now: datetime | None = None,
) -> list[Envelope]:
    """Atomically take up to ``batch_size`` due messages for ``worker_id`` (attempts + 1)."""
    now = now or utcnow()
    claimable = and_(
        OutboxMessage.status == PENDING,
        OutboxMessage.next_attempt_at <= now,
        OutboxMessage.attempts < max_attempts,
        or_(OutboxMessage.claimed_until.is_(None), OutboxMessage.claimed_until < now),
    )
    with transaction(sessions) as db:
        due = (
            select(OutboxMessage.id)
            .where(claimable)
            .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id)
            .limit(batch_size)
        )
        if db.get_bind().dialect.name == "postgresql":
            due = due.with_for_update(skip_locked=True)
        claimed = db.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id.in_(due.scalar_subquery()), claimable)
            .values(
                claimed_by=worker_id,
                claimed_until=now + timedelta(seconds=claim_seconds),
                attempts=OutboxMessage.attempts + 1,
            )
            .returning(OutboxMessage)
            .execution_options(synchronize_session=False)
        ).scalars().all()
        return sorted((_envelope(message) for message in claimed), key=lambda e: e.id)


def _envelope(message: OutboxMessage) -> Envelope:
    return Envelope(
        id=message.id,
        tenant=message.tenant,
        channel=message.channel,
        recipient=message.recipient,
        subject=message.subject,
        body_text=message.body_text,
        body_html=message.body_html,
        sender_name=message.sender_name,
        message_key=message.message_key,
        attempts=message.attempts,
        created_at=message.created_at,
    )


def bury_abandoned(
    sessions: sessionmaker[Session], max_attempts: int, now: datetime | None = None
) -> int:
    """Messages whose last allowed attempt was claimed and never finished are dead."""
    now = now or utcnow()
    with transaction(sessions) as db:
        result = db.execute(
            update(OutboxMessage)
            .where(
                OutboxMessage.status == PENDING,
                OutboxMessage.attempts >= max_attempts,
                OutboxMessage.claimed_until < now,
            )
            .values(
                status=DEAD, claimed_by=None, claimed_until=None,
                last_error="the last attempt was abandoned (worker stopped mid-delivery)",
            )
            .execution_options(synchronize_session=False)
        )
        return result.rowcount or 0


def _mark_sent(sessions: sessionmaker[Session], envelope: Envelope, *, redact: bool = True) -> None:
    # Delivered is a fact even if our claim expired meanwhile: record it unconditionally.
    values: dict[str, Any] = {"status": SENT, "sent_at": utcnow(), "claimed_by": None,
                              "claimed_until": None, "last_error": None}
    if redact:  # the code or link inside has reached its reader: keep no copy
        values.update(body_text=REDACTED_BODY, body_html=None)
    with transaction(sessions) as db:
        db.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == envelope.id)
            .values(**values)
            .execution_options(synchronize_session=False)
        )


def _mark_failed(
    sessions: sessionmaker[Session],
    envelope: Envelope,
    worker_id: str,
    error: str,
    *,
    dead: bool,
    retry_at: datetime,
) -> None:
    values: dict[str, Any] = {"claimed_by": None, "claimed_until": None, "last_error": error[:2000]}
    values.update({"status": DEAD} if dead else {"next_attempt_at": retry_at})
    with transaction(sessions) as db:
        db.execute(
            update(OutboxMessage)
            .where(
                OutboxMessage.id == envelope.id,
                OutboxMessage.status == PENDING,
                OutboxMessage.claimed_by == worker_id,  # a newer claim owns it otherwise
            )
            .values(**values)
            .execution_options(synchronize_session=False)
        )


def _release(sessions: sessionmaker[Session], envelopes: list[Envelope], worker_id: str) -> None:
    """Hand back claims we will not get to, without counting them as attempts."""
    if not envelopes:
        return
    with transaction(sessions) as db:
        db.execute(
            update(OutboxMessage)
            .where(
                OutboxMessage.id.in_([e.id for e in envelopes]),
                OutboxMessage.claimed_by == worker_id,
            )
            .values(claimed_by=None, claimed_until=None, attempts=OutboxMessage.attempts - 1)
            .execution_options(synchronize_session=False)
        )


def run_once(
    source: Any,
    worker_id: str,
    *,
    transports: Mapping[str, Transport] | None = None,
    settings: WorkerSettings = WorkerSettings(),
    now: datetime | None = None,
) -> int:
    """Claim one batch and deliver it; returns how many messages were delivered."""
    sessions, config = _unpack(source)
    max_attempts = config.messaging.max_attempts
    transports = transports if transports is not None else transports_for(config)
    bury_abandoned(sessions, max_attempts, now)
    envelopes = claim(
        sessions, worker_id, max_attempts=max_attempts, batch_size=settings.batch_size,
        claim_seconds=settings.claim_seconds, now=now,
    )
    started = time.monotonic()
    delivered = 0
    for position, envelope in enumerate(envelopes):
        if time.monotonic() - started > settings.claim_seconds / 2:
            _release(sessions, envelopes[position:], worker_id)  # before the claims run out
            break
        if _deliver(sessions, envelope, transports, worker_id, max_attempts, settings.retry, now):
            delivered += 1
    return delivered


def _deliver(
    sessions: sessionmaker[Session],
    envelope: Envelope,
    transports: Mapping[str, Transport],
    worker_id: str,
    max_attempts: int,
    retry: RetryPolicy,
    now: datetime | None,
) -> bool:
    context = {"outbox_id": envelope.id, "tenant": envelope.tenant, "channel": envelope.channel,
               "attempt": envelope.attempts}
    transport = transports.get(envelope.channel)
    try:
        if transport is None:
            raise DeliveryFailure(f"no transport for channel {envelope.channel!r}")
        transport.deliver(envelope)
    except Exception as error:  # noqa: BLE001 - any failure is recorded on the message
        permanent = isinstance(error, DeliveryFailure) and error.permanent
        dead = permanent or envelope.attempts >= max_attempts
        reason = str(error) if isinstance(error, DeliveryFailure) else repr(error)
        retry_at = (now or utcnow()) + retry.delay(envelope.attempts)
        _mark_failed(sessions, envelope, worker_id, reason, dead=dead, retry_at=retry_at)
        log.warning("outbox delivery failed" + (", message dead" if dead else ", will retry"),
                    extra={**context, "error": reason[:300]})
        return False
    if isinstance(transport, DevGateway):  # its only reader is the outbox table
        _mark_sent(sessions, envelope, redact=False)
    else:
        _mark_sent(sessions, envelope)
    log.info("outbox message delivered", extra=context)
    return True


def run_forever(
    source: Any,
    worker_id: str,
    stop: threading.Event,
    *,
    transports: Mapping[str, Transport] | None = None,
    settings: WorkerSettings = WorkerSettings(),
) -> None:
    """Deliver until ``stop`` is set; a database outage is logged and waited out."""
    _, config = _unpack(source)
    transports = transports if transports is not None else transports_for(config)
    while not stop.is_set():
        try:
            delivered = run_once(source, worker_id, transports=transports, settings=settings)
        except Exception:  # noqa: BLE001 - keep the worker alive through outages
            log.exception("outbox worker round failed")
            delivered = 0
        if delivered < settings.batch_size:
            stop.wait(settings.poll_seconds)


@dataclass
class InProcessWorker:
    thread: threading.Thread
    stop: threading.Event

    def shutdown(self, timeout: float = 10.0) -> None:
        self.stop.set()
        self.thread.join(timeout)


def start_in_process_worker(app: Flask) -> InProcessWorker | None:
    """The demo's delivery thread, when ``messaging.run_worker_in_process`` is set."""
    state = app.extensions["broker"]
    if not state.config.messaging.run_worker_in_process:
        return None
    existing = state.services.get("outbox_worker")
    if existing is not None:
        return existing
    stop = threading.Event()
    thread = threading.Thread(
        target=run_forever, args=(state, default_worker_id("thread"), stop),
        name="outbox-worker", daemon=True,
    )
    worker = InProcessWorker(thread=thread, stop=stop)
    state.services["outbox_worker"] = worker
    thread.start()
    return worker
