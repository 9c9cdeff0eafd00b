"""Composing email and SMS from templates and putting them in the outbox.

Flows call :func:`send_email` and :func:`send_sms` inside the transaction of the state change
that causes the message; nothing is sent here (see ``broker.messaging.worker``). Flows must not
import Flask, so the texts come from a standalone Jinja environment over ``templates/``.

Template files, one per message and language (English is the fallback):

- ``templates/email/<name>.<locale>.txt`` with ``{% block subject %}`` and ``{% block body %}``;
  the HTML part is ``email/<name>.<locale>.html`` or ``email/<name>.html`` when present,
  otherwise ``email/_layout.html`` around the text body (links clickable).
- ``templates/sms/<name>.<locale>.txt``.
"""

from __future__ import annotations

from datetime import timedelta
from email.errors import HeaderParseError
from email.headerregistry import Address
from pathlib import Path
from typing import Any

import phonenumbers
from jinja2 import (
    Environment,
    FileSystemLoader,
    StrictUndefined,
    Template,
    TemplateNotFound,
    select_autoescape,
)
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from ..config import SmsConfig, TenantConfig
from ..models import OutboxMessage, utcnow
from .outbox import enqueue
from .text import inert, linkify, paragraphs

TEMPLATES_DIR = Path(__file__).resolve().parent.parent.parent / "templates"
FALLBACK_LOCALE = "en"

# What each template needs from the caller (besides ``tenant``), so a flow learns at once.
EMAIL_TEMPLATES: dict[str, tuple[str, ...]] = {
    "activation_code": ("code", "minutes"),
    "activation_link": ("link", "hours"),
    "password_reset": ("link", "minutes"),
    "account_locked": ("link",),
    "email_change_verify": ("link", "hours"),
    "email_changed_notice": ("new_email",),
    "forgot_customer_number": ("accounts", "pin_valid_days"),
    "invitation": ("inviter_name", "customer_number", "link", "days"),
    "link_identity_code": ("code", "minutes", "provider"),
}
SMS_TEMPLATES: dict[str, tuple[str, ...]] = {
    "code": ("code", "minutes"),
    "forgot_customer_number": ("accounts", "pin_valid_days"),
}


class InvalidEmailAddress(ValueError):
    """The recipient is not a usable email address."""


class InvalidPhoneNumber(ValueError):
    """The number cannot be a mobile number in E.164 form (for the tenant's country)."""


class SmsLimitReached(Exception):
    """Too many SMS in the last hour to this number or from this tenant; try later."""

    def __init__(self, scope: str, limit: int) -> None:
        super().__init__(f"at most {limit} SMS per hour per {scope}")
        self.scope = scope
        self.limit = limit


_environment = Environment(
    loader=FileSystemLoader(str(TEMPLATES_DIR)),
    autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=False,
)
_environment.filters["linkify"] = linkify
_environment.filters["paragraphs"] = paragraphs


def _localized(folder: str, name: str, locale: str, extension: str) -> Template | None:
    for candidate in (locale, FALLBACK_LOCALE):
        try:
            return _environment.get_template(f"{folder}/{name}.{candidate}.{extension}")
        except TemplateNotFound:
            continue
    return None


def _check_context(kind: str, known: dict[str, tuple[str, ...]], name: str, context: dict) -> None:
    if name not in known:
        raise ValueError(f"unknown {kind} template {name!r}; known: {sorted(known)}")
    missing = [key for key in known[name] if key not in context]
    if missing:
        raise TypeError(f"{kind} template {name!r} needs {', '.join(missing)}")


def _render_block(template: Template, block: str, context: dict[str, Any]) -> str:
    rendered = "".join(template.blocks[block](template.new_context(context)))
    return rendered.strip()


def sender_name(tenant: TenantConfig) -> str:
    return tenant.sender_name or tenant.name


# Context values that people wrote (not the utility, not the broker): made inert (text.inert).
WRITTEN_BY_USERS = ("inviter_name",)


def render_email(
    tenant: TenantConfig, template: str, locale: str, **context: Any
) -> tuple[str, str, str]:
    """(subject, text, html) of an email in ``locale``, falling back to English."""
    _check_context("email", EMAIL_TEMPLATES, template, context)
    values = {"tenant": tenant, "locale": locale, **context}
    for key in WRITTEN_BY_USERS:
        if isinstance(values.get(key), str):
            values[key] = inert(values[key])
    source = _localized("email", template, locale, "txt")
    if source is None:
        raise ValueError(f"email template {template!r} has no English text")
    subject = " ".join(_render_block(source, "subject", values).split())
    body = _render_block(source, "body", values) + "\n"
    html_template = _localized("email", template, locale, "html")
    if html_template is None:
        try:
            html_template = _environment.get_template(f"email/{template}.html")
        except TemplateNotFound:
            html_template = _environment.get_template("email/_layout.html")
    html = html_template.render(subject=subject, body_text=body, **values)
    return subject, body, html


