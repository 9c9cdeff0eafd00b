"""What a transport gets and how it says a delivery failed.

A transport raises :class:`TemporaryFailure` when trying again later may work (server down,
timeout, 4xx SMTP reply, 5xx HTTP status) and :class:`PermanentFailure` when it never will
(rejected address, 4xx HTTP status): the worker retries the first and buries the second.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class Envelope:
    """A claimed outbox message, detached from the database session."""

    id: int
    tenant: str
    channel: str
    recipient: str
    subject: str
    body_text: str
    body_html: str | None
    sender_name: str
    message_key: str
    attempts: int
    created_at: datetime


class DeliveryFailure(Exception):
    permanent = False


class TemporaryFailure(DeliveryFailure):
    """Try again later."""


class PermanentFailure(DeliveryFailure):
    """Never going to work; the message is dead."""

    permanent = True


class Transport(Protocol):
    def deliver(self, envelope: Envelope) -> None:
        """Hand the message over, or raise a DeliveryFailure (anything else counts as temporary)."""
