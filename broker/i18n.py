"""Languages of the customer-facing pages: which one a request gets, and the catalogues.

The locale of a request is, in this order: the language the user just picked with the switcher
(``?lang=``, then remembered in a cookie), the ``ui_locales`` of the portal's authorization
request, the logged-in user's saved locale, the browser's Accept-Language, and finally the
tenant's default. Every choice is restricted to the tenant's ``locales``.

The ``.po`` catalogues in ``translations/`` are the source; the ``.mo`` files Flask-Babel reads
are compiled from them at start-up into a cache directory (never committed), recompiled when a
``.po`` is newer. Several processes may start at once: each writes a temporary file and renames
it into place, so a reader never sees half a catalogue.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from flask import Flask, current_app, g, request
from flask_babel import Babel, get_locale, lazy_ngettext
from flask_babel import lazy_gettext as _l

from .config import LOCALES, TenantConfig

log = logging.getLogger(__name__)

TRANSLATIONS_DIR = Path(__file__).resolve().parent.parent / "translations"
DOMAIN = "messages"
FALLBACK_LOCALE = "en"
LANG_COOKIE = "broker_lang"
LANG_COOKIE_MAX_AGE = 365 * 24 * 3600
LANGUAGE_NAMES = {
    "da": "Dansk", "nb": "Norsk", "sv": "Svenska", "fi": "Suomi", "es": "Español",
    "en": "English",
}

# --- Compiling the catalogues ---------------------------------------------------------------


def default_cache_dir(source: Path = TRANSLATIONS_DIR) -> Path:
    """``BROKER_TRANSLATIONS_CACHE``, else ``_compiled`` beside the sources when writable (a
    checkout), else the user's cache directory (an installed, read-only package)."""
    configured = os.environ.get("BROKER_TRANSLATIONS_CACHE")
    if configured:
        return Path(configured)
    if os.access(source, os.W_OK):
        return source / "_compiled"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "utility-broker" / "translations"


def compile_catalogues(source: Path = TRANSLATIONS_DIR, cache: Path | None = None) -> Path:
    """Compile every ``<lang>/LC_MESSAGES/messages.po`` under ``source`` into ``cache`` when
    the ``.mo`` there is missing or older than its ``.po``; returns the cache directory."""
    cache = cache or default_cache_dir(source)
    for po_path in sorted(source.glob(f"*/LC_MESSAGES/{DOMAIN}.po")):
        locale = po_path.parent.parent.name
        mo_path = cache / locale / "LC_MESSAGES" / f"{DOMAIN}.mo"
        if not _is_fresh(mo_path, po_path):
            _compile_one(po_path, mo_path, locale)
    return cache


def _is_fresh(mo_path: Path, po_path: Path) -> bool:
    try:
        return mo_path.stat().st_mtime_ns >= po_path.stat().st_mtime_ns
    except FileNotFoundError:  # not compiled yet, or removed by someone else meanwhile
        return False


