"""The OpenID Connect provider, driven over real HTTP as a portal would, and attacked."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from flask import Flask, request
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet, RSAKey
from sqlalchemy import select, update

from broker import login_session
from broker.config import parse_config
from broker.models import (
    AuthorizationCode,
    Binding,
    CustomerAccount,
    LoginSession,
    SigningKey,
    Token,
    User,
    utcnow,
)
from broker.oidc import keys as signing_keys

from .conftest import PORTAL_SECRET, make_config
from .live import live_broker, serve_wsgi

TENANT = "aaro-vand"
PORTAL = "demo-portal"
REDIRECT = f"http://portal.test/{TENANT}/callback"
PUBLIC_REDIRECT = "http://127.0.0.1/app/callback"
JWT_CLIENT_KEY = RSAKey.generate_key(2048, private=True, parameters={"kid": "portal-key-1"})


def _config(database_url: str, public_url: str, backchannel: str | None = None):
    data = make_config(database_url, public_url=public_url).model_dump()
    clients = data["tenants"][TENANT]["clients"]
    if backchannel:
        clients[0]["backchannel_logout_uri"] = backchannel
    clients.append({
        "client_id": "mobile-app", "client_type": "public",
        "token_endpoint_auth_method": "none", "redirect_uris": [PUBLIC_REDIRECT],
    })
    clients.append({
        "client_id": "jwt-portal", "token_endpoint_auth_method": "private_key_jwt",
        "jwks": {"keys": [JWT_CLIENT_KEY.as_dict(private=False)]},
        "redirect_uris": ["http://jwt-portal.test/callback"],
    })
    clients.append({
        "client_id": "post-portal", "client_secret": "post-portal-secret-0123456789abcdefgh",
        "token_endpoint_auth_method": "client_secret_post",
        "redirect_uris": ["http://post-portal.test/callback"],
    })
    return parse_config(data)


@pytest.fixture
def broker(database_url):
    with live_broker(lambda url: _config(database_url, url)) as live:
        yield live


def _user(app: Flask, **fields: Any) -> User:
    state = app.extensions["broker"]
    with state.sessions() as db, db.begin():
        user = User(tenant=TENANT, subject=secrets.token_hex(16), email="anna@example.dk",
                    email_verified=True, name="Anna Jensen", status="active", **fields)
        db.add(user)
        db.flush()
        account = CustomerAccount(tenant=TENANT, number="100234", kind="private")
        db.add(account)
        db.flush()
        db.add(Binding(user_id=user.id, customer_account_id=account.id, role="owner",
                       proof="bill_code"))
    return user


def _browser(app: Flask, user: User, *, acr: str = "low", amr=("pwd",),
             auth_age: timedelta = timedelta(0)) -> requests.Session:
    """A browser with a live login session at the tenant (as after the login page)."""
    state = app.extensions["broker"]
    with state.sessions() as db, db.begin():
        tenant = state.config.tenants[TENANT]
        login, token = login_session.start(db, tenant, db.get(User, user.id), amr=list(amr),
                                           acr=acr)
        db.get(LoginSession, login.id).auth_time = utcnow() - auth_age
    browser = requests.Session()
    browser.cookies.set(login_session.cookie_name(TENANT), token)
    return browser


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge.rstrip(b"=").decode()


def _authorize(browser: requests.Session, broker, **params: str) -> requests.Response:
    base = {"response_type": "code", "client_id": PORTAL, "redirect_uri": REDIRECT,
            "scope": "openid profile email customer_accounts offline_access", "state": "st-1",
            "nonce": "n-1"}
    base.update(params)
    base = {k: v for k, v in base.items() if v is not None}
    return browser.get(f"{broker.issuer(TENANT)}/authorize", params=base, allow_redirects=False)


def _code(response: requests.Response) -> str:
    assert response.status_code == 302, response.text
    query = parse_qs(urlparse(response.headers["Location"]).query)
    assert "code" in query, query
    return query["code"][0]


def _exchange(broker, code: str, verifier: str | None, *, client=PORTAL, secret=PORTAL_SECRET,
              redirect_uri=REDIRECT) -> requests.Response:
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
    if verifier is not None:
        form["code_verifier"] = verifier
    return requests.post(f"{broker.issuer(TENANT)}/token", data=form, auth=(client, secret))


def _jwks(broker) -> KeySet:
    return KeySet.import_key_set(requests.get(f"{broker.issuer(TENANT)}/jwks").json())


def _portal_holding_tokens(broker, user: User) -> tuple[requests.Session, dict[str, Any]]:
    """A browser logged in as ``user`` and the tokens the portal got through it (PKCE)."""
    verifier, challenge = _pkce()
    browser = _browser(broker.app, user)
    code = _code(_authorize(browser, broker, code_challenge=challenge,
                            code_challenge_method="S256"))
    response = _exchange(broker, code, verifier)
    assert response.status_code == 200, response.text
    return browser, response.json()


def _login_and_tokens(broker, user) -> dict[str, Any]:
    return _portal_holding_tokens(broker, user)[1]


# --- the happy path ------------------------------------------------------------------------


def test_a_portal_logs_a_user_in_with_code_and_pkce_and_reads_the_claims(broker):
    user = _user(broker.app)
    discovery = requests.get(f"{broker.issuer(TENANT)}/.well-known/openid-configuration").json()
    assert discovery["issuer"] == broker.issuer(TENANT)
    assert discovery["code_challenge_methods_supported"] == ["S256"]
    assert discovery["authorization_response_iss_parameter_supported"] is True

    verifier, challenge = _pkce()
    browser = _browser(broker.app, user)
    response = _authorize(browser, broker, code_challenge=challenge, code_challenge_method="S256")
    query = parse_qs(urlparse(response.headers["Location"]).query)
    assert query["state"] == ["st-1"]
    assert query["iss"] == [broker.issuer(TENANT)]

    portal = OAuth2Session(PORTAL, PORTAL_SECRET, redirect_uri=REDIRECT)
    token = portal.fetch_token(discovery["token_endpoint"], code=query["code"][0],
                               code_verifier=verifier)
    claims = jwt.decode(token["id_token"], _jwks(broker)).claims
    assert claims["iss"] == broker.issuer(TENANT)
    assert claims["aud"] == [PORTAL]
    assert claims["sub"] == user.subject
    assert claims["nonce"] == "n-1"
    assert claims["amr"] == ["pwd"] and claims["acr"] == "low"
    assert claims["email"] == "anna@example.dk" and claims["email_verified"] is True
    assert claims["customer_accounts"] == [
        {"number": "100234", "kind": "private", "role": "owner", "name": ""}
    ]
    assert "auth_time" in claims and "sid" in claims and "at_hash" in claims
    assert "refresh_token" in token

    info = portal.get(discovery["userinfo_endpoint"]).json()
    assert info["sub"] == user.subject and info["name"] == "Anna Jensen"


def test_without_a_session_the_browser_is_sent_to_the_login_page(broker):
    _, challenge = _pkce()
    response = _authorize(requests.Session(), broker, code_challenge=challenge,
                          code_challenge_method="S256")
    assert response.status_code == 302
    assert f"/t/{TENANT}/login?flow=" in response.headers["Location"]


def test_prompt_none_without_a_session_answers_login_required(broker):
    _, challenge = _pkce()
    response = _authorize(requests.Session(), broker, prompt="none", code_challenge=challenge,
                          code_challenge_method="S256")
    query = parse_qs(urlparse(response.headers["Location"]).query)
    assert response.headers["Location"].startswith(REDIRECT)
    assert query["error"] == ["login_required"]
    assert query["iss"] == [broker.issuer(TENANT)] and query["state"] == ["st-1"]


def test_prompt_login_and_max_age_ask_for_a_fresh_login(broker):
    user = _user(broker.app)
    _, challenge = _pkce()
    pkce = {"code_challenge": challenge, "code_challenge_method": "S256"}
    browser = _browser(broker.app, user, auth_age=timedelta(minutes=10))
    assert "/login?flow=" in _authorize(browser, broker, prompt="login", **pkce).headers["Location"]
    assert "/login?flow=" in _authorize(browser, broker, max_age="60", **pkce).headers["Location"]
    assert "code=" in _authorize(browser, broker, max_age="3600", **pkce).headers["Location"]


def test_a_portal_demanding_substantial_assurance_does_not_accept_a_password_session(broker):
    user = _user(broker.app)
    _, challenge = _pkce()
    pkce = {"code_challenge": challenge, "code_challenge_method": "S256"}
    weak = _browser(broker.app, user)
    assert "/login?flow=" in _authorize(weak, broker, acr_values="substantial",
                                        **pkce).headers["Location"]
    strong = _browser(broker.app, user, acr="substantial", amr=("mitid",))
    assert "code=" in _authorize(strong, broker, acr_values="substantial",
                                 **pkce).headers["Location"]


# --- attacks on the authorization endpoint ---------------------------------------------------


def test_a_foreign_redirect_uri_gets_an_error_page_never_a_redirect(broker):
    user = _user(broker.app)
    _, challenge = _pkce()
    response = _authorize(_browser(broker.app, user), broker,
                          redirect_uri="https://evil.example/callback",
                          code_challenge=challenge, code_challenge_method="S256")
    assert response.status_code == 400
    assert "Location" not in response.headers
    assert "cannot be completed" in response.text


def test_an_unknown_client_gets_an_error_page(broker):
    response = _authorize(requests.Session(), broker, client_id="nobody")
    assert response.status_code == 400 and "Location" not in response.headers


def test_pkce_plain_and_missing_challenge_are_refused(broker):
    user = _user(broker.app)
    browser = _browser(broker.app, user)
    plain = _authorize(browser, broker, code_challenge="a" * 43, code_challenge_method="plain")
    assert parse_qs(urlparse(plain.headers["Location"]).query)["error"] == ["invalid_request"]
    missing = _authorize(browser, broker)
    assert parse_qs(urlparse(missing.headers["Location"]).query)["error"] == ["invalid_request"]


# --- attacks on the token endpoint ------------------------------------------------------------


def test_a_wrong_pkce_verifier_is_refused_and_changes_nothing(broker):
    user = _user(broker.app)
    verifier, challenge = _pkce()
    code = _code(_authorize(_browser(broker.app, user), broker, code_challenge=challenge,
                            code_challenge_method="S256"))
    wrong = _exchange(broker, code, secrets.token_urlsafe(48))
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    missing = _exchange(broker, code, None)
    assert missing.status_code == 400 and missing.json()["error"] == "invalid_request"
    assert _exchange(broker, code, verifier).status_code == 200


def test_a_replayed_code_is_refused_and_revokes_the_tokens_it_gave(broker):
    user = _user(broker.app)
    verifier, challenge = _pkce()
    code = _code(_authorize(_browser(broker.app, user), broker, code_challenge=challenge,
                            code_challenge_method="S256"))
    first = _exchange(broker, code, verifier).json()
    replay = _exchange(broker, code, verifier)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    info = requests.get(f"{broker.issuer(TENANT)}/userinfo",
                        headers={"Authorization": f"Bearer {first['access_token']}"})
    assert info.status_code == 401
    refresh = requests.post(f"{broker.issuer(TENANT)}/token", auth=(PORTAL, PORTAL_SECRET),
                            data={"grant_type": "refresh_token",
                                  "refresh_token": first["refresh_token"]})
    assert refresh.json()["error"] == "invalid_grant"


def test_a_code_sent_eight_times_at_once_is_redeemed_once(broker):
    """The redemption is one atomic claim (on PostgreSQL one statement with the token holder):
    of concurrent redemptions exactly one wins; the others are replays, refused."""
    user = _user(broker.app)
    verifier, challenge = _pkce()
    code = _code(_authorize(_browser(broker.app, user), broker, code_challenge=challenge,
                            code_challenge_method="S256"))
    start = threading.Barrier(8)

    def redeem() -> requests.Response:
        start.wait()
        return _exchange(broker, code, verifier)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: redeem(), range(8)))
    assert sorted(answer.status_code for answer in answers) == [200] + [400] * 7
    assert all(a.json()["error"] == "invalid_grant" for a in answers if a.status_code == 400)
    with broker.app.extensions["broker"].sessions() as db:
        issued = db.scalars(select(Token).where(Token.user_id == user.id)).all()
    assert len(issued) == 1


def test_a_code_cannot_be_redeemed_by_another_client(broker):
    user = _user(broker.app)
    verifier, challenge = _pkce()
    code = _code(_authorize(_browser(broker.app, user), broker, code_challenge=challenge,
                            code_challenge_method="S256"))
    stolen = _exchange(broker, code, verifier, client="post-portal",
                       secret="post-portal-secret-0123456789abcdefgh")
    assert stolen.status_code in (400, 401)
    assert _exchange(broker, code, verifier).status_code == 200


def test_the_redirect_uri_must_match_at_the_token_endpoint(broker):
    user = _user(broker.app)
    verifier, challenge = _pkce()
    code = _code(_authorize(_browser(broker.app, user), broker, code_challenge=challenge,
                            code_challenge_method="S256"))
    response = _exchange(broker, code, verifier, redirect_uri="http://portal.test/other")
    assert response.json()["error"] == "invalid_grant"


def test_an_expired_code_is_refused(broker):
    user = _user(broker.app)
    verifier, challenge = _pkce()
    code = _code(_authorize(_browser(broker.app, user), broker, code_challenge=challenge,
                            code_challenge_method="S256"))
    state = broker.app.extensions["broker"]
    with state.sessions() as db, db.begin():
        db.execute(update(AuthorizationCode).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert _exchange(broker, code, verifier).json()["error"] == "invalid_grant"


def test_a_wrong_client_secret_is_invalid_client(broker):
    user = _user(broker.app)
    verifier, challenge = _pkce()
    code = _code(_authorize(_browser(broker.app, user), broker, code_challenge=challenge,
                            code_challenge_method="S256"))
    response = _exchange(broker, code, verifier, secret="wrong-secret-" + "x" * 30)
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"
    assert _exchange(broker, code, verifier).status_code == 200


def test_a_tampered_id_token_does_not_verify(broker):
    tokens = _login_and_tokens(broker, _user(broker.app))
    header, payload, signature = tokens["id_token"].split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["sub"] = "someone-else"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(JoseError):
        jwt.decode(f"{header}.{forged}.{signature}", _jwks(broker))


def test_an_expired_access_token_is_refused_by_userinfo(broker):
    tokens = _login_and_tokens(broker, _user(broker.app))
    state = broker.app.extensions["broker"]
    with state.sessions() as db, db.begin():
        db.execute(update(Token).values(access_expires_at=utcnow() - timedelta(seconds=1)))
    response = requests.get(f"{broker.issuer(TENANT)}/userinfo",
                            headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


# --- refresh tokens ---------------------------------------------------------------------------


def _refresh(broker, refresh_token: str) -> requests.Response:
    return requests.post(f"{broker.issuer(TENANT)}/token", auth=(PORTAL, PORTAL_SECRET),
                         data={"grant_type": "refresh_token", "refresh_token": refresh_token})


def test_refresh_tokens_rotate_and_a_reused_one_revokes_the_family(broker):
    tokens = _login_and_tokens(broker, _user(broker.app))
    rotated = _refresh(broker, tokens["refresh_token"])
    assert rotated.status_code == 200
    new = rotated.json()
    assert new["refresh_token"] != tokens["refresh_token"]

    reuse = _refresh(broker, tokens["refresh_token"])
    assert reuse.status_code == 400 and reuse.json()["error"] == "invalid_grant"
    assert _refresh(broker, new["refresh_token"]).json()["error"] == "invalid_grant"
    info = requests.get(f"{broker.issuer(TENANT)}/userinfo",
                        headers={"Authorization": f"Bearer {new['access_token']}"})
    assert info.status_code == 401


def test_an_expired_refresh_token_is_refused(broker):
    tokens = _login_and_tokens(broker, _user(broker.app))
    state = broker.app.extensions["broker"]
    with state.sessions() as db, db.begin():
        db.execute(update(Token).values(refresh_expires_at=utcnow() - timedelta(seconds=1)))
    assert _refresh(broker, tokens["refresh_token"]).json()["error"] == "invalid_grant"


# --- other client authentication methods -----------------------------------------------------


def test_a_public_client_uses_pkce_without_a_secret(broker):
    user = _user(broker.app)
    verifier, challenge = _pkce()
    code = _code(_authorize(_browser(broker.app, user), broker, client_id="mobile-app",
                            redirect_uri=PUBLIC_REDIRECT, scope="openid",
                            code_challenge=challenge, code_challenge_method="S256"))
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": PUBLIC_REDIRECT,
            "client_id": "mobile-app"}
    missing = requests.post(f"{broker.issuer(TENANT)}/token", data=form)
    assert missing.json()["error"] == "invalid_request"
    ok = requests.post(f"{broker.issuer(TENANT)}/token", data={**form, "code_verifier": verifier})
    assert ok.status_code == 200 and "id_token" in ok.json()


def test_client_secret_post_is_accepted(broker):
    user = _user(broker.app)
    verifier, challenge = _pkce()
    code = _code(_authorize(_browser(broker.app, user), broker, client_id="post-portal",
                            redirect_uri="http://post-portal.test/callback", scope="openid",
                            code_challenge=challenge, code_challenge_method="S256"))
    response = requests.post(f"{broker.issuer(TENANT)}/token", data={
        "grant_type": "authorization_code", "code": code, "code_verifier": verifier,
        "redirect_uri": "http://post-portal.test/callback", "client_id": "post-portal",
        "client_secret": "post-portal-secret-0123456789abcdefgh"})
    assert response.status_code == 200


def test_private_key_jwt_authenticates_once_per_assertion(broker):
    user = _user(broker.app)
    token_url = f"{broker.issuer(TENANT)}/token"

    def redeem(assertion: str | None = None) -> tuple[requests.Response, str]:
        verifier, challenge = _pkce()
        code = _code(_authorize(_browser(broker.app, user), broker, client_id="jwt-portal",
                                redirect_uri="http://jwt-portal.test/callback", scope="openid",
                                code_challenge=challenge, code_challenge_method="S256"))
        if assertion is None:
            assertion = PrivateKeyJWT(token_url, alg="RS256").sign(
                type("Auth", (), {"client_id": "jwt-portal", "client_secret": JWT_CLIENT_KEY})(),
                token_url)
        form = {"grant_type": "authorization_code", "code": code, "code_verifier": verifier,
                "redirect_uri": "http://jwt-portal.test/callback",
                "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_assertion": assertion}
        return requests.post(token_url, data=form), assertion

    first, assertion = redeem()
    assert first.status_code == 200, first.text
    replay, _ = redeem(assertion)
    assert replay.status_code in (400, 401), replay.text
    assert replay.json()["error"] == "invalid_client", replay.text


# --- revocation, introspection, keys, logout --------------------------------------------------


def test_revoking_a_refresh_token_ends_its_family_and_introspection_says_so(broker):
    tokens = _login_and_tokens(broker, _user(broker.app))
    introspect = f"{broker.issuer(TENANT)}/introspect"
    active = requests.post(introspect, auth=(PORTAL, PORTAL_SECRET),
                           data={"token": tokens["access_token"]}).json()
    assert active["active"] is True and active["client_id"] == PORTAL
    other = requests.post(introspect, data={
        "token": tokens["access_token"], "client_id": "post-portal",
        "client_secret": "post-portal-secret-0123456789abcdefgh"}).json()
    assert other == {"active": False}

    revoked = requests.post(f"{broker.issuer(TENANT)}/revoke", auth=(PORTAL, PORTAL_SECRET),
                            data={"token": tokens["refresh_token"],
                                  "token_type_hint": "refresh_token"})
    assert revoked.status_code == 200
    after = requests.post(introspect, auth=(PORTAL, PORTAL_SECRET),
                          data={"token": tokens["access_token"]}).json()
    assert after == {"active": False}


def test_a_new_key_is_published_before_it_signs_and_the_old_one_stays_published(broker):
    """A portal may hold the JWKS for its max-age: a token must never carry a kid that a
    cached JWKS cannot know. The new key is published at once and signs only after that."""
    tokens = _login_and_tokens(broker, _user(broker.app))
    old_kid = jwt.decode(tokens["id_token"], _jwks(broker)).header["kid"]
    state = broker.app.extensions["broker"]
    with state.sessions() as db, db.begin():
        new_kid = signing_keys.rotate(db, state.config.tenants[TENANT], "ES256").kid
    state.services["keys"].forget(TENANT)
    assert {key["kid"] for key in _jwks(broker).keys} >= {old_kid, new_kid}
    right_after = _login_and_tokens(broker, _user_again(broker.app))
    assert jwt.decode(right_after["id_token"], _jwks(broker)).header["kid"] == old_kid

    with state.sessions() as db, db.begin():  # the JWKS max-age and a reload have passed
        for row in db.scalars(select(SigningKey)):
            window = signing_keys.PUBLISHED_BEFORE_SIGNING
            row.created_at -= window
            row.retired_at = row.retired_at - window if row.retired_at else None
    state.services["keys"].forget(TENANT)
    jwks = _jwks(broker)
    later = jwt.decode(_login_and_tokens(broker, _user_again(broker.app))["id_token"], jwks)
    assert later.header["alg"] == "ES256" and later.header["kid"] == new_kid
    jwt.decode(tokens["id_token"], jwks)  # the old key still verifies what it signed
    assert jwks.get_by_kid(old_kid) is not None


def _user_again(app: Flask) -> User:
    state = app.extensions["broker"]
    with state.sessions() as db:
        return db.scalars(select(User)).first()


def test_rp_initiated_logout_ends_the_session_and_tells_the_portal(database_url):
    received: list[str] = []
    portal = Flask("portal")

    @portal.post("/backchannel-logout")
    def backchannel():  # type: ignore[no-untyped-def]
        received.append(request.form["logout_token"])
        return ""

    with serve_wsgi(portal) as portal_url, live_broker(
        lambda url: _config(database_url, url, backchannel=f"{portal_url}/backchannel-logout")
    ) as broker:
        user = _user(broker.app)
        browser, tokens = _portal_holding_tokens(broker, user)
        response = browser.get(f"{broker.issuer(TENANT)}/logout", allow_redirects=False, params={
            "id_token_hint": tokens["id_token"], "state": "bye",
            "post_logout_redirect_uri": f"http://portal.test/{TENANT}/"})
        assert response.status_code == 302
        assert response.headers["Location"] == f"http://portal.test/{TENANT}/?state=bye"

        deadline = time.monotonic() + 5
        while not received and time.monotonic() < deadline:
            time.sleep(0.05)
        logout = jwt.decode(received[0], _jwks(broker)).claims
        assert logout["sub"] == user.subject and logout["aud"] == PORTAL
        assert "http://schemas.openid.net/event/backchannel-logout" in logout["events"]
        assert "nonce" not in logout

        info = requests.get(f"{broker.issuer(TENANT)}/userinfo",
                            headers={"Authorization": f"Bearer {tokens['access_token']}"})
        assert info.status_code == 401
        state = broker.app.extensions["broker"]
        with state.sessions() as db:
            assert db.scalars(select(LoginSession.revoked_at)).first() is not None


def test_logout_refuses_an_unregistered_post_logout_redirect_uri(broker):
    response = requests.get(f"{broker.issuer(TENANT)}/logout", allow_redirects=False, params={
        "client_id": PORTAL, "post_logout_redirect_uri": "https://evil.example/"})
    assert response.status_code == 400 and "Location" not in response.headers



# --- findings of the security review ---------------------------------------------------------


def _login_redirect_flow(response: requests.Response) -> str:
    return parse_qs(urlparse(response.headers["Location"]).query)["flow"][0]


def test_a_resume_id_from_another_browser_does_not_skip_prompt_login(broker):
    user = _user(broker.app)
    _, challenge = _pkce()
    pkce = {"code_challenge": challenge, "code_challenge_method": "S256"}
    attacker = requests.Session()
    flow_id = _login_redirect_flow(_authorize(attacker, broker, **pkce))
    victim = _browser(broker.app, user)
    response = _authorize(victim, broker, prompt="login", max_age="0", resume=flow_id, **pkce)
    assert "/login?flow=" in response.headers["Location"]  # not a code


def test_a_resumed_flow_gives_one_code_only(broker):
    user = _user(broker.app)
    _, challenge = _pkce()
    pkce = {"code_challenge": challenge, "code_challenge_method": "S256"}
    browser = requests.Session()
    flow_id = _login_redirect_flow(_authorize(browser, broker, prompt="login", **pkce))
    state = broker.app.extensions["broker"]
    with state.sessions() as db, db.begin():  # the user logs in on the login page
        _, token = login_session.start(db, state.config.tenants[TENANT],
                                       db.get(User, user.id), amr=["pwd"])
    browser.cookies.set(login_session.cookie_name(TENANT), token)
    first = _authorize(browser, broker, prompt="login", resume=flow_id, **pkce)
    assert "code=" in first.headers["Location"]
    again = _authorize(browser, broker, prompt="login", resume=flow_id, **pkce)
    assert "/login?flow=" in again.headers["Location"]


def test_a_portal_asking_only_for_scopes_it_may_not_have_gets_invalid_scope(broker):
    user = _user(broker.app)
    _, challenge = _pkce()
    response = _authorize(_browser(broker.app, user), broker, client_id="mobile-app",
                          redirect_uri=PUBLIC_REDIRECT, scope="superpowers admin",
                          code_challenge=challenge, code_challenge_method="S256")
    query = parse_qs(urlparse(response.headers["Location"]).query)
    assert query["error"] == ["invalid_scope"]


def test_a_code_issued_before_logout_is_refused_afterwards(broker):
    user = _user(broker.app)
    verifier, challenge = _pkce()
    browser = _browser(broker.app, user)
    code = _code(_authorize(browser, broker, code_challenge=challenge,
                            code_challenge_method="S256"))
    browser.post(f"{broker.issuer(TENANT)}/logout")
    assert _exchange(broker, code, verifier).json()["error"] == "invalid_grant"


def test_someone_elses_id_token_hint_does_not_log_a_user_out_without_asking(broker):
    other = _login_and_tokens(broker, _user(broker.app))
    victim = _browser(broker.app, _user_again(broker.app))
    response = victim.get(f"{broker.issuer(TENANT)}/logout", allow_redirects=False,
                          params={"id_token_hint": other["id_token"]})
    assert response.status_code == 200 and "<form" in response.text  # the confirm page
    state = broker.app.extensions["broker"]
    with state.sessions() as db:
        live = db.scalars(select(LoginSession).where(LoginSession.revoked_at.is_(None))).all()
    assert len(live) == 2


def test_a_non_ascii_max_age_is_ignored_not_a_server_error(broker):
    _, challenge = _pkce()
    response = _authorize(_browser(broker.app, _user(broker.app)), broker, max_age="²",
                          code_challenge=challenge, code_challenge_method="S256")
    assert response.status_code == 302 and "code=" in response.headers["Location"]


def test_a_private_key_jwt_assertion_used_in_a_refused_request_cannot_be_used_again(broker):
    user = _user(broker.app)
    token_url = f"{broker.issuer(TENANT)}/token"
    assertion = PrivateKeyJWT(token_url, alg="RS256").sign(
        type("Auth", (), {"client_id": "jwt-portal", "client_secret": JWT_CLIENT_KEY})(),
        token_url)
    base = {"grant_type": "authorization_code",
            "redirect_uri": "http://jwt-portal.test/callback",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion}
    refused = requests.post(token_url, data={**base, "code": "no-such-code"})
    assert refused.json()["error"] == "invalid_grant"
    verifier, challenge = _pkce()
    code = _code(_authorize(_browser(broker.app, user), broker, client_id="jwt-portal",
                            redirect_uri="http://jwt-portal.test/callback", scope="openid",
                            code_challenge=challenge, code_challenge_method="S256"))
    replay = requests.post(token_url, data={**base, "code": code, "code_verifier": verifier})
    assert replay.json()["error"] == "invalid_client"
