"""A broker served over real HTTP on a free loopback port, for end-to-end tests."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import requests
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


def submit_form(browser: requests.Session, page: requests.Response, action_hint: str,
                **fields: str) -> requests.Response:
    """Post the page's form whose action contains ``action_hint``, with its hidden fields
    (flow id, CSRF token), as a browser would; redirects are left to the caller."""
    forms = re.findall(r'<form method="post" action="([^"]*)"[^>]*>(.*?)</form>', page.text, re.S)
    action, body = next((a, b) for a, b in forms if action_hint in a)
    hidden = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', body))
    return browser.post(urljoin(page.url, action), data={**hidden, **fields},
                        allow_redirects=False)


def follow_to_portal(browser: requests.Session, response: requests.Response,
                     portal_prefix: str = "http://portal.test") -> requests.Response:
    """Follow the broker's redirects until one leaves for the portal (not followed)."""
    while response.status_code in (302, 303) and not response.headers["Location"].startswith(
            portal_prefix):
        response = browser.get(urljoin(response.url, response.headers["Location"]),
                               allow_redirects=False)
    return response
