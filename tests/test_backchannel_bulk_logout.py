"""Sessions ended in bulk (support's 'sign out everywhere' and 'disable', a password reset or
change) tell the portals that got tokens in them over the back channel, once committed, as a
logout does; a rolled-back end tells nobody. A review found the portals were never told."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask, request
from joserfc import jwt
from sqlalchemy import select

from broker import login_session
from broker.models import LoginSession, Staff
from broker.staff import actions

from .live import LiveBroker, live_broker, serve_wsgi
from .test_oidc import TENANT, _config, _jwks, _portal_holding_tokens, _user

LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"


class Portal:
    def __init__(self) -> None:
        self.tokens: list[str] = []
        self.app = Flask("portal")
        self.app.add_url_rule("/backchannel", "backchannel", self._receive, methods=["POST"])

    def _receive(self) -> str:
        self.tokens.append(request.form["logout_token"])
        return ""

    def claims(self, broker: LiveBroker, within: float = 4.0) -> list[dict[str, Any]]:
        """The logout tokens received, verified with the broker's published keys."""
        deadline = time.monotonic() + within
        while not self.tokens and time.monotonic() < deadline:
            time.sleep(0.02)
        keys = _jwks(broker)
        return [jwt.decode(token, keys).claims for token in self.tokens]


@pytest.fixture
def setting(sqlite_url: str) -> Iterator[tuple[LiveBroker, Portal, Any]]:
    portal = Portal()
    with serve_wsgi(portal.app) as portal_url, live_broker(
        lambda url: _config(sqlite_url, url, backchannel=f"{portal_url}/backchannel")
    ) as broker:
        user = _user(broker.app)
        _portal_holding_tokens(broker, user)
        yield broker, portal, user


@pytest.mark.parametrize("action", ["revoke_sessions", "disable"])
def test_support_ending_the_sessions_tells_the_portal(setting, action):
    broker, portal, user = setting
    state = broker.app.extensions["broker"]
    with state.sessions() as db, db.begin():
        staff = Staff(email="admin@x.test", name="Admin", password_hash="x",
                      totp_secret="JBSWY3DPEHPK3PXP", roles=["tenant_admin"], tenants=[TENANT])
        db.add(staff)
        db.flush()
        result = actions.perform(db, state.config, actions.Actor(staff, None), action, user.id,
                                 reason="customer called: phone stolen")
        assert result.ok, result
    [claims] = portal.claims(broker)
    assert claims["sub"] == user.subject and LOGOUT_EVENT in claims["events"]
    assert claims["sid"] and claims["aud"] == "demo-portal"


def test_a_password_reset_tells_the_portal(setting):
    broker, portal, user = setting
    state = broker.app.extensions["broker"]
    with state.sessions() as db, db.begin():
        assert login_session.end_all_for_user(db, user.id) == 1  # as complete_reset calls it
    [claims] = portal.claims(broker)
    assert claims["sub"] == user.subject


def test_an_end_that_is_rolled_back_tells_nobody(setting):
    broker, portal, user = setting
    state = broker.app.extensions["broker"]
    with state.sessions() as db:
        assert login_session.end_all_for_user(db, user.id) == 1
        db.rollback()
    with state.sessions() as db, db.begin():  # a later, unrelated commit of the same kind
        assert db.scalar(select(LoginSession.revoked_at)) is None
    assert portal.claims(broker, within=0.5) == []
