"""A new privacy-policy version is accepted at the next portal login, before the code."""

from __future__ import annotations

import base64
import hashlib
import secrets

import pytest

from broker.models import AuditEvent, User

from .accounts_support import running_app
from .privacy_support import NO, logged_in, rich_account

REDIRECT = f"http://portal.test/{NO}/callback"


@pytest.fixture
def app(sqlite_url):  # type: ignore[no-untyped-def]
    yield from running_app(sqlite_url, **{NO: {"privacy_policy_version": "2026-05",
                                               "privacy_policy_url": "https://fv.example/p"}})


def _authorize(client, **extra: str):  # type: ignore[no-untyped-def]
    challenge = base64.urlsafe_b64encode(hashlib.sha256(b"v" * 50).digest()).rstrip(b"=")
    return client.get(f"/t/{NO}/authorize", query_string={
        "response_type": "code", "client_id": "demo-portal", "redirect_uri": REDIRECT,
        "scope": "openid", "state": "st", "code_challenge": challenge.decode(),
        "code_challenge_method": "S256", **extra})


def test_a_user_who_accepted_an_older_version_is_asked_before_the_portal_gets_a_code(app):
    ids = rich_account(app)  # accepted version "1"
    client = app.test_client()
    logged_in(app, client, ids["kari"])
    response = _authorize(client)
    assert response.status_code == 302
    assert "/privacy/consent?flow=" in response.headers["Location"]
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "2026-05" in page and "https://fv.example/p" in page

    flow = response.headers["Location"].split("flow=")[1]
    declined = client.post(f"/t/{NO}/privacy/consent", data={"flow": flow, "action": "decline"})
    assert "cannot continue to the portal" in declined.get_data(as_text=True)
    assert "code=" not in declined.headers.get("Location", "")

    accepted = client.post(f"/t/{NO}/privacy/consent", data={"flow": flow, "action": "accept"})
    assert "/authorize?" in accepted.headers["Location"]
    to_portal = client.get(accepted.headers["Location"])
    assert to_portal.headers["Location"].startswith(REDIRECT)
    assert "code=" in to_portal.headers["Location"]

    with app.extensions["broker"].sessions() as db:
        user = db.get(User, ids["kari"])
        assert user.privacy_version == "2026-05"
        assert user.privacy_accepted_at is not None
        record = db.query(AuditEvent).filter_by(event="privacy_policy_accepted").one()
        assert record.details["version"] == "2026-05"
    # Once accepted, the next login goes straight to the portal.
    assert "code=" in _authorize(client).headers["Location"]


def test_a_user_on_the_current_version_goes_straight_to_the_portal(app):
    ids = rich_account(app)
    state = app.extensions["broker"]
    with state.sessions() as db, db.begin():
        db.get(User, ids["kari"]).privacy_version = "2026-05"
    client = app.test_client()
    logged_in(app, client, ids["kari"])
    assert "code=" in _authorize(client, nonce=secrets.token_hex(4)).headers["Location"]


def test_the_consent_page_needs_a_login(app):
    response = app.test_client().get(f"/t/{NO}/privacy/consent")
    assert "/login" in response.headers["Location"]
