"""Helpers for the self-service account tests: a fast broker, reading the outbox, CSRF-free
bodies. Imported by test_registration, test_activation, test_password_reset, test_profile,
test_totp."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select

from broker.app import create_app
from broker.demo import demo_tenants
from broker.models import OutboxMessage, User

from .conftest import PORTAL_SECRET, make_config

DK = "aaro-vand"  # seed 000: activation link, dk-water policy
NO = "fjordvarme"  # seed 001: activation code
ES = "aguas-del-valle"  # seed 003: registration types, link first, then the password
GOOD_PASSWORD = "Tr0ll-Fjord-Sky"


def make_app(database_url: str, **tenant_overrides: dict[str, Any]):  # type: ignore[no-untyped-def]
    """The demo tenants with cheap argon2 and no resend cooldown unless overridden."""
    tenants = demo_tenants(PORTAL_SECRET, "http://portal.test", "http://emulator.test")
    for slug, tenant in tenants.items():
        tenant.update(argon2_time_cost=1, argon2_memory_kib=8192, resend_cooldown_seconds=0)
        tenant.update(tenant_overrides.get(slug, {}))
    application = create_app(make_config(database_url, tenants=tenants))
    application.config["TESTING"] = True
    return application


def running_app(database_url: str, **tenant_overrides: dict[str, Any]):  # type: ignore[no-untyped-def]
    """For a module's fixture: ``yield from running_app(url)``; disposes the engine after."""
    application = make_app(database_url, **tenant_overrides)
    yield application
    application.extensions["broker"].engine.dispose()


def db_session(app):  # type: ignore[no-untyped-def]
    return app.extensions["broker"].sessions()


def mails_to(app, recipient: str) -> list[OutboxMessage]:  # type: ignore[no-untyped-def]
    with db_session(app) as session:
        return list(session.scalars(
            select(OutboxMessage).where(OutboxMessage.recipient == recipient)
            .order_by(OutboxMessage.id)
        ))


def last_mail(app, recipient: str) -> OutboxMessage:  # type: ignore[no-untyped-def]
    mails = mails_to(app, recipient)
    assert mails, f"no email to {recipient}"
    return mails[-1]


def code_in(message: OutboxMessage) -> str:
    match = re.search(r"^\s+(\d{6})\s*$", message.body_text, re.MULTILINE)
    assert match, message.body_text
    return match.group(1)


def link_in(message: OutboxMessage) -> str:
    """The link's path (the test client talks to the app directly)."""
    match = re.search(r"http://broker\.test(/\S+)", message.body_text)
    assert match, message.body_text
    return match.group(1)


def user(app, email: str) -> User | None:  # type: ignore[no-untyped-def]
    with db_session(app) as session:
        return session.scalar(select(User).where(User.email == email))


def without_csrf(body: bytes) -> bytes:
    return re.sub(rb'name="csrf_token" value="[^"]*"', b'name="csrf_token" value=""', body)


def register(client, tenant: str, email: str, *, password: str | None = GOOD_PASSWORD,  # type: ignore[no-untyped-def]
             name: str = "Kari Nordmann", **extra: str):
    form = {"email": email, "name": name, "privacy": "on", **extra}
    if password is not None:
        form.update(password=password, password_confirmation=password)
    return client.post(f"/t/{tenant}/register", data=form)


def register_and_activate(app, tenant: str, email: str):  # type: ignore[no-untyped-def]
    """An active account with GOOD_PASSWORD: signed up, then activated with the emailed code.
    Returns the browser (a test client) that did it, which the activation signed in."""
    client = app.test_client()
    assert register(client, tenant, email).status_code in (200, 302)
    activated = client.post(f"/t/{tenant}/activate",
                            data={"email": email, "code": code_in(last_mail(app, email))})
    assert activated.status_code in (200, 302), activated.status_code
    return client


def log_in(client, tenant: str, email: str, password: str = GOOD_PASSWORD):  # type: ignore[no-untyped-def]
    return client.post(f"/t/{tenant}/login", data={"email": email, "password": password})
