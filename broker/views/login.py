"""The login page of a tenant: email + password, and the tenant's upstream identity providers.

Reached from /authorize with a flow id that keeps the portal's request server-side; after a
successful login the browser goes back to /authorize to receive its code.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, redirect, render_template, request, url_for

from .. import db as database
from .. import login_session
from ..config import TenantConfig
from ..models import Flow, utcnow
from ..state import current, db
from ..throttle import EMAIL, throttled
from .oidc import resume_url
from .tenancy import (
    current_login,
    flow_belongs_to_this_browser,
    source_address,
    tenant_or_404,
)

blueprint = Blueprint("login", __name__, url_prefix="/t/<tenant>")


def authorize_flow(tenant: str, flow_id: str | None) -> Flow | None:
    if not flow_id or "\x00" in flow_id:  # ids are URL-safe; PostgreSQL text holds no NUL
        return None
    flow = db().get(Flow, flow_id)
    if flow is None or flow.tenant != tenant or flow.kind != "authorize":
        return None
    if flow.expires_at <= utcnow() or not flow_belongs_to_this_browser(flow):
        return None
    return flow


def set_session_cookie(response: Response, tenant: TenantConfig, token: str,
                       login: login_session.StartedLogin) -> None:
    max_age = int((login.expires_at - utcnow()).total_seconds()) if login.remember else None
    response.set_cookie(
        login_session.cookie_name(tenant.slug),
        token,
        max_age=max_age,
        path=f"/t/{tenant.slug}",
        secure=current().config.public_url.startswith("https://"),
        httponly=True,
        samesite="Lax",
    )


def finish_login(tenant: TenantConfig, flow: Flow | None, token: str,
                 login: login_session.StartedLogin) -> Response:
    """After any successful authentication: set the cookie, continue where the user was."""
    target = resume_url(flow) if flow else url_for("login.signed_in", tenant=tenant.slug)
    response = redirect(target)
    set_session_cookie(response, tenant, token, login)
    return response


def _render(tenant: TenantConfig, flow: Flow | None, status: int = 200, **context: object):
    upstreams = [m for m in tenant.login_methods if m != "password"]
    return render_template(
        "login/login.html",
        tenant=tenant,
        flow_id=flow.id if flow else "",
        login_hint=(flow.data.get("login_hint", "") if flow else ""),
        password_enabled="password" in tenant.login_methods,
        upstreams=upstreams,
        **context,
    ), status


@blueprint.get("/login")
def login_page(tenant: str):  # type: ignore[no-untyped-def]
    tenant_config = tenant_or_404(tenant)
    return _render(tenant_config, authorize_flow(tenant, request.args.get("flow")))


@blueprint.post("/login")
@throttled("login", target=EMAIL)
def login_submit(tenant: str):  # type: ignore[no-untyped-def]
    from flows.password_login import authenticate_password

    tenant_config = tenant_or_404(tenant)
    session = db()
    # On PostgreSQL every statement of a plain login stands alone, on one connection: the
    # flow's read, the reservation (broker.attempts) and the session's start with the
    # password's bookkeeping (broker.login_session), one statement each. Every path that
    # writes more than one statement after the reservation (a wrong password, a refused
    # status, a second factor, a rehash) first returns to a transaction
    # (``database.end_stand_alone``); a locked account's one audit row stands alone too.
    database.statements_stand_alone(session)
    flow = authorize_flow(tenant, request.form.get("flow"))
    if "password" not in tenant_config.login_methods:
        return _render(tenant_config, flow, 400, error="password_disabled")
    email = request.form.get("email", "")
    password = request.form.get("password", "")
    if not email.strip() or not password:
        return _render(tenant_config, flow, 400, error="missing", email=email)
    config = current().config
    result = authenticate_password(
        session, tenant_config, email, password,
        source_address=source_address(), hmac_key=config.hmac_key, public_url=config.public_url,
    )
    if result.outcome != "ok" or result.user is None:
        session.commit()  # the failure count and any lock are part of the outcome
        return _render(tenant_config, flow, 401 if result.outcome == "invalid" else 403,
                       error=result.outcome, email=email, locked_until=result.locked_until)
    # TOTP (views/account.py): when a second factor is due, the session waits for it; the
    # right password's bookkeeping is then written with the pending login, else with the
    # session.
    from .account import second_factor_redirect

    remember = request.form.get("remember") == "on"
    pending = second_factor_redirect(tenant_config, flow.id if flow else None, result.user,
                                     remember, accepted=result.accepted)
    if pending is not None:
        return pending
    # end TOTP
    login, token = login_session.start(
        session, tenant_config, result.user, amr=["pwd"], acr="low",
        remember=remember, accepted=result.accepted,
    )
    session.commit()
    return finish_login(tenant_config, flow, token, login)


@blueprint.get("/signed-in")
def signed_in(tenant: str):  # type: ignore[no-untyped-def]
    """Where a login without a portal request lands."""
    tenant_config = tenant_or_404(tenant)
    login, user = current_login(tenant_config)
    if login is None:
        return redirect(url_for("login.login_page", tenant=tenant))
    return current_app.make_response(
        render_template("login/signed_in.html", tenant=tenant_config, user=user)
    )
