"""A broker wired to the upstream emulator, and a scripted browser that logs in through it."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urljoin, urlparse

import requests
from joserfc import jwt
from joserfc.jwk import KeySet
from sqlalchemy import select

from broker.config import BrokerConfig, parse_config
from broker.models import OutboxMessage

from .conftest import PORTAL_SECRET, make_config
from .live import LiveBroker

PORTAL = "demo-portal"


def portal_redirect(tenant: str) -> str:
    return f"http://portal.test/{tenant}/callback"


def broker_config(database_url: str, public_url: str, emulator_url: str,
                  ftn_keys_file: str) -> BrokerConfig:
    """The demo tenants, their upstreams pointed at the running emulator, CSRF on, cheap
    argon2; aaro-vand (seed 000) also offers Google so one tenant mixes strong and weak logins."""
    data = make_config(database_url, public_url=public_url, emulator_url=emulator_url,
                       csrf_protection=True).model_dump()
    aaro = data["tenants"]["aaro-vand"]
    aaro["login_methods"] = ["password", "mitid", "google"]
    aaro["upstreams"]["google"] = {**data["tenants"]["norrnat"]["upstreams"]["google"]}
    for tenant in data["tenants"].values():
        tenant.update(argon2_time_cost=1, argon2_memory_kib=8192)
        for kind, upstream in tenant["upstreams"].items():
            upstream["server_metadata_url"] = (
                f"{emulator_url}/{kind}/.well-known/openid-configuration"
            )
            if kind == "ftn":
                upstream["keys_file"] = ftn_keys_file
    return parse_config(data, "upstream test config")


@dataclass
class PortalLogin:
    """One browser's trip from a portal through the broker; ``verifier`` redeems the code."""

    broker: LiveBroker
    tenant: str
    browser: requests.Session = field(default_factory=requests.Session)
    verifier: str = field(default_factory=lambda: secrets.token_urlsafe(48))
    flow_id: str = ""

    @property
    def issuer(self) -> str:
        return self.broker.issuer(self.tenant)

    def authorize(self, **params: str) -> requests.Response:
        """The portal sends the browser to /authorize; returns the login page."""
        challenge = base64.urlsafe_b64encode(hashlib.sha256(self.verifier.encode()).digest())
        query = {
            "response_type": "code", "client_id": PORTAL,
            "redirect_uri": portal_redirect(self.tenant), "scope": "openid profile email",
            "state": "portal-state", "nonce": "portal-nonce",
            "code_challenge": challenge.rstrip(b"=").decode(), "code_challenge_method": "S256",
            **params,
        }
        page = self.follow(self.browser.get(f"{self.issuer}/authorize", params=query,
                                            allow_redirects=False))
        assert page.status_code == 200, page.text
        self.flow_id = parse_qs(urlparse(page.url).query)["flow"][0]
        return page

    def upstream(self, kind: str, persona: str, **edits: str) -> str:
        """Click the upstream's button and pick a person at the emulator; returns the
        callback URL the emulator sends the browser to (not yet opened)."""
        return self.upstream_from(f"{self.issuer}/login/{kind}?flow={self.flow_id}", persona,
                                  **edits)

    def upstream_from(self, start_url: str, persona: str, **edits: str) -> str:
        """``upstream`` from any link to the broker's /login/<kind> (e.g. the profile's)."""
        start = self.browser.get(urljoin(self.issuer, start_url.replace("&amp;", "&")),
                                 allow_redirects=False)
        assert start.status_code == 302, start.text
        page = self.browser.get(start.headers["Location"], timeout=5)
        assert page.status_code == 200, page.text
        request_id = re.search(r'name="request_id" value="([^"]+)"', page.text)
        action = re.search(r'<form method="post" action="([^"]+)"', page.text)
        assert request_id and action
        answer = self.browser.post(
            urljoin(page.url, action.group(1)),
            data={"request_id": request_id.group(1), "persona": persona, "action": "consent",
                  **edits},
            allow_redirects=False, timeout=5,
        )
        assert answer.status_code == 302, answer.text
        return answer.headers["Location"]

    def login_with(self, kind: str, persona: str, **edits: str) -> requests.Response:
        """Upstream login up to the first broker page, or the redirect to the portal."""
        return self.open(self.upstream(kind, persona, **edits))

    def open(self, url: str) -> requests.Response:
        return self.follow(self.browser.get(url, allow_redirects=False))

    def follow(self, response: requests.Response) -> requests.Response:
        """Follow redirects inside the broker; stop at a page or at the portal."""
        while response.status_code in (302, 303):
            location = urljoin(response.url, response.headers["Location"])
            if location.startswith("http://portal.test"):
                return response
            response = self.browser.get(location, allow_redirects=False)
        return response

    def submit(self, page: requests.Response, action_hint: str,
               **fields: str) -> requests.Response:
        """Post the page's form whose action contains ``action_hint``, hidden inputs included."""
        forms = re.findall(r'<form method="post" action="([^"]*)">(.*?)</form>', page.text,
                           re.S)
        action, body = next((a, b) for a, b in forms if action_hint in a)
        hidden = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', body))
        return self.follow(self.browser.post(urljoin(page.url, action.replace("&amp;", "&")),
                                             data={**hidden, **fields},
                                             allow_redirects=False))

    def tokens(self, response: requests.Response) -> dict[str, Any]:
        """The portal's side: take the code from the redirect, redeem it, decode the ID token."""
        assert response.status_code == 302, response.text
        location = response.headers["Location"]
        assert location.startswith(portal_redirect(self.tenant)), location
        code = parse_qs(urlparse(location).query)["code"][0]
        answer = requests.post(f"{self.issuer}/token", auth=(PORTAL, PORTAL_SECRET), data={
            "grant_type": "authorization_code", "code": code,
            "redirect_uri": portal_redirect(self.tenant), "code_verifier": self.verifier,
        }, timeout=5)
        assert answer.status_code == 200, answer.text
        keys = KeySet.import_key_set(requests.get(f"{self.issuer}/jwks", timeout=5).json())
        return jwt.decode(answer.json()["id_token"], keys).claims


def emailed_code(broker: LiveBroker, recipient: str) -> str:
    """The 6-digit code in the newest email to ``recipient`` (read from the outbox)."""
    state = broker.app.extensions["broker"]
    with state.sessions() as db:
        message = db.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.recipient == recipient)
            .order_by(OutboxMessage.id.desc())
        ).first()
    assert message is not None, f"no email to {recipient}"
    found = re.search(r"\b(\d{6})\b", message.body_text)
    assert found, message.body_text
    return found.group(1)
