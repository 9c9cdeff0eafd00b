"""The pages speak the customer's language: chosen from the portal's ui_locales, the switcher,
the user's saved locale, Accept-Language, then the tenant's default; and every catalogue is
complete and compiled at start-up, never committed as a binary."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po
from babel.support import Translations

from broker import i18n, login_session
from broker.app import create_app
from broker.models import User

from .conftest import make_config

ROOT = Path(__file__).resolve().parent.parent
TRANSLATED = ("da", "nb", "sv", "fi", "es")
LOG_IN = {"da": "Log ind", "nb": "Logg inn", "sv": "Logga in", "fi": "Kirjaudu sisään",
          "es": "Iniciar sesión", "en": "Log in"}
# A tenant of the demo configuration that offers each language.
TENANT_FOR = {"da": "aaro-vand", "nb": "fjordvarme", "sv": "norrnat", "fi": "stadsenergi",
              "es": "aguas-del-valle", "en": "aaro-vand"}


@pytest.fixture
def app(sqlite_url: str):  # type: ignore[no-untyped-def]
    application = create_app(make_config(sqlite_url, page_language=None))
    application.config["TESTING"] = True
    yield application
    application.extensions["broker"].engine.dispose()


@pytest.fixture
def client(app):  # type: ignore[no-untyped-def]
    return app.test_client()


def heading(page: str) -> str:
    match = re.search(r"<h1>(.*?)</h1>", page, re.S)
    assert match, page
    return match.group(1).strip()


def html_lang(page: str) -> str:
    match = re.search(r'<html lang="([^"]+)"', page)
    assert match, page[:200]
    return match.group(1)


def authorize(client, tenant: str, ui_locales: str, **headers: str):  # type: ignore[no-untyped-def]
    """A portal's real authorization request; follows the broker's redirect to the login."""
    verifier = base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()
    challenge = base64.urlsafe_b64encode(
        hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    response = client.get(f"/t/{tenant}/authorize", query_string={
        "response_type": "code", "client_id": "demo-portal", "scope": "openid",
        "redirect_uri": f"http://portal.test/{tenant}/callback", "state": "s", "nonce": "n",
        "code_challenge": challenge, "code_challenge_method": "S256",
        "ui_locales": ui_locales,
    }, headers=headers)
    assert response.status_code == 302, response.get_data(as_text=True)
    location = urlparse(response.headers["Location"])
    assert location.path == f"/t/{tenant}/login"
    assert "ui_locales" not in parse_qs(location.query)  # kept server-side in the flow
    return client.get(f"{location.path}?{location.query}", headers=headers)


# --- choosing the language ----------------------------------------------------------------


@pytest.mark.parametrize("language", sorted(LOG_IN))
def test_the_login_page_speaks_the_language_the_portal_asked_for(client, language):
    page = authorize(client, TENANT_FOR[language], language)
    text = page.get_data(as_text=True)
    assert heading(text) == LOG_IN[language]
    assert html_lang(text) == language


def test_ui_locales_wins_over_accept_language_and_skips_languages_the_tenant_lacks(client):
    page = authorize(client, "stadsenergi", "de fi sv", **{"Accept-Language": "sv"})
    assert heading(page.get_data(as_text=True)) == "Kirjaudu sisään"


def test_ui_locales_only_in_unoffered_languages_falls_to_the_tenant_default(client):
    page = authorize(client, "fjordvarme", "fi")
    assert heading(page.get_data(as_text=True)) == "Logg inn"


@pytest.mark.parametrize(("tenant", "accept", "expected"), [
    ("aaro-vand", "da-DK,da;q=0.9,en;q=0.5", "da"),
    ("aaro-vand", "en-GB,en;q=0.9", "en"),
    ("stadsenergi", "fi-FI", "fi"),
    ("stadsenergi", "sv-FI,sv;q=0.8", "sv"),
    ("fjordvarme", "no", "nb"),
    ("aguas-del-valle", "es-ES", "es"),
])
def test_accept_language_picks_the_page_language(client, tenant, accept, expected):
    text = client.get(f"/t/{tenant}/login",
                      headers={"Accept-Language": accept}).get_data(as_text=True)
    assert heading(text) == LOG_IN[expected]
    assert html_lang(text) == expected


def test_a_language_the_tenant_does_not_offer_falls_back_to_the_tenant_default(client):
    text = client.get("/t/fjordvarme/login",
                      headers={"Accept-Language": "de-DE,de;q=0.9,fi;q=0.5"}).get_data(as_text=True)
    assert heading(text) == "Logg inn" and html_lang(text) == "nb"


def test_no_accept_language_gets_the_tenant_default(client):
    text = client.get("/t/aguas-del-valle/login").get_data(as_text=True)
    assert heading(text) == "Iniciar sesión" and html_lang(text) == "es"


def test_the_switcher_links_each_offered_language_and_the_choice_is_remembered(client):
    page = client.get("/t/stadsenergi/login", headers={"Accept-Language": "fi"})
    text = page.get_data(as_text=True)
    links = re.findall(r'<a href="([^"]*lang=(\w+))"[^>]*hreflang', text)
    assert sorted(code for _, code in links) == ["en", "fi", "sv"]
    assert 'aria-current="true">Suomi' in text

    chosen = client.get("/t/stadsenergi/login?lang=sv", headers={"Accept-Language": "fi"})
    assert heading(chosen.get_data(as_text=True)) == "Logga in"
    assert f"{i18n.LANG_COOKIE}=sv" in chosen.headers["Set-Cookie"]
    later = client.get("/t/stadsenergi/forgot-password", headers={"Accept-Language": "fi"})
    assert heading(later.get_data(as_text=True)) == "Glömt lösenord"


def test_the_switcher_keeps_the_portal_request_and_beats_ui_locales(client):
    page = authorize(client, "aaro-vand", "da")
    flow = parse_qs(urlparse(page.request.url).query)["flow"][0]
    english = client.get(f"/t/aaro-vand/login?flow={flow}&lang=en")
    text = english.get_data(as_text=True)
    assert heading(text) == "Log in"
    assert f'name="flow" value="{flow}"' in text


def test_a_switcher_value_the_tenant_does_not_offer_is_ignored(client):
    page = client.get("/t/aaro-vand/login?lang=es")
    assert heading(page.get_data(as_text=True)) == "Log ind"
    assert i18n.LANG_COOKIE not in page.headers.get("Set-Cookie", "")


def test_the_saved_locale_of_a_logged_in_user_beats_accept_language(app, client):
    sessions = app.extensions["broker"].sessions
    tenant = app.extensions["broker"].config.tenants["aaro-vand"]
    with sessions() as db:
        user = User(tenant="aaro-vand", subject="sub-locale", email="anna@example.dk",
                    status="active", locale="en", name="Anna")
        db.add(user)
        db.flush()
        _, token = login_session.start(db, tenant, user, amr=["pwd"])
        db.commit()
    client.set_cookie(login_session.cookie_name("aaro-vand"), token, domain="localhost",
                      path="/t/aaro-vand")
    page = client.get("/t/aaro-vand/customer-accounts", headers={"Accept-Language": "da"})
    text = page.get_data(as_text=True)
    assert page.status_code == 200 and html_lang(text) == "en"
    assert heading(text) == "Your customer accounts"


def test_registration_saves_the_language_the_page_was_shown_in(app, client):
    response = client.post("/t/fjordvarme/register?lang=en", data={
        "name": "Kari Nordmann", "email": "kari@example.no", "password": "Tr0ll-Fjord-Sky",
        "password_confirmation": "Tr0ll-Fjord-Sky", "privacy": "on",
    })
    assert response.status_code == 200, response.get_data(as_text=True)
    with app.extensions["broker"].sessions() as db:
        saved = db.query(User).filter_by(email="kari@example.no").one()
        assert saved.locale == "en"


# --- translated messages ------------------------------------------------------------------


def test_password_rules_and_failures_are_shown_in_danish(client):
    page = client.get("/t/aaro-vand/register", headers={"Accept-Language": "da"})
    assert "Brug mindst 1 stort bogstav." in page.get_data(as_text=True)
    refused = client.post("/t/aaro-vand/register", headers={"Accept-Language": "da"}, data={
        "name": "Anna Berg", "email": "anna@example.dk", "password": "alle-sma-1x",
        "password_confirmation": "alle-sma-1y", "privacy": "on",
    })
    text = refused.get_data(as_text=True)
    assert refused.status_code == 400
    failures = text[text.index('id="password-error"'):]
    assert "Brug mindst 1 stort bogstav." in failures
    assert "De to adgangskoder skal være ens." in failures
    assert "upper-case" not in text


@pytest.mark.parametrize(("language", "expected"), [
    ("da", "Brug mindst 12 tegn."), ("nb", "Bruk minst 12 tegn."),
    ("sv", "Använd minst 12 tecken."), ("fi", "Käytä vähintään 12 merkkiä."),
    ("es", "Usa al menos 12 caracteres."), ("en", "Use at least 12 characters."),
])
def test_every_password_rule_code_has_a_text_in_each_language(app, language, expected):
    from flask_babel import force_locale

    from policies.password import PasswordPolicy, PasswordRule, describe_rules

    strict = PasswordPolicy(min_length=12, min_upper=2, min_lower=1, min_digits=1,
                            min_special=1, min_distinct=5, max_shared_run_with_user_data=3,
                            min_zxcvbn_score=3)
    rules = describe_rules(strict) + [PasswordRule("confirmation_mismatch")]
    assert {rule.code for rule in rules} == set(i18n.PASSWORD_RULE_MESSAGES)
    with app.test_request_context("/"), force_locale(language):
        texts = [i18n.password_rule_text(rule) for rule in rules]
    assert texts[0] == expected
    if language != "en":
        english = [rule.message for rule in rules]
        assert not set(texts) & set(english)


def test_error_codes_on_the_login_page_are_translated(client):
    page = client.post("/t/fjordvarme/login", data={"email": "", "password": ""},
                       headers={"Accept-Language": "nb"})
    assert "Skriv inn e-post og passord." in page.get_data(as_text=True)


def test_an_unknown_portal_gets_an_error_page_in_the_browser_language(client):
    page = client.get("/t/norrnat/authorize?client_id=nobody&response_type=code",
                      headers={"Accept-Language": "sv-SE"})
    text = page.get_data(as_text=True)
    assert page.status_code == 400
    assert heading(text) == "Inloggningsbegäran kan inte slutföras"


# --- the catalogues -----------------------------------------------------------------------


def _catalogue(language: str):  # type: ignore[no-untyped-def]
    path = ROOT / "translations" / language / "LC_MESSAGES" / "messages.po"
    with path.open("rb") as source:
        return read_po(source, locale=language)


def _marked_strings() -> set[str]:
    """Every string the code marks for translation right now (what pybabel extract finds)."""
    with (ROOT / "babel.cfg").open() as config:
        method_map, options_map = parse_mapping_cfg(config)
    keywords = {**DEFAULT_KEYWORDS, "_l": None, "lazy_gettext": None,
                "lazy_ngettext": (1, 2)}
    found = set()
    for _, _, message, _, _ in extract_from_dir(str(ROOT), method_map, options_map,
                                                  keywords=keywords):
        found.add(message[0] if isinstance(message, tuple) else message)
    return found


@pytest.mark.parametrize("language", TRANSLATED)
def test_every_catalogue_entry_is_translated_and_none_is_fuzzy(language):
    catalogue = _catalogue(language)
    untranslated = [m.id for m in catalogue if m.id and (
        not m.string or (isinstance(m.string, tuple) and not all(m.string)))]
    fuzzy = [m.id for m in catalogue if m.id and m.fuzzy]
    assert untranslated == [] and fuzzy == []
    assert len(catalogue) > 250


def test_every_string_marked_in_the_code_is_in_every_catalogue():
    marked = _marked_strings()
    for language in TRANSLATED:
        ids = {m.id[0] if isinstance(m.id, tuple) else m.id for m in _catalogue(language)}
        missing = sorted(marked - ids)
        assert missing == [], f"{language}: run pybabel extract/update (babel.cfg): {missing}"


def test_catalogues_keep_the_placeholders_of_the_english_text():
    placeholder = re.compile(r"%\(\w+\)s")
    for language in TRANSLATED:
        for message in _catalogue(language):
            if not message.id:
                continue
            sources = message.id if isinstance(message.id, tuple) else (message.id,)
            targets = message.string if isinstance(message.string, tuple) else (message.string,)
            wanted = set(placeholder.findall(sources[-1]))
            for target in targets:
                assert set(placeholder.findall(target)) == wanted, (language, message.id)


def test_no_compiled_catalogue_is_committed():
    tracked = os.popen(f"git -C {ROOT} ls-files translations").read().split()
    assert tracked and not [name for name in tracked if name.endswith(".mo")]


def test_catalogues_compile_to_the_cache_and_recompile_when_a_po_is_newer(tmp_path):
    source = tmp_path / "translations"
    (source / "da" / "LC_MESSAGES").mkdir(parents=True)
    po = source / "da" / "LC_MESSAGES" / "messages.po"
    po.write_bytes((ROOT / "translations/da/LC_MESSAGES/messages.po").read_bytes())
    cache = tmp_path / "cache"
    i18n.compile_catalogues(source, cache)
    mo = cache / "da" / "LC_MESSAGES" / "messages.mo"
    assert Translations.load(str(cache), ["da"]).gettext("Log in") == "Log ind"
    first = mo.stat().st_mtime_ns

    i18n.compile_catalogues(source, cache)
    assert mo.stat().st_mtime_ns == first  # up to date: not rewritten

    po.write_text(po.read_text(encoding="utf-8").replace('msgstr "Log ind"', 'msgstr "Kom ind"'),
                  encoding="utf-8")
    later = time.time() + 5
    os.utime(po, (later, later))
    i18n.compile_catalogues(source, cache)
    assert Translations.load(str(cache), ["da"]).gettext("Log in") == "Kom ind"
    assert [p.name for p in mo.parent.iterdir()] == ["messages.mo"]  # no temp files left


def test_many_processes_compiling_at_once_leave_a_whole_catalogue(tmp_path):
    cache = tmp_path / "cache"
    errors: list[BaseException] = []

    def compile_all() -> None:
        try:
            for _ in range(3):
                i18n.compile_catalogues(ROOT / "translations", cache)
                for mo in cache.glob("*/LC_MESSAGES/messages.mo"):
                    mo.unlink(missing_ok=True)  # force the next round to write again
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=compile_all) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    i18n.compile_catalogues(ROOT / "translations", cache)
    for language in TRANSLATED:
        assert Translations.load(str(cache), [language]).gettext("Log in") == LOG_IN[language]


# --- transport security flags ------------------------------------------------------------


def test_over_https_the_cookies_are_secure_and_hsts_is_sent(sqlite_url):
    config = make_config(sqlite_url, page_language=None, public_url="https://broker.test")
    application = create_app(config)
    try:
        client = application.test_client()
        page = client.get("/t/aaro-vand/login?lang=en", base_url="https://broker.test")
        assert page.headers["Strict-Transport-Security"].startswith("max-age=")
        cookies = page.headers.getlist("Set-Cookie")
        session = next(c for c in cookies if c.startswith("session="))
        language = next(c for c in cookies if c.startswith(f"{i18n.LANG_COOKIE}="))
        for cookie in (session, language):
            assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    finally:
        application.extensions["broker"].engine.dispose()


def test_over_plain_http_no_hsts_is_sent(client):
    page = client.get("/t/aaro-vand/login")
    assert "Strict-Transport-Security" not in page.headers
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
