"""Secrets the broker reads back are not readable from the database (a dump, a backup, a
replica): message bodies until delivered and nothing after, TOTP secrets, signing keys."""

from __future__ import annotations

import pyotp
import pytest
from sqlalchemy import select, text

from broker import crypto
from broker.app import create_app
from broker.db import transaction
from broker.demo import demo_tenants
from broker.messaging.outbox import retry_dead
from broker.messaging.worker import REDACTED_BODY, run_once
from broker.models import Flow, SigningKey, Staff, User
from broker.oidc import keys
from flows import totp

from .accounts_support import NO, code_in, last_mail, register
from .conftest import PORTAL_SECRET, make_config
from .test_outbox_delivery import FAST, Mailbox, free_port, start_smtp

EMAIL = "kari@example.no"


@pytest.fixture
def mailbox_port():
    port = free_port()
    handler = Mailbox(refuse=("nobody@example.no",))
    controller = start_smtp(handler, port)
    yield handler, port
    controller.stop()


def _app(database_url: str, smtp_port: int = 1):  # type: ignore[no-untyped-def]
    tenants = demo_tenants(PORTAL_SECRET, "http://portal.test", "http://emulator.test")
    for tenant in tenants.values():
        tenant.update(argon2_time_cost=1, argon2_memory_kib=8192, resend_cooldown_seconds=0)
    config = make_config(database_url, tenants=tenants, messaging={
        "smtp": {"port": smtp_port, "timeout_seconds": 5}, "max_attempts": 2})
    application = create_app(config)
    application.config["TESTING"] = True
    return application


def _raw(app, sql: str, **params: object):  # type: ignore[no-untyped-def]
    """What a copy of the database shows: the stored values, past every column type."""
    with app.extensions["broker"].engine.connect() as connection:
        return connection.execute(text(sql), params).one()


def test_a_delivered_activation_code_leaves_no_code_in_the_outbox(database_url, mailbox_port):
    mailbox, port = mailbox_port
    app = _app(database_url, port)
    register(app.test_client(), NO, EMAIL)
    queued = last_mail(app, EMAIL)
    code = code_in(queued)
    waiting = _raw(app, "SELECT body_text, body_html FROM outbox WHERE id = :id", id=queued.id)
    assert all(value.startswith("v1:") and code not in value for value in waiting if value)

    assert run_once(app.extensions["broker"], "worker-1", settings=FAST) == 1

    [received] = mailbox.messages
    assert code in received.get_body(("plain",)).get_content()
    body_text, body_html = _raw(app, "SELECT body_text, body_html FROM outbox WHERE id = :id",
                                id=queued.id)
    assert code not in body_text and body_html is None
    delivered = last_mail(app, EMAIL)
    assert delivered.status == "sent" and delivered.body_text == REDACTED_BODY


def test_a_dead_message_keeps_its_sealed_body_so_support_can_send_it_again(sqlite_url,
                                                                           mailbox_port):
    mailbox, port = mailbox_port
    app = _app(sqlite_url, port)
    state = app.extensions["broker"]
    register(app.test_client(), NO, "nobody@example.no")
    queued = last_mail(app, "nobody@example.no")
    code = code_in(queued)

    run_once(state, "worker-1", settings=FAST)

    dead = last_mail(app, "nobody@example.no")
    assert dead.status == "dead" and code_in(dead) == code
    assert code not in _raw(app, "SELECT body_text FROM outbox WHERE id = :id", id=queued.id)[0]
    mailbox.refuse = ()
    with transaction(state.sessions) as db:
        assert retry_dead(db, NO, queued.id)
    assert run_once(state, "worker-1", settings=FAST) == 1
    assert code in mailbox.messages[-1].get_body(("plain",)).get_content()


