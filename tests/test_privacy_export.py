"""Download my data: the account's own data as JSON, never a secret or another person's data."""

from __future__ import annotations

import json
import re

import pytest

from broker.models import AuditEvent
from flows.privacy import export_account

from .accounts_support import running_app
from .privacy_support import NO, logged_in, rich_account


@pytest.fixture
def app(sqlite_url):  # type: ignore[no-untyped-def]
    yield from running_app(sqlite_url)


def test_download_needs_a_login(app):
    response = app.test_client().get(f"/t/{NO}/profile/data")
    assert response.status_code == 302
    assert "/login" in response.headers["Location"]


def test_the_download_holds_profile_logins_bindings_consents_and_events(app):
    ids = rich_account(app)
    client = app.test_client()
    logged_in(app, client, ids["kari"])
    response = client.get(f"/t/{NO}/profile/data")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert "attachment" in response.headers["Content-Disposition"]
    assert response.headers["Cache-Control"] == "no-store"
    data = json.loads(response.data)

    assert data["profile"]["email"] == "kari@example.no"
    assert data["profile"]["name"] == "Kari Nordmann"
    assert data["profile"]["phone"] == "+4791234567"
    assert data["profile"]["subject"] == ids["kari_subject"]
    assert data["login_methods"] == {"password": True, "authenticator_app": True,
                                     "recovery_codes_left": 1}
    [identity] = data["linked_identities"]
    assert identity["provider"] == "mitid"
    assert identity["subject"] == "mitid-uuid-4711"
    assert identity["linked_at"]
    [account] = data["customer_accounts"]
    assert account["number"] == "700123"
    assert account["role"] == "owner"
    assert account["kind"] == "private"
    assert account["since"]
    assert data["consents"]["privacy_policy"]["version"] == "1"
    assert data["consents"]["privacy_policy"]["accepted_at"]
    events = {event["event"] for event in data["security_events"]}
    assert {"customer_bound", "password_reset_sent"} <= events
    [support] = data["support_actions"]
    assert support["action"] == "send_password_reset"
    assert support["reason"]
    assert [m["subject"] for m in data["messages"]] == ["Activate"]
    assert data["portals"][0]["portal"] == "demo-portal"


def test_the_download_holds_no_hash_secret_or_other_persons_data(app):
    ids = rich_account(app)
    client = app.test_client()
    logged_in(app, client, ids["kari"])
    text = client.get(f"/t/{NO}/profile/data").get_data(as_text=True)

    for forbidden in ("password_hash", "totp_secret", "JBSWY3DPEHPK3PXP", "national_id",
                      "code_hmac", "sha256", "hmac"):
        assert forbidden not in text, forbidden
    assert not re.search(r"(?<![0-9a-f])[0-9a-f]{64}(?![0-9a-f])", text), "a digest leaked"
    # Ola shares the customer account, and the register's holder is named on it: neither shows.
    for other in ("ola@example.no", "Ola Nordmann", "+4798765432", "Register Holder",
                  "Fjordveien 1", "203.0.113.9", "198.51.100.1", "Kari Nordmann invites you"):
        assert other not in text, other
    # The staff member's source address is theirs, and which staff member acted is not said.
    data = json.loads(text)
    assert all(e["source_address"] in (None, "192.0.2.7") for e in data["security_events"])


def test_each_download_is_audited(app):
    ids = rich_account(app)
    client = app.test_client()
    logged_in(app, client, ids["kari"])
    client.get(f"/t/{NO}/profile/data")
    with app.extensions["broker"].sessions() as db:
        exports = db.query(AuditEvent).filter_by(event="data_exported",
                                                 target_user_id=ids["kari"]).count()
    assert exports == 1


def test_a_delegate_sees_the_role_on_the_shared_account_not_the_owner(app):
    ids = rich_account(app)
    state = app.extensions["broker"]
    with state.sessions() as db:
        from broker.models import User

        ola = db.get(User, ids["ola"])
        data = export_account(db, state.config.tenants[NO], ola)
    assert data["customer_accounts"][0]["role"] == "delegate"
    assert "kari" not in json.dumps(data).lower()
