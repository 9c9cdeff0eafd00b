"""The whole demo on free loopback ports: broker, demo portal, dev outbox (SMTP + page).

Used by the browser tests: what a newcomer clicks through, driven by a real browser.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from werkzeug.serving import make_server

from broker.app import create_app
from broker.config import parse_config
from broker.demo import demo_tenants, load_demo_customers
from broker.demo_portal import create_portal
from broker.devoutbox import Mailbag, create_outbox_app, start_smtp_server

PORTAL_SECRET = "browser-portal-secret-0123456789abcdefghij"


@dataclass
class Stack:
    broker_url: str
    portal_url: str
    outbox_url: str
    mailbag: Mailbag


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class _Dispatch:
    """A WSGI app set after the server is listening (its config needs the server's port)."""

    app: Any = None

    def __call__(self, environ: Any, start_response: Any) -> Any:
        return self.app(environ, start_response)


@contextmanager
def demo_stack(database_url: str, tmp_path: Path) -> Iterator[Stack]:
    with ExitStack() as stack:
        servers = {}
        for name in ("broker", "portal", "outbox"):
            dispatch = _Dispatch()
            server = make_server("127.0.0.1", 0, dispatch, threaded=True)
            servers[name] = (server, dispatch, f"http://127.0.0.1:{server.server_port}")
        broker_url, portal_url, outbox_url = (servers[n][2] for n in ("broker", "portal",
                                                                      "outbox"))
        smtp_port = free_port()
        mailbag = Mailbag()
        controller = start_smtp_server(mailbag, "127.0.0.1", smtp_port)
        stack.callback(controller.stop)
        tenants = demo_tenants(PORTAL_SECRET, portal_url, "http://127.0.0.1:9", tmp_path)
        for tenant in tenants.values():
            tenant.update(argon2_time_cost=1, argon2_memory_kib=8192)
        config = parse_config({
            "public_url": broker_url, "database_url": database_url,
            "secret_key": "browser-secret-key-0123456789abcdefghij",
            "hmac_key": "browser-hmac-key-0123456789abcdefghijkl",
            "dev_mode": True,
            "messaging": {"run_worker_in_process": True,
                          "smtp": {"port": smtp_port},
                          "sms": {"kind": "webhook", "url": f"{outbox_url}/sms"}},
            "tenants": tenants,
        }, "browser test config")
        broker = create_app(config)
        load_demo_customers(config)
        servers["broker"][1].app = broker
        servers["portal"][1].app = create_portal(config, portal_url, "portal-" + "k" * 32)
        servers["outbox"][1].app = create_outbox_app(mailbag)
        for server, _, _ in servers.values():
            thread = threading.Thread(target=server.serve_forever, daemon=True)
            thread.start()
            stack.callback(thread.join, 5)
            stack.callback(server.shutdown)
        worker = broker.extensions["broker"].services.get("outbox_worker")
        if worker is not None:
            stack.callback(worker.stop.set)
        stack.callback(broker.extensions["broker"].engine.dispose)
        yield Stack(broker_url, portal_url, outbox_url, mailbag)