def render_sms(tenant: TenantConfig, template: str, locale: str, **context: Any) -> str:
    _check_context("sms", SMS_TEMPLATES, template, context)
    source = _localized("sms", template, locale, "txt")
    if source is None:
        raise ValueError(f"sms template {template!r} has no English text")
    return source.render(tenant=tenant, locale=locale, **context).strip()


def normalize_email(address: str) -> str:
    """The address as a header can carry it; refuses CR/LF and anything that is not addr-spec."""
    if any(c in address for c in "\r\n") or "@" not in address:
        raise InvalidEmailAddress("not an email address")
    try:
        parsed = Address(addr_spec=address.strip())
    except (HeaderParseError, ValueError, IndexError):
        raise InvalidEmailAddress("not an email address") from None
    if not parsed.username or "." not in parsed.domain:
        raise InvalidEmailAddress("not an email address")
    return parsed.addr_spec


def stored_address(typed: str) -> str:
    """A typed address as the broker stores and looks it up: a real address (normalize_email:
    quotes, comments and spaces read out), trimmed and lower-case. Raises InvalidEmailAddress."""
    return normalize_email(typed).strip().lower()


def normalize_phone(number: str, country: str) -> str:
    """E.164 (``+4791234567``); national numbers are read in the tenant's ``country``."""
    try:
        parsed = phonenumbers.parse(number, country)
    except phonenumbers.NumberParseException:
        raise InvalidPhoneNumber("not a phone number") from None
    if not phonenumbers.is_valid_number(parsed):
        raise InvalidPhoneNumber("not a valid phone number")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def send_email(
    db: Session, tenant: TenantConfig, to: str, template: str, locale: str, **context: Any
) -> OutboxMessage:
    """Render the email and add it to the caller's transaction."""
    recipient = normalize_email(to)
    subject, body, html = render_email(tenant, template, locale, **context)
    return enqueue(
        db,
        tenant=tenant.slug,
        channel="email",
        recipient=recipient,
        subject=subject,
        body_text=body,
        body_html=html,
        sender_name=sender_name(tenant),
    )


def send_sms(
    db: Session,
    tenant: TenantConfig,
    to: str,
    template: str,
    locale: str,
    *,
    limits: SmsConfig | None = None,
    **context: Any,
) -> OutboxMessage:
    """Render the SMS and add it to the caller's transaction, within the hourly caps.

    Pass ``limits=config.messaging.sms`` so the configured caps apply (the defaults otherwise).
    """
    limits = limits or SmsConfig()
    recipient = normalize_phone(to, tenant.country)
    body = render_sms(tenant, template, locale, **context)
    _lock_number(db, recipient)
    since = utcnow() - timedelta(hours=1)
    recent = select(func.count(OutboxMessage.id)).where(
        OutboxMessage.channel == "sms", OutboxMessage.created_at > since
    )
    to_number = db.scalar(recent.where(OutboxMessage.recipient == recipient)) or 0
    if to_number >= limits.max_per_number_per_hour:
        raise SmsLimitReached("number", limits.max_per_number_per_hour)
    from_tenant = db.scalar(recent.where(OutboxMessage.tenant == tenant.slug)) or 0
    if from_tenant >= limits.max_per_tenant_per_hour:
        raise SmsLimitReached("tenant", limits.max_per_tenant_per_hour)
    message = enqueue(
        db,
        tenant=tenant.slug,
        channel="sms",
        recipient=recipient,
        body_text=body,
        sender_name=sender_name(tenant),
    )
    db.flush()
    return message


def _lock_number(db: Session, recipient: str) -> None:
    """Serialize concurrent sends to one number so the per-number cap holds exactly.

    PostgreSQL: a transaction-scoped advisory lock. SQLite transactions already write one at a
    time (BEGIN IMMEDIATE).
    """
    if db.get_bind().dialect.name == "postgresql":
        lock = text("SELECT pg_advisory_xact_lock(hashtext(:key))")
        db.execute(lock, {"key": f"sms:{recipient}"})
