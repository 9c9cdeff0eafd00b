"""Resolving the tenant of a request and the browser's login session at it."""

from __future__ import annotations

from flask import abort, g, request

from .. import login_session
from ..config import TenantConfig
from ..models import Flow, LoginSession, User
from ..security import digests_match, sha256_hex
from ..state import current, db


def tenant_or_404(slug: str) -> TenantConfig:
    tenant = current().tenant(slug)
    if tenant is None:
        abort(404)
    g.tenant = tenant
    return tenant


def current_login(tenant: TenantConfig) -> tuple[LoginSession, User] | tuple[None, None]:
    """The browser's live session at this tenant (one query, cached for the request)."""
    if "login" not in g:
        token = request.cookies.get(login_session.cookie_name(tenant.slug))
        g.login = login_session.load(db(), tenant.slug, token) or (None, None)
    return g.login


def source_address() -> str | None:
    return request.remote_addr


def browser_cookie_name(tenant: str) -> str:
    return f"bbrowser_{tenant}"


def flow_belongs_to_this_browser(flow: Flow) -> bool:
    """An authorize flow is usable only in the browser that started it: its id in another
    browser's URL (a link an attacker sends) leads nowhere."""
    token = request.cookies.get(browser_cookie_name(flow.tenant))
    return bool(token) and digests_match(sha256_hex(token), flow.data.get("browser"))
