"""Logs carry ids, never personal values: a whole journey over real HTTP, every record scanned.

Signup -> activation code -> a portal login with the binding step (customer number + PIN) ->
code, tokens, userinfo, refresh -> forgotten PIN by email and by SMS, with the customer register
imported first (national identity numbers included). Every log record of the run, including
werkzeug's request lines and the libraries' DEBUG output, is formatted as the broker formats
it, and none may hold the email, phone, national id, activation code, PIN, password or a token.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import re
import secrets
import sys
from urllib.parse import parse_qs, urljoin, urlparse

import requests
from sqlalchemy import select

from broker.config import parse_config
from broker.customers.importer import import_stream
from broker.logs import JsonFormatter
from broker.models import OutboxMessage

from .conftest import PORTAL_SECRET, make_config
from .customers_support import as_csv
from .live import live_broker

NO = "fjordvarme"
EMAIL = "Sigrid.Haugen@example.no"
PHONE_TYPED = "912 34 567"
PHONE = "+4791234567"
NATIONAL_ID = "01019012345"
CUSTOMER_NUMBER = "880042"
PIN = "493817"
PASSWORD = "Fjell-Sky-2031x"
REDIRECT = f"http://portal.test/{NO}/callback"


def _config(database_url: str, url: str):  # type: ignore[no-untyped-def]
    data = make_config(database_url, public_url=url, log_level="DEBUG").model_dump()
    tenant = data["tenants"][NO]
    tenant.update(argon2_time_cost=1, argon2_memory_kib=8192, resend_cooldown_seconds=0,
                  activation="code")
    tenant["binding"].update(ask_at_signup=False, national_id_match=True)
    return parse_config(data)


def _outbox(app, recipient: str) -> list[OutboxMessage]:  # type: ignore[no-untyped-def]
    with app.extensions["broker"].sessions() as db:
        return list(db.scalars(select(OutboxMessage).where(OutboxMessage.recipient == recipient)
                               .order_by(OutboxMessage.id)))


def _follow(browser: requests.Session, response: requests.Response) -> requests.Response:
    while response.status_code in (301, 302, 303) and not response.headers["Location"].startswith(
            "http://portal.test"):
        response = browser.get(urljoin(response.url, response.headers["Location"]),
                               allow_redirects=False)
    return response


def _journey(broker, secrets_seen: list[str]) -> None:  # type: ignore[no-untyped-def]
    app, issuer = broker.app, broker.issuer(NO)
    state = app.extensions["broker"]
    import_stream(state.engine, state.config.tenants[NO], state.config.hmac_key, io.StringIO(
        as_csv([{"customer_number": CUSTOMER_NUMBER, "kind": "private", "name": "Sigrid Haugen",
                 "address": "Elveveien 4", "email": EMAIL, "phone": PHONE,
                 "national_id": NATIONAL_ID, "pin": PIN}])), "csv")

    browser = requests.Session()
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    login_page = _follow(browser, browser.get(f"{issuer}/authorize", params={
        "response_type": "code", "client_id": "demo-portal", "redirect_uri": REDIRECT,
        "scope": "openid profile email phone customer_accounts offline_access", "state": "s1",
        "nonce": "n1", "code_challenge": challenge.rstrip(b"=").decode(),
        "code_challenge_method": "S256", "login_hint": EMAIL,
    }, allow_redirects=False))
    flow = re.search(r'name="flow" value="([^"]+)"', login_page.text).group(1)

    # Signup and a wrong password on the way, then the activation code from the email.
    browser.post(f"{issuer}/login", data={"email": EMAIL, "password": PASSWORD + "!",
                                          "flow": flow})
    browser.post(f"{issuer}/register", data={
        "email": EMAIL, "name": "Sigrid Haugen", "phone": PHONE_TYPED, "password": PASSWORD,
        "password_confirmation": PASSWORD, "privacy": "on", "flow": flow})
    browser.get(f"{issuer}/activate", params={"email": EMAIL, "flow": flow})
    code = re.search(r"^\s+(\d{6})\s*$", _outbox(app, EMAIL.lower())[-1].body_text,
                     re.MULTILINE).group(1)
    secrets_seen.append(code)
    browser.post(f"{issuer}/activate", data={"email": EMAIL, "code": "000000", "flow": flow})
    binding_page = _follow(browser, browser.post(
        f"{issuer}/activate", data={"email": EMAIL, "code": code, "flow": flow},
        allow_redirects=False))
    assert "customer-accounts" in binding_page.url, binding_page.url

    # The binding step: a wrong PIN, then the right one; the portal gets its code.
    browser.post(f"{issuer}/customer-accounts", data={
        "customer_number": CUSTOMER_NUMBER, "proof_kind": "pin", "proof_value": "111111",
        "flow": flow})
    to_portal = _follow(browser, browser.post(f"{issuer}/customer-accounts", data={
        "customer_number": CUSTOMER_NUMBER, "proof_kind": "pin", "proof_value": PIN,
        "flow": flow}, allow_redirects=False))
    location = to_portal.headers["Location"]
    auth_code = parse_qs(urlparse(location).query)["code"][0]
    secrets_seen.append(auth_code)

    portal = ("demo-portal", PORTAL_SECRET)
    tokens = requests.post(f"{issuer}/token", auth=portal, data={
        "grant_type": "authorization_code", "code": auth_code, "redirect_uri": REDIRECT,
        "code_verifier": verifier}).json()
    assert "access_token" in tokens, tokens
    secrets_seen.extend([tokens["access_token"], tokens["refresh_token"], tokens["id_token"]])
    claims = requests.get(f"{issuer}/userinfo",
                          headers={"Authorization": f"Bearer {tokens['access_token']}"}).json()
    assert claims["customer_accounts"][0]["number"] == CUSTOMER_NUMBER
    refreshed = requests.post(f"{issuer}/token", auth=portal, data={
        "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}).json()
    secrets_seen.extend([refreshed["access_token"], refreshed["refresh_token"]])
    requests.post(f"{issuer}/token", auth=portal, data={  # a replayed code
        "grant_type": "authorization_code", "code": auth_code, "redirect_uri": REDIRECT,
        "code_verifier": verifier})

    # Forgotten customer number and PIN, by email and by SMS.
    requests.get(f"{issuer}/forgot-pin", params={"email": EMAIL})
    requests.post(f"{issuer}/forgot-pin", data={"channel": "email", "email": EMAIL,
                                                "customer_number": CUSTOMER_NUMBER})
    requests.post(f"{issuer}/forgot-pin", data={"channel": "sms", "phone": PHONE_TYPED})
    for message in _outbox(app, EMAIL.lower())[-1:] + _outbox(app, PHONE)[-1:]:
        secrets_seen.extend(re.findall(r"\b\d{6}\b", message.body_text))
    browser.get(f"{issuer}/forgot-password", params={"email": EMAIL})
    requests.post(f"{issuer}/forgot-password", data={"email": EMAIL})
    reset = _outbox(app, EMAIL.lower())[-1].body_text
    reset_path = re.search(r"(/t/\S+/reset-password/\S+)", reset).group(1)
    secrets_seen.append(reset_path.rsplit("/", 1)[1])
    requests.get(broker.url + reset_path)


def test_no_personal_value_appears_in_any_log_record(database_url, caplog):
    secrets_seen: list[str] = []
    with live_broker(lambda url: _config(database_url, url)) as broker:
        # The app factory installs the broker's handler; listen next to it, at DEBUG.
        logging.getLogger().addHandler(caplog.handler)
        caplog.set_level(logging.DEBUG)
        logging.getLogger("werkzeug").setLevel(logging.DEBUG)
        try:
            _journey(broker, secrets_seen)
        finally:
            logging.getLogger().removeHandler(caplog.handler)

    records = caplog.records
    assert any(r.name == "werkzeug" for r in records), "werkzeug's request lines were captured"
    formatter = JsonFormatter()
    personal = [EMAIL, EMAIL.lower(), EMAIL.lower().replace("@", "%40"), PHONE, PHONE_TYPED,
                PHONE.replace("+", "%2B"), NATIONAL_ID, PIN, PASSWORD, "Sigrid", "Haugen",
                *secrets_seen]
    assert len(secrets_seen) >= 9
    leaks = []
    for record in records:
        line = formatter.format(record) + repr(record.args) + repr(vars(record))
        for value in personal:
            if value and value.lower() in line.lower():
                leaks.append((record.name, value, record.getMessage()[:200]))
    assert leaks == []


def test_the_json_log_line_carries_no_email_address_from_any_part_of_a_record():
    """A mail server's refusal quotes its recipient; it reaches the log as an extra field."""
    try:
        raise ValueError("no such mailbox: kari.private@example.no")
    except ValueError:
        exc_info = sys.exc_info()
    record = logging.LogRecord("broker.messaging.worker", logging.WARNING, __file__, 1,
                               "delivery to %s failed", ("ola@example.no",), exc_info)
    record.error = "SMTP 550: 5.7.1 Message to <kari.private@example.no> rejected by policy"
    record.outbox_id = 42
    line = JsonFormatter().format(record)
    entry = json.loads(line)
    assert "@" not in line and "example.no" not in line
    assert entry["error"] == "SMTP 550: 5.7.1 Message to [email] rejected by policy"
    assert entry["message"] == "delivery to [email] failed" and entry["outbox_id"] == 42
