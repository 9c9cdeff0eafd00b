"""Security review fixes for local accounts: pre-registration takeover, the password-creation
step bound to its browser, non-ASCII TOTP digits, and the activation resend throttle.

Each test tries the attack over the Flask test client; two test clients are two browsers.
"""

from __future__ import annotations

import secrets
from typing import Any

import pyotp
import pytest
from sqlalchemy import select

from broker import db as database
from broker.app import create_app
from broker.demo import demo_tenants
from broker.models import User

from .accounts_support import (
    DK,
    ES,
    GOOD_PASSWORD,
    NO,
    code_in,
    last_mail,
    link_in,
    log_in,
    make_app,
    register,
    user,
)
from .conftest import PORTAL_SECRET, make_config

VICTIM = "victim@example.no"
SQUATTER_PASSWORD = "Squatter-Owns-It-42"


@pytest.fixture
def app(sqlite_url):  # type: ignore[no-untyped-def]
    application = make_app(sqlite_url)
    application.config["PROPAGATE_EXCEPTIONS"] = False  # a crash shows as the 500 a user sees
    yield application
    application.extensions["broker"].engine.dispose()


def _set_password(client, tenant: str, location: str):  # type: ignore[no-untyped-def]
    step = location.split("step=", 1)[1]
    return client.post(f"/t/{tenant}/activate/password", data={
        "step": step, "password": GOOD_PASSWORD, "password_confirmation": GOOD_PASSWORD})


# --- 1. pre-registration takeover -------------------------------------------------------------


def test_a_squatters_password_dies_when_the_owner_activates_with_the_code_of_her_registration(
    app,
):
    squatter, owner = app.test_client(), app.test_client()
    register(squatter, NO, VICTIM, password=SQUATTER_PASSWORD)
    register(owner, NO, VICTIM)  # the owner signs up later: only a fresh code is sent
    activated = owner.post(f"/t/{NO}/activate",
                           data={"email": VICTIM, "code": code_in(last_mail(app, VICTIM))})
    # Not logged in with a password somebody else chose: she chooses one now.
    assert activated.status_code == 302 and "/activate/password" in activated.headers["Location"]
    assert user(app, VICTIM).status == "active" and user(app, VICTIM).password_hash is None
    assert log_in(squatter, NO, VICTIM, SQUATTER_PASSWORD).status_code == 401
    assert _set_password(owner, NO, activated.headers["Location"]).status_code == 302
    assert log_in(app.test_client(), NO, VICTIM).status_code == 302
    assert log_in(squatter, NO, VICTIM, SQUATTER_PASSWORD).status_code == 401


def test_the_registering_browser_keeps_its_password_and_goes_straight_in(app):
    browser = app.test_client()
    register(browser, NO, VICTIM)
    activated = browser.post(f"/t/{NO}/activate",
                             data={"email": VICTIM, "code": code_in(last_mail(app, VICTIM))})
    assert activated.status_code == 302
    assert "/activate/password" not in activated.headers["Location"]
    assert user(app, VICTIM).password_hash is not None


def test_an_activation_link_opened_in_another_browser_discards_the_squatters_password(app):
    email = "victim@example.dk"
    squatter, owner = app.test_client(), app.test_client()
    register(squatter, DK, email, password=SQUATTER_PASSWORD)
    opened = owner.post(link_in(last_mail(app, email)))
    assert opened.status_code == 302 and "/activate/password" in opened.headers["Location"]
    assert log_in(squatter, DK, email, SQUATTER_PASSWORD).status_code == 401
    assert user(app, email).password_hash is None


# --- 4. the password-creation step is bound to the browser ----------------------------------


def test_the_password_creation_url_does_nothing_in_another_browser(app):
    email = "maria@example.es"
    owner, stranger = app.test_client(), app.test_client()
    register(owner, ES, email, password=None, registration_type="private")
    opened = owner.post(link_in(last_mail(app, email)))
    location = opened.headers["Location"]
    assert "/activate/password" in location
    assert stranger.get(location).status_code == 410
    assert _set_password(stranger, ES, location).status_code == 410
    assert user(app, email).password_hash is None
    assert owner.get(location).status_code == 200
    assert _set_password(owner, ES, location).status_code == 302
    assert user(app, email).password_hash is not None


# --- 6. non-ASCII digits at the TOTP step ----------------------------------------------------


def test_superscript_digits_at_the_totp_step_are_a_wrong_code_not_a_crash(app):
    browser = app.test_client()
    register(browser, NO, VICTIM)
    browser.post(f"/t/{NO}/activate",
                 data={"email": VICTIM, "code": code_in(last_mail(app, VICTIM))})
    with app.extensions["broker"].sessions.begin() as db:
        db.scalar(select(User).where(User.email == VICTIM)).totp_secret = pyotp.random_base32()
    other = app.test_client()
    assert "/login/totp" in log_in(other, NO, VICTIM).headers["Location"]
    answer = other.post(f"/t/{NO}/login/totp", data={"code": "²²²²²²"})
    assert answer.status_code == 401


# --- 8. the activation resend is throttled per address ---------------------------------------


def _throttled_app(url: str, **throttle: Any):  # type: ignore[no-untyped-def]
    tenants = demo_tenants(PORTAL_SECRET, "http://portal.test", "http://emulator.test")
    for tenant in tenants.values():
        tenant.update(argon2_time_cost=1, argon2_memory_kib=8192, resend_cooldown_seconds=0)
    application = create_app(make_config(url, tenants=tenants, throttle={
        "key_prefix": "t" + secrets.token_hex(6), "strategy": "moving-window",  # exact counts
        **throttle}))
    application.config["TESTING"] = True
    return application


def test_resending_activation_to_one_address_is_throttled(sqlite_url):
    application = _throttled_app(sqlite_url, registration={"per_address": "",
                                                           "per_target": "2/minute"})
    with database.transaction(application.extensions["broker"].sessions) as db:
        db.add(User(tenant=NO, subject=secrets.token_hex(8), email=VICTIM, status="pending"))
    answers = [
        application.test_client().post(f"/t/{NO}/activation/resend", data={"email": VICTIM},
                                       environ_base={"REMOTE_ADDR": f"198.51.100.{n}"})
        for n in range(3)
    ]
    assert [a.status_code for a in answers] == [200, 200, 429]
    application.extensions["broker"].engine.dispose()
