"""SMS gateways: an interface, a generic JSON webhook, and the development kind.

A named provider becomes one more class with ``deliver(envelope)``; the worker does not care.
The outbox ``message_key`` is sent as the idempotency key so a gateway can drop a repeat.
"""

from __future__ import annotations

import logging
from typing import Protocol

import requests

from ..config import SmsConfig
from .delivery import Envelope, PermanentFailure, TemporaryFailure

log = logging.getLogger("broker.messaging")


class SmsGateway(Protocol):
    def deliver(self, envelope: Envelope) -> None: ...


class WebhookGateway:
    """POST {"to", "text", "idempotency_key"} as JSON with a Bearer token.

    2xx: delivered. 5xx, 429, timeouts and connection errors: try again later. Other 4xx: the
    gateway will never take this message, so it is dead.
    """

    def __init__(self, url: str, token: str | None, timeout_seconds: float) -> None:
        self.url = url
        self.token = token
        self.timeout_seconds = timeout_seconds
        self.http = requests.Session()

    def deliver(self, envelope: Envelope) -> None:
        headers = {"Idempotency-Key": envelope.message_key}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        payload = {
            "to": envelope.recipient,
            "text": envelope.body_text,
            "idempotency_key": envelope.message_key,
        }
        try:
            response = self.http.post(
                self.url, json=payload, headers=headers, timeout=self.timeout_seconds
            )
        except requests.RequestException as error:
            raise TemporaryFailure(f"{type(error).__name__}") from None
        if response.status_code < 300:
            return
        reason = f"gateway answered {response.status_code}"
        if response.status_code >= 500 or response.status_code == 429:
            raise TemporaryFailure(reason)
        raise PermanentFailure(reason)


class DevGateway:
    """Development: the SMS counts as delivered; its text stays readable in the outbox table."""

    def deliver(self, envelope: Envelope) -> None:
        log.info("sms kept in the outbox (dev gateway)", extra={"outbox_id": envelope.id})


def gateway_for(settings: SmsConfig) -> SmsGateway:
    if settings.kind == "webhook":
        assert settings.url  # the config refuses a webhook without a url
        return WebhookGateway(settings.url, settings.token, settings.timeout_seconds)
    return DevGateway()
