"""The Flask app factory: config in, a ready broker out."""

from __future__ import annotations

import logging
import secrets
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, abort, g, request
from sqlalchemy import select
from werkzeug.middleware.proxy_fix import ProxyFix

from . import db as database
from . import throttle
from .config import BrokerConfig, load_config
from .cookie_session import CachedSerializerSessionInterface
from .logs import configure_logging
from .models import Tenant
from .state import BrokerState

log = logging.getLogger("broker")
TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"


def create_app(config: BrokerConfig | str | Path, *, migrate: bool = False) -> Flask:
    """Build the broker. ``migrate`` upgrades the schema first (demo and tests)."""
    if not isinstance(config, BrokerConfig):
        config = load_config(config)
    configure_logging(config.log_level)

    app = Flask(__name__, template_folder=str(TEMPLATES_DIR), static_folder=None)
    app.config.update(
        SECRET_KEY=config.secret_key,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=config.public_url.startswith("https://"),
        MAX_CONTENT_LENGTH=1024 * 1024,
    )
    app.session_interface = CachedSerializerSessionInterface()
    if config.trusted_proxies:
        hops = config.trusted_proxies
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops
        )

    engine = database.make_engine(config.database_url)
    if migrate:
        database.upgrade(config.database_url)
    state = BrokerState(config=config, engine=engine, sessions=database.make_sessionmaker(engine))
    app.extensions["broker"] = state
    _sync_tenants(state)
    _build_oidc(app, state)
    _warm_password_hashing(state)

    _install_request_hooks(app, _content_security_policy(config))
    _register_blueprints(app)
    throttle.init_app(app, config)  # after the views it wraps, before CSRF exempts them
    from .i18n import init_app as install_languages

    install_languages(app, config.tenants)
    _protect_forms(app, config)
    if config.messaging.run_worker_in_process:
        from .messaging.worker import start_in_process_worker

        start_in_process_worker(app)
    return app


def _sync_tenants(state: BrokerState) -> None:
    """Make sure each configured tenant has its anchor row (idempotent, safe on many hosts)."""
    try:
        with database.transaction(state.sessions) as session:
            known = set(session.scalars(select(Tenant.slug)))
            for slug, tenant in state.config.tenants.items():
                if slug not in known:
                    session.add(Tenant(slug=slug, name=tenant.name))
    except Exception:
        log.warning("tenant rows not synced; is the database migrated? run: broker db upgrade")


def _warm_password_hashing(state: BrokerState) -> None:
    """Make each tenant's equal-time dummy hash now, not on the first unknown-email login
    (which would otherwise cost two argon2 runs and stand out in timing)."""
    from .passwords import dummy_hash

    for tenant in state.config.tenants.values():
        dummy_hash(tenant)


def _build_oidc(app: Flask, state: BrokerState) -> None:
    from .oidc.keys import KeyStore
    from .oidc.logout import notify_after_commit
    from .oidc.server import build_servers

    keys = KeyStore(state.sessions, state.config.tenants)
    state.services["keys"] = keys
    state.services["oidc_servers"] = build_servers(state.config, keys)
    notify_after_commit(app, state.sessions, state.services["oidc_servers"])


def _content_security_policy(config: BrokerConfig) -> str:
    """Built once: our own origin, plus the hosts of the tenants' logos (branding)."""
    logo_origins = sorted({
        f"{parts.scheme}://{parts.netloc}"
        for tenant in config.tenants.values() if tenant.logo_url
        for parts in [urlsplit(tenant.logo_url)] if parts.scheme in ("http", "https")
    })
    images = " ".join(["'self'", "data:", *logo_origins])
    return (
        f"default-src 'self'; img-src {images}; style-src 'self' 'unsafe-inline'; "
        "frame-ancestors 'none'; form-action 'self' http: https:"
    )


def _install_request_hooks(app: Flask, content_security_policy: str) -> None:
    @app.before_request
    def _start() -> None:
        incoming = request.headers.get("X-Request-Id", "")[:64]
        g.request_id = incoming if incoming.isprintable() and incoming else secrets.token_hex(8)
        g.started = time.perf_counter()
        if _has_nul(request.args) or (request.mimetype in _FORM_TYPES
                                      and _has_nul(request.form)):
            # No field of ours may hold a NUL, and PostgreSQL text cannot: refuse it up front.
            abort(400)

    defaults = _default_headers(content_security_policy)
    secure_defaults = (*defaults, *_DEFAULT_HEADERS_WHEN_SECURE)

    @app.after_request
    def _finish(response: Any) -> Any:
        headers = response.headers
        headers["X-Request-Id"] = g.get("request_id", "")
        # A header the view set stands. One pass over the headers, not a lookup per default:
        # werkzeug scans the list and raises a KeyError for each one missing (20 us a request).
        present = {name.lower() for name, _ in headers.items()}
        for lower, name, value in secure_defaults if request.is_secure else defaults:
            if lower not in present:
                headers.add(name, value)
        return response

    @app.teardown_request
    def _close_db(error: BaseException | None) -> None:
        session = g.pop("db", None)
        if session is not None:
            if error is not None:
                session.rollback()
            session.close()


_Header = tuple[str, str, str]  # lower-case name, name, value


def _default_headers(content_security_policy: str) -> tuple[_Header, ...]:
    """What every response carries unless its view set its own."""
    return tuple((name.lower(), name, value) for name, value in (
        ("X-Content-Type-Options", "nosniff"),
        # A form post over HTTPS must name its page: Flask-WTF's CSRF check refuses one
        # without a Referer of this origin. Other sites learn nothing of our URLs.
        ("Referrer-Policy", "same-origin"),
        ("X-Frame-Options", "DENY"),
        ("Content-Security-Policy", content_security_policy),
    ))


# Over HTTPS only: a browser remembers it for the host.
_DEFAULT_HEADERS_WHEN_SECURE: tuple[_Header, ...] = (
    ("strict-transport-security", "Strict-Transport-Security", "max-age=31536000"),
)


def _protect_forms(app: Flask, config: BrokerConfig) -> None:
    """CSRF tokens on every form; the protocol endpoints that portals call server-to-server
    (token, revocation, introspection, userinfo, back-channel calls) authenticate otherwise."""
    from flask_wtf.csrf import CSRFProtect

    app.config["WTF_CSRF_ENABLED"] = config.csrf_protection
    app.config["WTF_CSRF_TIME_LIMIT"] = None  # bound to the session instead of a clock
    csrf = CSRFProtect(app)
    for endpoint in ("oidc.token", "oidc.revoke", "oidc.introspect", "oidc.userinfo",
                     "oidc.authorize", "oidc.logout"):
        view = app.view_functions.get(endpoint)
        if view is not None:
            csrf.exempt(view)
    api = app.blueprints.get("admin_api")
    if api is not None:
        csrf.exempt(api)


# The encodings a browser posts a form in; request.form parses both.
_FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})


def _has_nul(values: Any) -> bool:
    return any("\x00" in key or "\x00" in value for key, value in values.items(multi=True))


def _register_blueprints(app: Flask) -> None:
    from .views import register

    register(app)
