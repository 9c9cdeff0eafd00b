"""The demo's dev outbox: what the broker sent is readable on a page, links clickable."""

from __future__ import annotations

import threading

import pytest
import requests
from werkzeug.serving import make_server

from broker.db import transaction
from broker.demo import OUTBOX_PORT, demo_config
from broker.devoutbox import Mailbag, create_outbox_app, start_smtp_server
from broker.messaging.compose import send_email, send_sms
from broker.messaging.worker import run_once

from .conftest import make_config
from .test_outbox_delivery import free_port

LINK = "http://broker.test/t/aguas-del-valle/activate?token=tok123&lang=es"


@pytest.fixture
def dev_outbox():
    """The dev outbox as the demo runs it: SMTP catcher plus the web app on loopback."""
    mailbag = Mailbag()
    smtp_port = free_port()
    controller = start_smtp_server(mailbag, "127.0.0.1", smtp_port)
    server = make_server("127.0.0.1", 0, create_outbox_app(mailbag), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield smtp_port, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    controller.stop()


def test_a_newcomer_finds_the_activation_email_and_sms_with_a_clickable_link(sqlite_url,
                                                                             dev_outbox):
    from broker.app import create_app

    smtp_port, outbox_url = dev_outbox
    config = make_config(sqlite_url, messaging={
        "smtp": {"port": smtp_port},
        "sms": {"kind": "webhook", "url": f"{outbox_url}/sms", "token": "dev-outbox"},
    })
    state = create_app(config).extensions["broker"]
    tenant = config.tenants["aguas-del-valle"]
    with transaction(state.sessions) as db:
        send_email(db, tenant, "nuevo@example.test", "activation_link", "es", link=LINK, hours=48)
        sms = send_sms(db, tenant, "612 34 56 78", "code", "es", code="735102", minutes=10)

    assert run_once(state, "worker-1") == 2

    messages = requests.get(f"{outbox_url}/api/messages", timeout=5).json()
    assert [m["channel"] for m in messages] == ["sms", "email"], "newest first"
    text_message, mail = messages
    assert text_message["to"] == "+34612345678"
    assert text_message["key"] == sms.message_key
    assert "735102" in text_message["text"]
    assert mail["subject"] == "Active su cuenta"
    assert mail["to"] == "nuevo@example.test"
    assert LINK in mail["text"]

    page = requests.get(f"{outbox_url}/", timeout=5).text
    clickable = LINK.replace("&", "&amp;")
    assert f'<a href="{clickable}">{clickable}</a>' in page
    assert "Active su cuenta" in page
    html = requests.get(f"{outbox_url}/messages/{mail['id']}.html", timeout=5)
    assert html.status_code == 200
    assert "sandbox" in html.headers["Content-Security-Policy"]


def test_a_repeated_sms_with_the_same_key_is_shown_once():
    client = create_outbox_app(Mailbag()).test_client()
    payload = {"to": "+4791234567", "text": "482913", "idempotency_key": "k-1"}
    assert client.post("/sms", json=payload).json["repeat"] is False
    assert client.post("/sms", json=payload).json["repeat"] is True
    [shown] = client.get("/api/messages").json
    assert shown["repeats"] == 1
    assert client.post("/sms", json={"text": "no number"}).status_code == 400


def test_message_text_cannot_inject_markup_into_the_outbox_page():
    mailbag = Mailbag()
    text = '<script>alert(1)</script> http://x.test/?a="b'
    mailbag.add("sms", to="+4791234567", text=text, key="k")
    page = create_outbox_app(mailbag).test_client().get("/").get_data(as_text=True)
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;" in page


def test_the_demo_sends_sms_to_the_dev_outbox_and_mail_to_its_smtp_port(tmp_path):
    config = demo_config(tmp_path)
    assert config.messaging.sms.kind == "webhook"
    assert config.messaging.sms.url == f"http://127.0.0.1:{OUTBOX_PORT}/sms"
    assert config.messaging.smtp.port == 2525
    assert config.messaging.run_worker_in_process is True
