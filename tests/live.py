"""A broker served over real HTTP on a free loopback port, for end-to-end tests."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from flask import Flask
from werkzeug.serving import make_server

from broker.app import create_app
from broker.config import BrokerConfig


@dataclass
class LiveBroker:
    url: str
    app: Flask

    def issuer(self, tenant: str) -> str:
        return f"{self.url}/t/{tenant}"


@contextmanager
def serve_wsgi(app: Any, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve a WSGI app on a free port in a thread; yields its base URL."""
    server = make_server(host, 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=5)


@contextmanager
def live_broker(make: Callable[[str], BrokerConfig]) -> Iterator[LiveBroker]:
    """Start a broker whose public_url is its own address: ``make(public_url)`` builds config."""
    holder: dict[str, Flask] = {}

    def dispatch(environ: Any, start_response: Any) -> Any:
        return holder["app"](environ, start_response)

    server = make_server("127.0.0.1", 0, dispatch, threaded=True)
    url = f"http://127.0.0.1:{server.server_port}"
    app = create_app(make(url))
    holder["app"] = app
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield LiveBroker(url=url, app=app)
    finally:
        server.shutdown()
        thread.join(timeout=5)
        app.extensions["broker"].engine.dispose()
