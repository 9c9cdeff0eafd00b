"""Login through an upstream identity provider, the first-login pages, and linked identities.

``/login/<kind>`` keeps the attempt server-side (``flows.upstream_login``) and sends the browser
to the upstream; ``/login/<kind>/callback`` takes the attempt once, lets the provider check the
answer, then either logs the user in or walks them through the first-login steps. A short-lived
HttpOnly cookie binds both the attempt and the first-login journey to this browser, so a
callback or a journey URL opened elsewhere does nothing.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, abort, redirect, render_template, request, url_for
from sqlalchemy.exc import IntegrityError

from flows import upstream_login as journey
from providers import UpstreamError, build_provider
from providers.base import OAuth2Provider

from .. import audit, login_session
from ..config import TenantConfig, UpstreamConfig
from ..models import Flow
from ..security import new_token
from ..state import current, db
from ..throttle import throttled
from .account import second_factor_redirect
from .login import authorize_flow, finish_login
from .tenancy import current_login, source_address, tenant_or_404

blueprint = Blueprint("upstream", __name__, url_prefix="/t/<tenant>")

BROWSER_COOKIE = "upstream_browser"
BROWSER_COOKIE_SECONDS = journey.FIRST_LOGIN_MINUTES * 60
LOGIN_HINT_KINDS = ("microsoft", "google")  # where a login hint is an email the upstream knows
PAGES = ("ask_email", "enter_code", "prove", "profile")  # the steps that have a page


def _upstream_or_404(tenant: TenantConfig, kind: str) -> UpstreamConfig:
    upstream = tenant.upstreams.get(kind)
    if kind not in tenant.login_methods or upstream is None:
        abort(404)
    return upstream


def _provider(tenant: TenantConfig, kind: str, upstream: UpstreamConfig) -> OAuth2Provider:
    """Built once per tenant and upstream (FTN reads its key file); kept in memory."""
    providers: dict[tuple[str, str], OAuth2Provider] = current().services.setdefault(
        "upstream_providers", {}
    )
    key = (tenant.slug, kind)
    if key not in providers:
        public_url = current().config.public_url.rstrip("/")
        providers[key] = build_provider(
            upstream, redirect_uri=f"{public_url}/t/{tenant.slug}/login/{kind}/callback"
        )
    return providers[key]


def _browser_token() -> str:
    """The binding cookie of the journey this browser is on (the callback required it)."""
    return request.cookies.get(BROWSER_COOKIE) or new_token()


def _bind_browser(response: Response, tenant: str, token: str) -> Response:
    response.set_cookie(
        BROWSER_COOKIE, token, max_age=BROWSER_COOKIE_SECONDS, path=f"/t/{tenant}",
        secure=current().config.public_url.startswith("https://"), httponly=True,
        samesite="Lax",
    )
    return response


def _error_page(tenant: TenantConfig, code: str, kind: str, status: int = 400):  # type: ignore[no-untyped-def]
    return render_template(
        "upstream/error.html", tenant=tenant, code=code,
        provider=journey.provider_label(kind), flow_id=request.args.get("flow", ""),
    ), status


# --- start and callback -------------------------------------------------------------------------


@blueprint.get("/login/<kind>")
@throttled("upstream_start", methods=("GET",))
def start(tenant: str, kind: str):  # type: ignore[no-untyped-def]
    tenant_config = tenant_or_404(tenant)
    upstream = _upstream_or_404(tenant_config, kind)
    authorize = authorize_flow(tenant, request.args.get("flow"))
    link_user_id = None
    if request.args.get("link") == "1":
        login, user = current_login(tenant_config)
        if login is None:
            return redirect(url_for("login.login_page", tenant=tenant))
        link_user_id = user.id
    required_acr = authorize.data.get("required_acr") if authorize else None
    hint = (authorize.data.get("login_hint") or None) if authorize else None
    try:
        begun = _provider(tenant_config, kind, upstream).begin(
            hint if kind in LOGIN_HINT_KINDS else None, acr=required_acr
        )
    except UpstreamError as error:
        _audit_failure(tenant_config, kind, error.code)
        db().commit()
        return _error_page(tenant_config, error.code, kind, 502)
    # A fresh token for every start: a token once seen (a shared computer, a log) is worth
    # nothing for the next login, and one journey's cookie never binds another.
    browser = new_token()
    journey.new_upstream_flow(
        db(), tenant, begun.state_data, browser_token=browser,
        authorize_flow_id=authorize.id if authorize else None, link_user_id=link_user_id,
    )
    db().commit()
    return _bind_browser(redirect(begun.url), tenant, browser)


@blueprint.get("/login/<kind>/callback")
def callback(tenant: str, kind: str):  # type: ignore[no-untyped-def]
    tenant_config = tenant_or_404(tenant)
    upstream = _upstream_or_404(tenant_config, kind)
    session = db()
    browser = request.cookies.get(BROWSER_COOKIE)
    attempt = journey.take_upstream_flow(
        session, tenant, kind, request.args.get("state", ""), browser
    )
    session.commit()  # the attempt is spent before the code is redeemed
    if attempt is None or browser is None:
        _audit_failure(tenant_config, kind, "unknown_state")
        session.commit()
        return _error_page(tenant_config, "unknown_state", kind)
    try:
        identity = _provider(tenant_config, kind, upstream).complete(
            request.args, attempt["state_data"]
        )
    except UpstreamError as error:
        _audit_failure(tenant_config, kind, error.code)
        session.commit()
        return _error_page(tenant_config, error.code, kind)

    hmac_key = current().config.hmac_key
    if attempt.get("link_user_id"):
        return _link_to_current_user(tenant_config, attempt["link_user_id"], identity, hmac_key)
    authorize = authorize_flow(tenant, attempt.get("authorize_flow"))
    step = journey.after_upstream_login(
        session, tenant_config, hmac_key, identity,
        authorize_flow_id=authorize.id if authorize else None,
        required_acr=authorize.data.get("required_acr") if authorize else None,
        browser_token=browser, source=source_address(),
    )
    return _show(tenant_config, step, kind=kind, authorize=authorize)


def _link_to_current_user(tenant: TenantConfig, user_id: int, identity: Any, hmac_key: str):  # type: ignore[no-untyped-def]
    login, user = current_login(tenant)
    if login is None or user.id != user_id:
        return _error_page(tenant, "unknown_state", identity.provider)
    step = journey.link_to_user(db(), tenant, hmac_key, user, identity, source_address())
    if not _commit():
        return _error_page(tenant, "try_again", identity.provider, 409)
    if step.name == "refused":
        return _error_page(tenant, step.error, identity.provider, 409)
    return redirect(url_for("upstream.identities", tenant=tenant.slug, notice="linked"))


def _commit() -> bool:
    """Two first logins racing for one identity or email: the loser starts over."""
    try:
        db().commit()
        return True
    except IntegrityError:
        db().rollback()
        return False


# --- showing a step -----------------------------------------------------------------------------


def _show(tenant: TenantConfig, step: journey.Step, kind: str = "",  # type: ignore[no-untyped-def]
          authorize: Flow | None = None):
    """Commit the step, then log in (done), explain (refused), move on to the next step's page
    (a redirect, so a reload never re-posts) or show the same step with what went wrong."""
    session = db()
    kind = step.flow.data.get("provider", kind) if step.flow else kind
    if step.name == "done" and step.user is not None:
        if step.flow is not None:
            authorize = authorize_flow(tenant.slug, step.flow.data.get("authorize_flow"))
            journey.finish(session, step.flow)
        if step.second_factor:
            # An existing account was linked by its email code or password: one factor. Its
            # TOTP comes before any session (the pending login keeps the upstream's amr/acr).
            if not _commit():
                return _error_page(tenant, "try_again", kind, 409)
            pending = second_factor_redirect(tenant, authorize.id if authorize else None,
                                             step.user, False, amr=step.amr, acr=step.acr,
                                             then_link=step.link)
            if pending is not None:
                return pending
        if step.link is not None:  # its second factor was turned off meanwhile: link now
            journey.link_after_second_factor(session, tenant, step.user, step.link,
                                             source_address())
        login, token = login_session.start(session, tenant, step.user, amr=step.amr,
                                           acr=step.acr)
        if not _commit():
            return _error_page(tenant, "try_again", kind, 409)
        return finish_login(tenant, authorize, token, login)
    if not _commit():
        return _error_page(tenant, "try_again", kind, 409)
    if step.name == "refused":
        return _error_page(tenant, step.error, kind or "upstream", 403)
    assert step.flow is not None
    if not step.error:
        response = redirect(url_for("upstream.first_login", tenant=tenant.slug,
                                    flow_id=step.flow.id))
        return _bind_browser(response, tenant.slug, _browser_token())
    return _render_step(tenant, step, 400)


def _render_step(tenant: TenantConfig, step: journey.Step, status: int = 200):  # type: ignore[no-untyped-def]
    assert step.flow is not None
    return render_template(
        f"upstream/{step.name}.html", tenant=tenant, flow_id=step.flow.id, error=step.error,
        provider=journey.provider_label(step.context.get("provider", "")), **{
            k: v for k, v in step.context.items() if k != "provider"
        },
    ), status


def _journey_or_error(tenant: str, flow_id: str) -> tuple[TenantConfig, Flow | None]:
    tenant_config = tenant_or_404(tenant)
    flow = journey.load_first_login(db(), tenant, flow_id, request.cookies.get(BROWSER_COOKIE))
    return tenant_config, flow


@blueprint.get("/first-login/<flow_id>")
def first_login(tenant: str, flow_id: str):  # type: ignore[no-untyped-def]
    tenant_config, flow = _journey_or_error(tenant, flow_id)
    if flow is None or flow.state not in PAGES:
        return _error_page(tenant_config, "journey_expired", "upstream")
    return _render_step(tenant_config, journey.current_step(flow))


@blueprint.post("/first-login/<flow_id>/<action>")
@throttled("activation")  # per source address: email codes are guessed here
def first_login_submit(tenant: str, flow_id: str, action: str):  # type: ignore[no-untyped-def]
    tenant_config, flow = _journey_or_error(tenant, flow_id)
    if flow is None or flow.state not in PAGES:
        return _error_page(tenant_config, "journey_expired", "upstream")
    session, config, form = db(), current().config, request.form
    key = config.hmac_key
    if action == "email":
        step = journey.submit_email(session, tenant_config, key, flow, form.get("email", ""))
    elif action == "code":
        step = journey.submit_code(session, tenant_config, key, flow, form.get("code", ""),
                                   source_address())
    elif action == "resend":
        step = journey.resend_code(session, tenant_config, key, flow)
    elif action == "password":
        step = journey.submit_password(session, tenant_config, key, flow,
                                       form.get("password", ""), source_address(),
                                       config.public_url)
    elif action == "send-code":
        step = journey.choose_code_proof(session, tenant_config, key, flow)
    elif action == "profile":
        step = journey.save_profile(session, tenant_config, key, flow,
                                    name=form.get("name", ""), email=form.get("email", ""),
                                    phone=form.get("phone", ""))
    else:
        abort(404)
    return _show(tenant_config, step)


# --- the profile's linked identities ------------------------------------------------------------


@blueprint.route("/profile/identities", methods=["GET", "POST"])
def identities(tenant: str):  # type: ignore[no-untyped-def]
    tenant_config = tenant_or_404(tenant)
    login, user = current_login(tenant_config)
    if login is None:
        return redirect(url_for("login.login_page", tenant=tenant))
    session = db()
    error, notice, status = "", request.args.get("notice", ""), 200
    if request.method == "POST":
        identity_id = request.form.get("identity_id", "")
        outcome = (journey.unlink_identity(session, tenant_config, user, int(identity_id),
                                           source_address())
                   if identity_id.isascii() and identity_id.isdigit() and len(identity_id) < 10
                   else "not_found")
        session.commit()
        if outcome == "ok":
            return redirect(url_for("upstream.identities", tenant=tenant, notice="unlinked"))
        error, status = outcome, 400
    linked = journey.identities_of(session, user)
    linked_kinds = {row.provider for row in linked}
    can_link = [kind for kind in tenant_config.login_methods
                if kind in tenant_config.upstreams and kind not in linked_kinds]
    return render_template(
        "upstream/identities.html", tenant=tenant_config, identities=linked, error=error,
        notice=notice, can_link=can_link, label=journey.provider_label,
    ), status


def _audit_failure(tenant: TenantConfig, kind: str, code: str) -> None:
    audit.record(db(), "upstream_login_failed", tenant=tenant.slug, actor_type="anonymous",
                 source_address=source_address(), reason=code, outcome="refused",
                 provider=kind, code=code)
