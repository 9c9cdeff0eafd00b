"""Test harness: the upstream emulator on a real loopback port, and a scripted browser."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urljoin, urlsplit

import pytest
import requests
from werkzeug.serving import make_server

from broker.config import UpstreamConfig
from emulator import EmulatorState, create_emulator
from providers import build_provider, generate_provider_keys
from providers.base import OAuth2Provider
from providers.keys import ProviderKeys
from providers.metadata import DocumentCache

CALLBACK = "http://127.0.0.1:5000/t/demo/login/callback"


@dataclass
class RunningEmulator:
    url: str
    state: EmulatorState

    def discovery(self, kind: str, dialect: str | None = None, tenant: str | None = None) -> str:
        if tenant:
            return f"{self.url}/microsoft/{tenant}/v2.0/.well-known/openid-configuration"
        query = f"?dialect={dialect}" if dialect else ""
        return f"{self.url}/{kind}/.well-known/openid-configuration{query}"

    def next_token_defect(self, kind: str, defect: str) -> None:
        response = requests.post(f"{self.url}/{kind}/_test/next-token-defect",
                                 json={"defect": defect}, timeout=5)
        response.raise_for_status()


@pytest.fixture(scope="module")
def emulator() -> Iterator[RunningEmulator]:
    holder: dict[str, Any] = {}
    server = make_server("127.0.0.1", 0, lambda env, start: holder["app"](env, start),
                         threaded=True)
    url = f"http://127.0.0.1:{server.server_port}"
    holder["app"] = create_emulator(url)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield RunningEmulator(url, holder["app"].extensions["emulator"])
    server.shutdown()
    thread.join()


@pytest.fixture(scope="module")
def ftn_keys(emulator: RunningEmulator) -> ProviderKeys:
    """Our FTN keys, registered with the emulator the way a dev setup would."""
    keys = generate_provider_keys()
    response = requests.post(f"{emulator.url}/ftn/register-client",
                             json={"client_id": "broker-ftn", "jwks": keys.public_jwks()},
                             timeout=5)
    assert response.status_code == 201
    return keys


@pytest.fixture(scope="module")
def metadata_cache() -> DocumentCache:
    return DocumentCache()


def make_provider(emulator: RunningEmulator, kind: str, *, cache: DocumentCache,
                  keys: ProviderKeys | None = None, dialect: str | None = None,
                  tenant: str | None = None, **settings: Any) -> OAuth2Provider:
    config = UpstreamConfig(
        kind=kind,  # type: ignore[arg-type]
        client_id=f"broker-{kind}",
        client_secret=None if kind == "ftn" else f"emulator-secret-for-{kind}-0123456789",
        server_metadata_url=emulator.discovery(kind, dialect, tenant),
        dialect=dialect,
        **settings,
    )
    return build_provider(config, redirect_uri=CALLBACK, keys=keys, cache=cache)


def browse_login(authorize_url: str, persona: str, action: str = "consent",
                 **edits: str) -> dict[str, str]:
    """What a browser does: open the login page, pick the person, follow the redirect home.

    Returns the callback's query arguments without calling the callback.
    """
    page = requests.get(authorize_url, timeout=5)
    assert page.status_code == 200, page.text
    request_id = re.search(r'name="request_id" value="([^"]+)"', page.text)
    form_action = re.search(r'<form method="post" action="([^"]+)"', page.text)
    assert request_id and form_action
    answer = requests.post(
        urljoin(page.url, form_action.group(1)),
        data={"request_id": request_id.group(1), "persona": persona, "action": action, **edits},
        allow_redirects=False, timeout=5,
    )
    assert answer.status_code == 302, answer.text
    location = answer.headers["Location"]
    assert location.startswith(CALLBACK)
    return dict(parse_qsl(urlsplit(location).query))
