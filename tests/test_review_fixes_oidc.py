"""Security review fixes for the OpenID Connect provider, over real HTTP as a portal would:
a wrong token_type_hint does not save a refresh token from revocation, an enormous max_age is
not a server error, prompt=none never shows a page, and a login made for a request stays
fresh across the binding and consent steps of that request."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import requests
from sqlalchemy import delete, func, select

from broker import login_session
from broker.models import Binding, Flow, User

from .conftest import PORTAL_SECRET
from .live import LiveBroker, live_broker
from .test_oidc import (
    PORTAL,
    REDIRECT,
    TENANT,
    _authorize,
    _browser,
    _config,
    _login_and_tokens,
    _pkce,
    _refresh,
    _user,
)


@pytest.fixture
def live(database_url: str) -> Iterator[LiveBroker]:
    """The broker of tests/test_oidc.py, on SQLite and on PostgreSQL."""
    with live_broker(lambda url: _config(database_url, url)) as running:
        yield running


def _pkce_params() -> dict[str, str]:
    _, challenge = _pkce()
    return {"code_challenge": challenge, "code_challenge_method": "S256"}


def _without_bindings(live: LiveBroker, user: User) -> None:
    with live.app.extensions["broker"].sessions() as db, db.begin():
        db.execute(delete(Binding).where(Binding.user_id == user.id))


def _flow_of(response: requests.Response) -> str:
    return parse_qs(urlparse(response.headers["Location"]).query)["flow"][0]


def _portal_query(response: requests.Response) -> dict[str, list[str]]:
    assert response.status_code == 302, response.text
    assert response.headers["Location"].startswith(REDIRECT), response.headers["Location"]
    return parse_qs(urlparse(response.headers["Location"]).query)


def _logs_in(live: LiveBroker, browser: requests.Session, user: User) -> None:
    """What the login page does once the password is right: a new session cookie."""
    state = live.app.extensions["broker"]
    with state.sessions() as db, db.begin():
        _, token = login_session.start(db, state.config.tenants[TENANT], db.get(User, user.id),
                                       amr=["pwd"])
    browser.cookies.set(login_session.cookie_name(TENANT), token)


def _introspect(live: LiveBroker, token: str, hint: str) -> dict[str, Any]:
    return requests.post(f"{live.issuer(TENANT)}/introspect", auth=(PORTAL, PORTAL_SECRET),
                         data={"token": token, "token_type_hint": hint}).json()


def _flow_count(live: LiveBroker) -> int:
    with live.app.extensions["broker"].sessions() as db:
        return db.scalar(select(func.count()).select_from(Flow)) or 0


# --- revocation and introspection search both kinds whatever the hint ------------------------


def test_revoking_a_refresh_token_under_the_access_token_hint_still_ends_it(live):
    tokens = _login_and_tokens(live, _user(live.app))
    revoked = requests.post(f"{live.issuer(TENANT)}/revoke", auth=(PORTAL, PORTAL_SECRET),
                            data={"token": tokens["refresh_token"],
                                  "token_type_hint": "access_token"})
    assert revoked.status_code == 200
    refused = _refresh(live, tokens["refresh_token"])
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
    assert _introspect(live, tokens["access_token"], "access_token") == {"active": False}


def test_introspection_finds_each_token_under_the_other_kinds_hint(live):
    tokens = _login_and_tokens(live, _user(live.app))
    refresh = _introspect(live, tokens["refresh_token"], "access_token")
    assert refresh["active"] is True and refresh["token_type"] == "refresh_token"
    access = _introspect(live, tokens["access_token"], "refresh_token")
    assert access["active"] is True and access["token_type"] == "Bearer"


def test_a_refresh_token_is_never_accepted_as_a_bearer_token_at_userinfo(live):
    tokens = _login_and_tokens(live, _user(live.app))
    response = requests.get(f"{live.issuer(TENANT)}/userinfo",
                            headers={"Authorization": f"Bearer {tokens['refresh_token']}"})
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


# --- max_age ----------------------------------------------------------------------------------


def test_a_max_age_of_five_thousand_digits_is_ignored_not_a_server_error(live):
    browser = _browser(live.app, _user(live.app), auth_age=timedelta(days=3))
    response = _authorize(browser, live, max_age="9" * 5000, **_pkce_params())
    assert "code" in _portal_query(response)


# --- prompt=none never shows a page -----------------------------------------------------------


def test_prompt_none_with_the_binding_step_due_answers_interaction_required(live):
    user = _user(live.app)
    _without_bindings(live, user)
    response = _authorize(_browser(live.app, user), live, prompt="none", **_pkce_params())
    query = _portal_query(response)
    assert query["error"] == ["interaction_required"] and "code" not in query
    assert query["state"] == ["st-1"] and query["iss"] == [live.issuer(TENANT)]
    assert _flow_count(live) == 0  # no step was started for a page nobody will see


def test_prompt_none_with_a_new_privacy_policy_answers_consent_required(live):
    user = _user(live.app, privacy_version="0")  # the tenant publishes version "1"
    response = _authorize(_browser(live.app, user), live, prompt="none", **_pkce_params())
    query = _portal_query(response)
    assert query["error"] == ["consent_required"] and "code" not in query
    assert query["state"] == ["st-1"] and query["iss"] == [live.issuer(TENANT)]
    assert _flow_count(live) == 0


# --- a login made for this request stays fresh across its steps ------------------------------


def test_prompt_login_then_skipping_the_binding_offer_reaches_the_portal(live):
    user = _user(live.app)
    _without_bindings(live, user)
    pkce = _pkce_params()
    browser = _browser(live.app, user, auth_age=timedelta(minutes=10))
    to_login = _authorize(browser, live, prompt="login", **pkce)
    assert "/login?flow=" in to_login.headers["Location"]
    _logs_in(live, browser, user)
    to_binding = _authorize(browser, live, prompt="login", resume=_flow_of(to_login), **pkce)
    assert "/customer-accounts?flow=" in to_binding.headers["Location"]
    skipped = browser.post(f"{live.issuer(TENANT)}/customer-accounts/skip",
                           data={"flow": _flow_of(to_binding)}, allow_redirects=False)
    back = browser.get(live.url + skipped.headers["Location"], allow_redirects=False)
    assert "code" in _portal_query(back)


def _accepts_the_policy(live: LiveBroker, browser: requests.Session,
                        to_consent: requests.Response) -> requests.Response:
    """Accept the new privacy policy on the step's page; the answer the portal's redirect."""
    accepted = browser.post(f"{live.issuer(TENANT)}/privacy/consent",
                            data={"flow": _flow_of(to_consent), "action": "accept"},
                            allow_redirects=False)
    return browser.get(live.url + accepted.headers["Location"], allow_redirects=False)


def test_max_age_zero_then_accepting_the_privacy_policy_reaches_the_portal(live):
    user = _user(live.app, privacy_version="0")
    pkce = _pkce_params()
    browser = _browser(live.app, user, auth_age=timedelta(minutes=10))
    to_login = _authorize(browser, live, max_age="0", **pkce)
    assert "/login?flow=" in to_login.headers["Location"]
    _logs_in(live, browser, user)
    to_consent = _authorize(browser, live, max_age="0", resume=_flow_of(to_login), **pkce)
    assert "/privacy/consent?flow=" in to_consent.headers["Location"]
    assert "code" in _portal_query(_accepts_the_policy(live, browser, to_consent))


def test_a_binding_offer_skipped_is_not_made_again_after_the_consent_step(live):
    """Both steps due: the user skips binding, accepts the new policy, and the portal gets
    its code, without the binding offer coming back in between."""
    user = _user(live.app, privacy_version="0")
    _without_bindings(live, user)
    pkce = _pkce_params()
    browser = _browser(live.app, user)
    to_binding = _authorize(browser, live, **pkce)
    assert "/customer-accounts?flow=" in to_binding.headers["Location"]
    skipped = browser.post(f"{live.issuer(TENANT)}/customer-accounts/skip",
                           data={"flow": _flow_of(to_binding)}, allow_redirects=False)
    to_consent = browser.get(live.url + skipped.headers["Location"], allow_redirects=False)
    assert "/privacy/consent?flow=" in to_consent.headers["Location"]
    assert "code" in _portal_query(_accepts_the_policy(live, browser, to_consent))


def test_a_login_from_before_the_request_is_not_fresh_after_the_binding_step(live):
    """The step keeps the request's start, not a later time: a session opened before the
    request (here put back into the browser mid-journey) still has to log in again."""
    user = _user(live.app)
    _without_bindings(live, user)
    pkce = _pkce_params()
    browser = _browser(live.app, user, auth_age=timedelta(minutes=10))
    old_session = browser.cookies.get(login_session.cookie_name(TENANT))
    to_login = _authorize(browser, live, prompt="login", **pkce)
    _logs_in(live, browser, user)
    to_binding = _authorize(browser, live, prompt="login", resume=_flow_of(to_login), **pkce)
    skipped = browser.post(f"{live.issuer(TENANT)}/customer-accounts/skip",
                           data={"flow": _flow_of(to_binding)}, allow_redirects=False)
    browser.cookies.set(login_session.cookie_name(TENANT), old_session)
    back = browser.get(live.url + skipped.headers["Location"], allow_redirects=False)
    assert back.status_code == 302 and "/login?flow=" in back.headers["Location"]
