"""A customer's first portal login over real HTTP: password, bind the bill's code, claims."""

from __future__ import annotations

import base64
import hashlib
import secrets
from urllib.parse import parse_qs, urlparse

import requests
from joserfc import jwt
from joserfc.jwk import KeySet

from broker.customers.digests import proof_hmac
from broker.models import CustomerAccount, User
from broker.passwords import hash_password

from .conftest import PORTAL_SECRET, make_config
from .live import follow_to_portal, live_broker, submit_form

TENANT = "aaro-vand"
REDIRECT = f"http://portal.test/{TENANT}/callback"


def _config(database_url: str, url: str):
    data = make_config(database_url, public_url=url, csrf_protection=True).model_dump()
    data["tenants"][TENANT].update(argon2_time_cost=1, argon2_memory_kib=8192)
    from broker.config import parse_config

    return parse_config(data)


def _seed(app) -> None:
    state = app.extensions["broker"]
    tenant = state.config.tenants[TENANT]
    with state.sessions() as db, db.begin():
        db.add(User(tenant=TENANT, subject=secrets.token_hex(16), email="mette@example.dk",
                    email_verified=True, name="Mette Holm", status="active",
                    password_hash=hash_password(tenant, "Vand&Affald7")))
        db.add(CustomerAccount(tenant=TENANT, number="4500123", kind="private",
                               name="Mette Holm", address_label="Strandvej 3",
                               bill_code_hmac=proof_hmac(state.config.hmac_key, "bill_code",
                                                         "K7Q-2291")))


def test_first_login_offers_binding_and_the_portal_then_sees_the_customer_account(database_url):
    with live_broker(lambda url: _config(database_url, url)) as broker:
        _seed(broker.app)
        issuer = f"{broker.url}/t/{TENANT}"
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
        browser = requests.Session()
        login_page = follow_to_portal(browser, browser.get(f"{issuer}/authorize", params={
            "response_type": "code", "client_id": "demo-portal", "redirect_uri": REDIRECT,
            "scope": "openid profile customer_accounts", "state": "s", "nonce": "n",
            "code_challenge": challenge.rstrip(b"=").decode(), "code_challenge_method": "S256",
        }, allow_redirects=False))
        assert "Log in" in login_page.text

        wrong = submit_form(browser, login_page, "/login", email="mette@example.dk",
                      password="not-it-1A!")
        assert wrong.status_code == 401
        bind_page = follow_to_portal(browser, submit_form(browser, login_page, "/login",
                                           email="mette@example.dk", password="Vand&Affald7"))
        assert "Add an address or customer account" in bind_page.text

        refused = submit_form(browser, bind_page, "/customer-accounts", customer_number="4500123",
                        proof_value="WRONG-1")
        assert refused.status_code == 400
        assert "do not match" in refused.text
        done = follow_to_portal(browser, submit_form(browser, bind_page, "/customer-accounts",
                                      customer_number="4500 123", proof_value="k7q2291"))
        assert done.headers["Location"].startswith(REDIRECT)
        code = parse_qs(urlparse(done.headers["Location"]).query)["code"][0]

        token = requests.post(f"{issuer}/token", auth=("demo-portal", PORTAL_SECRET), data={
            "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
            "code_verifier": verifier}).json()
        keys = KeySet.import_key_set(requests.get(f"{issuer}/jwks").json())
        claims = jwt.decode(token["id_token"], keys).claims
        assert claims["customer_accounts"] == [
            {"number": "4500123", "kind": "private", "role": "owner", "name": "Mette Holm"}
        ]
        assert claims["amr"] == ["pwd"]
