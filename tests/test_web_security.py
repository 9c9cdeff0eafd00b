"""Forms need a CSRF token; pages carry the security headers a browser enforces."""

from __future__ import annotations

import re

from broker.app import create_app

from .conftest import make_config


def _client(sqlite_url: str):
    app = create_app(make_config(sqlite_url, csrf_protection=True))
    return app.test_client()


def test_a_login_post_without_the_csrf_token_is_refused_and_changes_nothing(sqlite_url):
    client = _client(sqlite_url)
    response = client.post("/t/fjordvarme/login",
                           data={"email": "a@example.no", "password": "whatever-1"})
    assert response.status_code == 400
    assert "CSRF" in response.get_data(as_text=True)


def test_a_login_post_with_the_token_from_the_page_is_accepted_for_checking(sqlite_url):
    client = _client(sqlite_url)
    page = client.get("/t/fjordvarme/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    response = client.post("/t/fjordvarme/login", data={
        "csrf_token": token, "email": "nobody@example.no", "password": "whatever-1"})
    assert response.status_code == 401  # checked, and refused as a wrong password


def test_the_token_endpoint_is_not_subject_to_csrf(sqlite_url):
    client = _client(sqlite_url)
    response = client.post("/t/fjordvarme/token", data={"grant_type": "authorization_code"})
    assert response.status_code in (400, 401)
    assert "error" in response.json


def test_pages_carry_security_headers(sqlite_url):
    response = _client(sqlite_url).get("/t/fjordvarme/login")
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "same-origin"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_each_security_header_is_sent_once_hsts_over_https_only_and_a_views_own_stands(
        sqlite_url):
    client = _client(sqlite_url)
    client.application.add_url_rule("/own-policy", "own_policy", lambda: ("", 200, {
        "Content-Security-Policy": "sandbox", "x-frame-options": "SAMEORIGIN"}))
    plain = client.get("/t/fjordvarme/login")
    secure = client.get("/t/fjordvarme/login", base_url="https://broker.test")
    assert "Strict-Transport-Security" not in plain.headers
    assert secure.headers["Strict-Transport-Security"] == "max-age=31536000"
    for response in (plain, secure):
        for name in ("Content-Security-Policy", "X-Frame-Options", "Referrer-Policy",
                     "X-Content-Type-Options", "X-Request-Id"):
            assert len(response.headers.getlist(name)) == 1, name
    # a view that sets its own policy keeps it (as the dev outbox sandboxes the mail it shows)
    own = client.get("/own-policy")
    assert own.headers.getlist("Content-Security-Policy") == ["sandbox"]
    assert own.headers.getlist("X-Frame-Options") == ["SAMEORIGIN"]
    assert own.headers["Referrer-Policy"] == "same-origin"


def test_over_https_a_form_posted_from_its_page_passes_the_csrf_check_and_a_foreign_one_not(
        sqlite_url):
    """Flask-WTF refuses a form post over HTTPS without a Referer of this origin; the pages'
    Referrer-Policy must let the browser send one (it sent none under no-referrer: no form
    could be posted over HTTPS at all)."""
    client = _client(sqlite_url)
    secure = {"base_url": "https://broker.test"}
    page = client.get("/t/fjordvarme/login", **secure)
    assert page.headers["Referrer-Policy"] == "same-origin"  # sent to this origin only
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True)).group(1)
    form = {"csrf_token": token, "email": "nobody@example.no", "password": "whatever-1"}

    own = client.post("/t/fjordvarme/login", data=form, **secure,
                      headers={"Referer": "https://broker.test/t/fjordvarme/login"})
    assert own.status_code == 401  # checked, and refused as a wrong password
    foreign = client.post("/t/fjordvarme/login", data=form, **secure,
                          headers={"Referer": "https://evil.example/t/fjordvarme/login"})
    assert foreign.status_code == 400 and "referrer" in foreign.get_data(as_text=True).lower()


def test_a_nul_byte_in_any_field_is_refused_before_it_reaches_the_database(sqlite_url):
    client = _client(sqlite_url)
    assert client.get("/t/fjordvarme/login?flow=a%00b").status_code == 400
    response = client.post("/t/fjordvarme/login", data={"email": "a\x00@example.no"})
    assert response.status_code == 400
    # the same field posted as multipart/form-data, the other encoding a form may use (with
    # CSRF off, so that the NUL check, not the token's, is what answers)
    no_csrf = create_app(make_config(sqlite_url, csrf_protection=False)).test_client()
    multipart = no_csrf.post("/t/fjordvarme/login", content_type="multipart/form-data",
                             data={"email": "a\x00@example.no", "password": "whatever-1"})
    assert multipart.status_code == 400


def test_a_tenant_logo_on_its_own_host_is_allowed_by_the_content_security_policy(sqlite_url):
    data = make_config(sqlite_url).model_dump()
    data["tenants"]["fjordvarme"]["logo_url"] = "https://cdn.fjordvarme.example/logo.svg"
    from broker.config import parse_config

    client = create_app(parse_config(data)).test_client()
    response = client.get("/t/fjordvarme/login")
    assert "img-src 'self' data: https://cdn.fjordvarme.example;" in \
        response.headers["Content-Security-Policy"]
    assert 'src="https://cdn.fjordvarme.example/logo.svg"' in response.get_data(as_text=True)
