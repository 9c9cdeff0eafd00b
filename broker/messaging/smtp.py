"""Email over SMTP: plain, STARTTLS or TLS, optional login, text and HTML parts.

The Message-ID is derived from the outbox ``message_key``, so every retry of one message carries
the same id and a receiving system can drop a repeat (the one window we cannot close: the server
accepted, then we crashed before recording it).
"""

from __future__ import annotations

import smtplib
import ssl
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

from ..config import SmtpConfig
from .delivery import Envelope, PermanentFailure, TemporaryFailure


def message_id(message_key: str, from_address: str) -> str:
    domain = from_address.rpartition("@")[2] or "broker.invalid"
    return f"<{message_key}@{domain}>"


def build_email(envelope: Envelope, from_address: str) -> EmailMessage:
    """The MIME message for one outbox row: text part, HTML alternative, stable headers."""
    message = EmailMessage()
    username, _, domain = from_address.partition("@")
    message["From"] = Address(display_name=envelope.sender_name, username=username, domain=domain)
    message["To"] = envelope.recipient
    message["Subject"] = envelope.subject
    message["Date"] = format_datetime(envelope.created_at)
    message["Message-ID"] = message_id(envelope.message_key, from_address)
    message["Auto-Submitted"] = "auto-generated"
    message["X-Auto-Response-Suppress"] = "All"
    message.set_content(envelope.body_text)
    if envelope.body_html:
        message.add_alternative(envelope.body_html, subtype="html")
    return message


class SmtpTransport:
    """Delivers emails to one SMTP server; a new connection per delivery keeps failures local."""

    def __init__(
        self,
        settings: SmtpConfig,
        from_address: str,
        *,
        tenant_senders: dict[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.settings = settings
        self.from_address = from_address
        self.tenant_senders = tenant_senders or {}
        self.ssl_context = ssl_context or ssl.create_default_context()

    def sender_for(self, tenant: str) -> str:
        return self.tenant_senders.get(tenant) or self.from_address

    def deliver(self, envelope: Envelope) -> None:
        message = build_email(envelope, self.sender_for(envelope.tenant))
        try:
            with self._connect() as connection:
                connection.send_message(message)
        except smtplib.SMTPRecipientsRefused as error:
            codes = [code for code, _ in error.recipients.values()]
            failure = PermanentFailure if all(c >= 500 for c in codes) else TemporaryFailure
            raise failure(f"recipient refused: {codes}") from None
        except (smtplib.SMTPAuthenticationError, smtplib.SMTPSenderRefused) as error:
            # Our credentials or sender address: an operator fixes them, the message waits.
            raise TemporaryFailure(f"SMTP {error.smtp_code}: {_text(error.smtp_error)}") from None
        except smtplib.SMTPResponseException as error:
            failure = PermanentFailure if error.smtp_code >= 500 else TemporaryFailure
            raise failure(f"SMTP {error.smtp_code}: {_text(error.smtp_error)}") from None
        except (smtplib.SMTPException, OSError) as error:  # includes timeouts and TLS errors
            raise TemporaryFailure(f"{type(error).__name__}: {error}") from None

    def _connect(self) -> smtplib.SMTP:
        settings = self.settings
        if settings.security == "tls":
            connection: smtplib.SMTP = smtplib.SMTP_SSL(
                settings.host, settings.port, timeout=settings.timeout_seconds,
                context=self.ssl_context,
            )
        else:
            connection = smtplib.SMTP(
                settings.host, settings.port, timeout=settings.timeout_seconds
            )
        try:
            if settings.security == "starttls":
                connection.starttls(context=self.ssl_context)
            if settings.username:
                connection.login(settings.username, settings.password or "")
        except BaseException:
            connection.close()
            raise
        return connection


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value