def test_a_sealed_secret_copied_into_a_message_body_does_not_open(sqlite_url):
    """Someone who can write to the database moves a staff TOTP secret into an email body to
    have the worker mail it out: the seal is bound to its column and refuses."""
    app = _app(sqlite_url)
    state = app.extensions["broker"]
    register(app.test_client(), NO, EMAIL)
    queued = last_mail(app, EMAIL)
    with transaction(state.sessions) as db:
        db.add(Staff(email="agent@utility.test", password_hash="x", roles=[], tenants=[],
                     totp_secret=pyotp.random_base32()))
    with state.engine.begin() as connection:
        connection.execute(text(
            "UPDATE outbox SET body_text = (SELECT totp_secret FROM staff) WHERE id = :id"
        ), {"id": queued.id})

    with pytest.raises(crypto.SealError):
        last_mail(app, EMAIL)


def test_totp_secrets_of_users_and_staff_hold_no_plain_key(database_url):
    app = _app(database_url)
    state = app.extensions["broker"]
    user_secret, staff_secret = pyotp.random_base32(), pyotp.random_base32()
    with transaction(state.sessions) as db:
        user = User(tenant=NO, subject="sub-totp", email=EMAIL, totp_secret=user_secret)
        staff = Staff(email="agent@utility.test", password_hash="x", roles=[], tenants=[],
                      totp_secret=staff_secret)
        db.add_all([user, staff])
        db.flush()
        user_id, staff_id = user.id, staff.id

    stored_user = _raw(app, "SELECT totp_secret FROM users WHERE id = :id", id=user_id)[0]
    stored_staff = _raw(app, "SELECT totp_secret FROM staff WHERE id = :id", id=staff_id)[0]
    assert user_secret not in stored_user and stored_user.startswith("v1:")
    assert staff_secret not in stored_staff and stored_staff.startswith("v1:")
    with state.sessions() as db:
        assert db.get(User, user_id).totp_secret == user_secret
        assert db.get(Staff, staff_id).totp_secret == staff_secret


def test_a_totp_enrolment_keeps_its_new_secret_sealed_until_confirmed(sqlite_url):
    app = _app(sqlite_url)
    state = app.extensions["broker"]
    tenant = state.config.tenants[NO]
    with transaction(state.sessions) as db:
        user = User(tenant=NO, subject="sub-enrol", email=EMAIL, status="active")
        db.add(user)
        db.flush()
        flow = totp.start_enrolment(db, tenant, user, purpose="profile")
        db.flush()
        secret, flow_id = totp.enrolment_secret(flow), flow.id

    stored = _raw(app, "SELECT data FROM flows WHERE id = :id", id=flow_id)[0]
    assert secret not in str(stored)
    with state.sessions() as db:
        assert totp.enrolment_secret(db.get(Flow, flow_id)) == secret


def test_a_signing_key_row_holds_no_private_key_material(database_url):
    app = _app(database_url)
    state = app.extensions["broker"]
    with transaction(state.sessions) as db:
        row = keys.rotate(db, state.config.tenants[NO], alg="ES256")
        kid, private = row.kid, dict(row.private_jwk)

    stored = _raw(app, "SELECT private_jwk FROM signing_keys WHERE kid = :kid", kid=kid)[0]
    assert stored.startswith("v1:")
    assert private["d"] not in stored and private["x"] not in stored
    with state.sessions() as db:
        assert db.scalar(select(SigningKey).where(SigningKey.kid == kid)).private_jwk == private


def test_the_key_ring_opens_the_sealed_key_and_publishes_only_its_public_half(sqlite_url):
    app = _app(sqlite_url)
    ring = app.extensions["broker"].services["keys"].ring(NO)

    jwks = app.test_client().get(f"/t/{NO}/jwks").get_json()

    private = ring.signing.as_dict(private=True)
    assert ring.signing_kid in {key["kid"] for key in jwks["keys"]}
    assert all("d" not in key for key in jwks["keys"])
    stored = _raw(app, "SELECT private_jwk FROM signing_keys WHERE kid = :kid",
                  kid=ring.signing_kid)[0]
    assert private["d"] not in stored