def _compile_one(po_path: Path, mo_path: Path, locale: str) -> None:
    with po_path.open("rb") as source:
        catalog = read_po(source, locale=locale, domain=DOMAIN)
    mo_path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=mo_path.parent, prefix=".messages-", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as target:
            write_mo(target, catalog, use_fuzzy=False)
        os.replace(temporary, mo_path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


# --- Choosing the locale of a request -------------------------------------------------------


def _allowed(tenant: TenantConfig | None) -> tuple[list[str], str]:
    if tenant is None:
        return list(LOCALES), FALLBACK_LOCALE
    return list(tenant.locales), tenant.default_locale


def request_tenant() -> TenantConfig | None:
    """The tenant named in the URL (``/t/<tenant>/...``, or the demo portal's ``/<tenant>/``)."""
    args = request.view_args or {}
    slug = args.get("tenant") or args.get("tenant_slug")
    tenants: Mapping[str, TenantConfig] = current_app.extensions.get("broker_i18n_tenants", {})
    return tenants.get(slug) if isinstance(slug, str) else None


def _first_allowed(values: str, allowed: list[str]) -> str | None:
    """The first of space- or comma-separated language tags that the tenant offers;
    a regional tag (``da-DK``, ``sv_FI``) counts as its language."""
    for value in values.replace(",", " ").split():
        language = value.replace("_", "-").split("-")[0].lower()
        if language == "no":  # Norwegian without a written standard: Bokmål is ours
            language = "nb"
        if language in allowed:
            return language
    return None


def _authorize_ui_locales(tenant: TenantConfig) -> str:
    """``ui_locales`` of the request itself (/authorize) or of its stored authorize flow."""
    direct = request.values.get("ui_locales", "")
    if direct:
        return direct
    flow_id = request.args.get("flow") or (request.form.get("flow") if request.form else None)
    if not flow_id or "broker" not in current_app.extensions:
        return ""
    from .models import Flow, utcnow
    from .state import db

    flow = db().get(Flow, flow_id)
    if flow is None or flow.tenant != tenant.slug or flow.kind != "authorize":
        return ""
    if flow.expires_at <= utcnow():
        return ""
    return str(flow.data.get("ui_locales") or "")


def _saved_locale(tenant: TenantConfig) -> str:
    if "broker" not in current_app.extensions:
        return ""
    from .views.tenancy import current_login

    login, user = current_login(tenant)
    return (user.locale or "") if login is not None and user is not None else ""


def select_locale() -> str:
    """Flask-Babel's locale selector; see the module docstring for the order."""
    tenant = request_tenant()
    allowed, default = _allowed(tenant)
    explicit = _first_allowed(request.args.get("lang", ""), allowed)
    if explicit:
        return explicit
    remembered = _first_allowed(request.cookies.get(LANG_COOKIE, ""), allowed)
    if remembered:
        return remembered
    if tenant is not None:
        for source in (_authorize_ui_locales, _saved_locale):
            chosen = _first_allowed(source(tenant), allowed)
            if chosen:
                return chosen
    return request.accept_languages.best_match(allowed) or _accept_language_prefix(allowed) \
        or default


def _accept_language_prefix(allowed: list[str]) -> str | None:
    """``da-DK`` or ``no`` in Accept-Language when only ``da`` / ``nb`` is offered."""
    ranked = sorted(request.accept_languages, key=lambda item: -item[1])
    return _first_allowed(" ".join(tag for tag, quality in ranked if quality > 0), allowed)


def current_locale() -> str:
    """The language of this request's page, as a plain tag (``da``)."""
    locale = get_locale()
    return str(locale) if locale is not None else FALLBACK_LOCALE


def language_links() -> list[dict[str, Any]]:
    """The switcher: one link per language the tenant offers, to this page in that language."""
    tenant = request_tenant()
    allowed, _ = _allowed(tenant)
    if tenant is None or len(allowed) < 2:
        return []
    rule = request.url_rule
    if rule is None or "GET" not in (rule.methods or ()):
        return []  # a page shown after a POST to an address that has no page of its own
    here = current_locale()
    base = request.args.to_dict(flat=True)
    if request.method == "POST" and request.form.get("flow") and "flow" not in base:
        base["flow"] = request.form["flow"]
    links = []
    for code in allowed:
        args = {**base, "lang": code}
        links.append({"code": code, "name": LANGUAGE_NAMES[code], "current": code == here,
                      "href": f"{request.script_root}{request.path}?{urlencode(args)}"})
    return links


def _remember_choice(response: Any) -> Any:
    """A ``?lang=`` the tenant offers is kept in a cookie for the next pages."""
    tenant = request_tenant()
    allowed, _ = _allowed(tenant)
    chosen = _first_allowed(request.args.get("lang", ""), allowed)
    if chosen:
        secure = request.is_secure or current_app.config.get("SESSION_COOKIE_SECURE", False)
        response.set_cookie(LANG_COOKIE, chosen, max_age=LANG_COOKIE_MAX_AGE, path="/",
                            httponly=True, samesite="Lax", secure=bool(secure))
    return response


# --- Password policy rules in the user's language -------------------------------------------

PASSWORD_RULE_MESSAGES: dict[str, Callable[[int], Any]] = {
    "min_length": lambda n: lazy_ngettext(
        "Use at least %(count)s character.", "Use at least %(count)s characters.", n, count=n),
    "max_length": lambda n: lazy_ngettext(
        "Use at most %(count)s character.", "Use at most %(count)s characters.", n, count=n),
    "min_upper": lambda n: lazy_ngettext(
        "Include at least %(count)s upper-case letter.",
        "Include at least %(count)s upper-case letters.", n, count=n),
    "min_lower": lambda n: lazy_ngettext(
        "Include at least %(count)s lower-case letter.",
        "Include at least %(count)s lower-case letters.", n, count=n),
    "min_digits": lambda n: lazy_ngettext(
        "Include at least %(count)s digit.", "Include at least %(count)s digits.", n, count=n),
    "min_special": lambda n: lazy_ngettext(
        "Include at least %(count)s special character (such as ! # %% or -).",
        "Include at least %(count)s special characters (such as ! # %% or -).", n, count=n),
    "min_distinct": lambda n: lazy_ngettext(
        "Use at least %(count)s different character.",
        "Use at least %(count)s different characters.", n, count=n),
    "shared_run_with_user_data": lambda n: lazy_ngettext(
        "Do not use %(count)s character in a row from your name or email address.",
        "Do not use %(count)s characters in a row from your name or email address.", n,
        count=n),
    "too_weak": lambda n: _l(
        "Choose a password that is harder to guess (strength %(count)s of 4).", count=n),
    "common_password": lambda n: _l("Do not use a commonly used password."),
    "confirmation_mismatch": lambda n: _l("The two passwords must be the same."),
}
"""Rule code -> its text in the current language (policies/password.py stays pure)."""


def password_rule_text(rule: Any) -> str:
    """A ``PasswordRule`` (or failure) in the user's language; an unknown code in English."""
    text = PASSWORD_RULE_MESSAGES.get(rule.code)
    if text is None:
        return str(rule.message)
    number = rule.params.get("count", rule.params.get("score", 0))
    return str(text(number))


# --- Wiring ---------------------------------------------------------------------------------


def init_app(app: Flask, tenants: Mapping[str, TenantConfig],
             cache: Path | None = None) -> None:
    """Compile the catalogues, install Flask-Babel with our selector, the switcher and
    ``g.locale`` for ``<html lang>``. Used by the broker and the demo portal."""
    directory = compile_catalogues(TRANSLATIONS_DIR, cache)
    app.extensions["broker_i18n_tenants"] = tenants
    Babel(app, locale_selector=select_locale, default_locale=FALLBACK_LOCALE,
          default_translation_directories=str(directory))
    app.jinja_env.globals["password_rule_text"] = password_rule_text
    app.after_request(_remember_choice)

    @app.context_processor
    def _language() -> dict[str, Any]:
        g.locale = current_locale()
        return {"language_links": language_links}
