"""The demo's dev outbox: catches every email (SMTP) and SMS (webhook) and shows them on a page.

A newcomer trying the demo signs up, opens http://127.0.0.1:5003/ and clicks the activation link.
Like a real receiver, it drops a repeat of a message it already has (same Message-ID or
idempotency key), so the page shows what a customer would see.
"""

from __future__ import annotations

import email
import itertools
import threading
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from flask import Flask, abort, jsonify, render_template, request

from .config import BrokerConfig
from .messaging.text import paragraphs

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"


@dataclass
class CapturedMessage:
    id: int
    channel: str
    to: str
    text: str
    key: str
    received_at: str
    sender: str = ""
    subject: str = ""
    html: str | None = None
    repeats: int = 0
    headers: dict[str, str] = field(default_factory=dict)


class Mailbag:
    """Captured messages, newest first; thread-safe (SMTP and HTTP threads both add)."""

    def __init__(self) -> None:
        self._messages: list[CapturedMessage] = []
        self._by_key: dict[str, CapturedMessage] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def add(self, channel: str, to: str, text: str, key: str, **fields: Any) -> CapturedMessage:
        with self._lock:
            if key and key in self._by_key:
                existing = self._by_key[key]
                existing.repeats += 1
                return existing
            message = CapturedMessage(
                id=next(self._ids), channel=channel, to=to, text=text, key=key,
                received_at=datetime.now(UTC).isoformat(timespec="seconds"), **fields,
            )
            self._messages.insert(0, message)
            if key:
                self._by_key[key] = message
            return message

    def all(self) -> list[CapturedMessage]:
        with self._lock:
            return list(self._messages)

    def get(self, message_id: int) -> CapturedMessage | None:
        return next((m for m in self.all() if m.id == message_id), None)


class _SmtpHandler:
    def __init__(self, mailbag: Mailbag) -> None:
        self.mailbag = mailbag

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        parsed = email.message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        text_part = parsed.get_body(("plain",))
        html_part = parsed.get_body(("html",))
        self.mailbag.add(
            "email",
            to=", ".join(envelope.rcpt_tos),
            text=text_part.get_content() if text_part else "",
            html=html_part.get_content() if html_part else None,
            key=str(parsed.get("Message-ID", "")),
            sender=str(parsed.get("From", "")),
            subject=str(parsed.get("Subject", "")),
            headers={name: str(value) for name, value in parsed.items()},
        )
        return "250 OK: captured by the dev outbox"


def start_smtp_server(mailbag: Mailbag, host: str, port: int) -> Controller:
    controller = Controller(_SmtpHandler(mailbag), hostname=host, port=port)
    controller.start()
    return controller


def create_outbox_app(mailbag: Mailbag) -> Flask:
    app = Flask(__name__, template_folder=str(TEMPLATES_DIR), static_folder=None)
    app.jinja_env.filters["paragraphs"] = paragraphs

    @app.get("/")
    def index() -> str:
        return render_template("devoutbox/index.html", messages=mailbag.all())

    @app.get("/messages/<int:message_id>.html")
    def html_part(message_id: int) -> Any:
        message = mailbag.get(message_id)
        if message is None or not message.html:
            abort(404)
        # Shown as the mail client would; sandboxed so a message cannot script this page.
        return message.html, 200, {
            "Content-Type": "text/html; charset=utf-8",
            "Content-Security-Policy": "sandbox allow-popups allow-popups-to-escape-sandbox",
        }

    @app.get("/api/messages")
    def api_messages() -> Any:
        return jsonify([asdict(m) for m in mailbag.all()])

    @app.post("/sms")
    def sms_webhook() -> Any:
        payload = request.get_json(silent=True) or {}
        if not isinstance(payload.get("to"), str) or not isinstance(payload.get("text"), str):
            return jsonify(error="expected JSON with 'to' and 'text'"), 400
        key = str(payload.get("idempotency_key") or request.headers.get("Idempotency-Key", ""))
        message = mailbag.add("sms", to=payload["to"], text=payload["text"], key=key)
        return jsonify(id=message.id, repeat=message.repeats > 0)

    return app


def outbox_server(config: BrokerConfig, host: str) -> tuple[str, Flask, int, str]:
    """The demo entry: starts the SMTP catcher and returns (name, app, port, link)."""
    from .demo import OUTBOX_PORT

    mailbag = Mailbag()
    start_smtp_server(mailbag, host, config.messaging.smtp.port)
    return "outbox", create_outbox_app(mailbag), OUTBOX_PORT, f"http://{host}:{OUTBOX_PORT}/"
