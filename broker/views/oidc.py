"""The OpenID Connect endpoints of each tenant's issuer, /t/<tenant>/...

Views parse the request, hand it to the tenant's Authlib server, and commit. A refused token
request is rolled back; only the revocations that detection of a replay calls for are then
committed (see broker.oidc.grants.after_rollback).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from authlib.common.urls import add_params_to_uri
from authlib.oauth2 import OAuth2Error
from flask import (
    Blueprint,
    Response,
    current_app,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import gettext as _
from sqlalchemy import bindparam, select

from flows.privacy import consent_due

from .. import login_session
from ..models import Binding, Flow, User, utcnow
from ..oidc.claims import CLAIMS_SUPPORTED, user_claims
from ..oidc.endpoints import find_token
from ..oidc.grants import session_id_claim
from ..oidc.keys import JWKS_MAX_AGE
from ..oidc.server import SCOPES, TenantServer
from ..security import new_token, sha256_hex
from ..state import current, db
from ..throttle import CLIENT, throttled
from .tenancy import (
    browser_cookie_name,
    current_login,
    flow_belongs_to_this_browser,
    tenant_or_404,
)

log = logging.getLogger(__name__)
blueprint = Blueprint("oidc", __name__, url_prefix="/t/<tenant>")

ACR_LEVELS = {"low": 1, "substantial": 2, "high": 3}
_ANY_BINDING = select(Binding.id).where(Binding.user_id == bindparam("user_id")).limit(1)
AUTHORIZE_FLOW_MINUTES = 30
# Ten digits of seconds are over 300 years: a longer max_age asks nothing of a login (and
# int() refuses more than 4300 digits).
MAX_AGE_DIGITS = 10


@blueprint.before_request
def _fresh_keys() -> None:
    """Reload the tenant's key ring (if due) before the request opens its transaction."""
    tenant = (request.view_args or {}).get("tenant", "")
    if tenant in current().config.tenants:
        current().services["keys"].ring(tenant)


def server_for(tenant: str) -> TenantServer:
    tenant_or_404(tenant)
    return current().services["oidc_servers"][tenant]


@blueprint.get("/.well-known/openid-configuration")
def discovery(tenant: str) -> Response:
    server = server_for(tenant)
    issuer = server.issuer
    methods = ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]
    return jsonify(
        issuer=issuer,
        authorization_endpoint=f"{issuer}/authorize",
        token_endpoint=f"{issuer}/token",
        userinfo_endpoint=f"{issuer}/userinfo",
        jwks_uri=f"{issuer}/jwks",
        revocation_endpoint=f"{issuer}/revoke",
        introspection_endpoint=f"{issuer}/introspect",
        end_session_endpoint=f"{issuer}/logout",
        scopes_supported=SCOPES,
        response_types_supported=["code"],
        response_modes_supported=["query"],
        grant_types_supported=["authorization_code", "refresh_token"],
        subject_types_supported=["public"],
        id_token_signing_alg_values_supported=["RS256", "ES256"],
        token_endpoint_auth_methods_supported=methods,
        token_endpoint_auth_signing_alg_values_supported=["RS256", "ES256"],
        revocation_endpoint_auth_methods_supported=methods,
        introspection_endpoint_auth_methods_supported=methods,
        code_challenge_methods_supported=["S256"],
        claims_supported=CLAIMS_SUPPORTED,
        acr_values_supported=list(ACR_LEVELS),
        ui_locales_supported=server.tenant.locales,
        prompt_values_supported=["none", "login"],
        authorization_response_iss_parameter_supported=True,
        backchannel_logout_supported=True,
        backchannel_logout_session_supported=True,
        frontchannel_logout_supported=False,
    )


@blueprint.get("/jwks")
def jwks(tenant: str) -> Response:
    server = server_for(tenant)
    response = jsonify(server.keys.ring(tenant).public_jwks)
    response.headers["Cache-Control"] = f"public, max-age={JWKS_MAX_AGE}"
    return response


def _error_redirect(server: TenantServer, error: OAuth2Error) -> Response:
    """Errors go back to the portal only when its redirect_uri was verified; else a page."""
    if not getattr(error, "redirect_uri", None):
        return (
            render_template(
                "oidc/error.html",
                tenant=server.tenant,
                error=error.error,
                description=error.description or "",
            ),
            400,
        )  # type: ignore[return-value]
    params: list[tuple[str, str]] = [("error", error.error)]
    if error.description:
        params.append(("error_description", error.description))
    state = request.values.get("state")
    if state:
        params.append(("state", state))
    params.append(("iss", server.issuer))
    return redirect(add_params_to_uri(error.redirect_uri, params))


def _required_acr(tenant_min: str | None) -> str | None:
    """The level the portal demands with acr_values (the lowest of the listed values we know)."""
    requested = [v for v in request.values.get("acr_values", "").split() if v in ACR_LEVELS]
    levels = [ACR_LEVELS[v] for v in requested]
    if tenant_min:
        levels.append(ACR_LEVELS[tenant_min])
    if not levels:
        return None
    level = min(levels) if requested else max(levels)
    return next(name for name, value in ACR_LEVELS.items() if value == level)


@blueprint.route("/authorize", methods=["GET", "POST"])
def authorize(tenant: str) -> Response:
    server = server_for(tenant)
    login, user = current_login(server.tenant)
    try:
        grant = server.get_consent_grant(end_user=user)
    except OAuth2Error as error:
        return _error_redirect(server, error)

    prompts = set(request.values.get("prompt", "").split())
    resumed = _resumed_flow(tenant)
    fresh = bool(resumed and login and login.auth_time >= _request_started_at(resumed))
    required = _required_acr(None)
    needs_login = login is None
    if login is not None and not fresh:
        if "login" in prompts:
            needs_login = True
        max_age = _max_age_seconds(request.values.get("max_age", ""))
        if max_age is not None and (utcnow() - login.auth_time).total_seconds() > max_age:
            needs_login = True
    if login is not None and required and ACR_LEVELS.get(login.acr, 0) < ACR_LEVELS[required]:
        if fresh:
            error = OAuth2Error(
                description=f"This login did not reach the assurance level {required}.",
                redirect_uri=request.values.get("redirect_uri"),
            )
            error.error = "unmet_authentication_requirements"
            return _error_redirect(server, error)
        needs_login = True

    if needs_login:
        if "none" in prompts:
            return _interaction_error(server, grant, "login_required")
        return _start_login(tenant, required, resumed)

    step = _interaction_step(server, user, resumed)
    if step is not None:
        endpoint, error_code = step
        if "none" in prompts:
            return _interaction_error(server, grant, error_code)
        return _start_step(tenant, required, endpoint, resumed)

    g.oidc_login = login
    response = server.create_authorization_response(grant=grant, grant_user=user)
    if response.location:
        response.location = add_params_to_uri(response.location, [("iss", server.issuer)])
    if resumed is not None:
        db().delete(resumed)
    db().commit()
    return response


def _max_age_seconds(value: str) -> int | None:
    """max_age in seconds, or None when it is absent or not a plain number: such a value is
    ignored, as before; an over-long one allows any age, the same as ignoring it."""
    if not (value.isascii() and value.isdigit()) or len(value) > MAX_AGE_DIGITS:
        return None
    return int(value)


def _interaction_error(server: TenantServer, grant: Any, error_code: str) -> Response:
    """prompt=none: the portal asked for no page, so it is told which one was needed (OIDC
    Core 3.1.2.6), at the redirect_uri that Authlib verified for this request."""
    error = OAuth2Error(redirect_uri=grant.redirect_uri)
    error.error = error_code
    return _error_redirect(server, error)


def _interaction_step(
    server: TenantServer, user: User, resumed: Flow | None
) -> tuple[str, str] | None:
    """The page the user must see before the portal gets its code, and the error that answers
    prompt=none instead of that page."""
    if _binding_step_due(user, resumed):
        return "customers.accounts", "interaction_required"
    # Privacy step (views/privacy.py): a new privacy-policy version is accepted before the code.
    if consent_due(server.tenant, user):
        return "privacy.consent", "consent_required"
    # end privacy step
    return None


def _request_started_at(flow: Flow) -> datetime:
    """When the portal's authorization request first reached us. A step (binding, consent)
    keeps it in its new flow, so the login made for this request still counts as fresh for
    prompt=login and max_age; a login from before the request never does."""
    started = flow.data.get("request_started_at")
    return datetime.fromisoformat(started) if started else flow.created_at


def _resumed_flow(tenant: str) -> Flow | None:
    """The authorize flow this request resumes after a login step: only in the browser that
    started it, for the same portal, once (it is deleted when the code is issued)."""
    flow_id = request.values.get("resume")
    if not flow_id or "\x00" in flow_id:  # ids are URL-safe; PostgreSQL text holds no NUL
        return None
    flow = db().get(Flow, flow_id)
    if flow is None or flow.tenant != tenant or flow.kind != "authorize":
        return None
    if flow.expires_at <= utcnow() or not flow_belongs_to_this_browser(flow):
        return None
    if flow.data.get("client_id") != request.values.get("client_id"):
        return None
    return flow


def _binding_step_due(user: Any, resumed: Flow | None) -> bool:
    """A portal asking for customer accounts, a user with none: offer binding first (seed 000
    step 6). The user may skip it; the flow remembers that."""
    if "customer_accounts" not in request.values.get("scope", "").split():
        return False
    if resumed is not None and resumed.data.get("binding_skipped"):
        return False
    return db().scalar(_ANY_BINDING, {"user_id": user.id}) is None


def _start_login(tenant: str, required_acr: str | None, resumed: Flow | None) -> Response:
    """Keep the authorization request server-side and send the browser to the login page."""
    return _start_step(tenant, required_acr, "login.login_page", resumed)


def _start_step(
    tenant: str, required_acr: str | None, endpoint: str, resumed: Flow | None
) -> Response:
    """Keep the authorization request server-side and send the browser to a step's page."""
    params = [(k, v) for k, v in request.values.items(multi=True) if k != "resume"]
    browser = request.cookies.get(browser_cookie_name(tenant)) or new_token(16)
    started_at = _request_started_at(resumed) if resumed is not None else utcnow()
    flow = Flow(
        id=new_token(24),
        tenant=tenant,
        kind="authorize",
        state="login",
        data={
            "params": params,
            "required_acr": required_acr,
            "login_hint": request.values.get("login_hint", ""),
            "ui_locales": request.values.get("ui_locales", ""),
            "client_id": request.values.get("client_id", ""),
            "browser": sha256_hex(browser),
            "request_started_at": started_at.isoformat(),
            # skipped once for this request, skipped for its later steps too (consent)
            "binding_skipped": bool(resumed and resumed.data.get("binding_skipped")),
        },
        expires_at=utcnow() + timedelta(minutes=AUTHORIZE_FLOW_MINUTES),
    )
    db().add(flow)
    db().commit()
    response = redirect(url_for(endpoint, tenant=tenant, flow=flow.id))
    response.set_cookie(browser_cookie_name(tenant), browser, path=f"/t/{tenant}",
                        httponly=True, samesite="Lax",
                        secure=current().config.public_url.startswith("https://"))
    return response


def resume_url(flow: Flow) -> str:
    """Where the login page sends the browser once the user is authenticated."""
    params = [(key, value) for key, value in flow.data.get("params", [])]
    params.append(("resume", flow.id))
    return url_for("oidc.authorize", tenant=flow.tenant) + "?" + urlencode(params)


def _token_response(server: TenantServer, make: Any) -> Response:
    session = db()
    response = make()
    if response.status_code == 200:
        session.commit()
    else:
        session.rollback()
        compensations = g.pop("oidc_after_rollback", [])
        if compensations:
            for action in compensations:
                action()
            session.commit()
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return response


@blueprint.post("/token")
@throttled("oidc", target=CLIENT)
def token(tenant: str) -> Response:
    server = server_for(tenant)
    return _token_response(server, server.create_token_response)


@blueprint.post("/revoke")
@throttled("oidc", target=CLIENT)
def revoke(tenant: str) -> Response:
    server = server_for(tenant)
    return _token_response(server, lambda: server.create_endpoint_response("revocation"))


@blueprint.post("/introspect")
@throttled("oidc", target=CLIENT)
def introspect(tenant: str) -> Response:
    server = server_for(tenant)
    return _token_response(server, lambda: server.create_endpoint_response("introspection"))


@blueprint.route("/userinfo", methods=["GET", "POST"])
def userinfo(tenant: str) -> Response:
    tenant_or_404(tenant)
    header = request.headers.get("Authorization", "")
    token_string = header[7:].strip() if header[:7].lower() == "bearer " else ""
    found = find_token(token_string, access_only=True) if token_string else None
    if found is None or not _access_token_usable(found, tenant):
        response = jsonify(
            error="invalid_token", error_description="The access token is not valid."
        )
        response.status_code = 401
        response.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
        return response
    row, user = found
    if "openid" not in row.scope.split():
        response = jsonify(error="insufficient_scope")
        response.status_code = 403
        response.headers["WWW-Authenticate"] = 'Bearer error="insufficient_scope", scope="openid"'
        return response
    return jsonify(user_claims(db(), user, row.scope))


def _access_token_usable(found: Any, tenant: str) -> bool:
    row, user = found
    return (
        row.tenant == tenant
        and row.revoked_at is None
        and row.access_expires_at > utcnow()
        and user.status == "active"
    )


@blueprint.route("/logout", methods=["GET", "POST"])
def logout(tenant: str) -> Response:
    """RP-initiated logout: end the session here, tell portals over the back channel."""
    from ..oidc import logout as logout_flow

    server = server_for(tenant)
    login, user = current_login(server.tenant)
    target = request.values.get("post_logout_redirect_uri")
    client_id = request.values.get("client_id")
    hint = request.values.get("id_token_hint")
    hint_claims = logout_flow.id_token_hint_claims(server, hint) if hint else None
    if hint_claims:
        client_id = logout_flow.audience_of(hint_claims) or client_id
    if target:
        client = server.query_client(client_id or "")
        if client is None or target not in client.config.post_logout_redirect_uris:
            return render_template(
                "oidc/error.html",
                tenant=server.tenant,
                error="invalid_request",
                description=_("The address to return to is not registered for this portal."),
            ), 400  # type: ignore[return-value]
    # Without confirmation only when the hint names this very login (sub and sid): anyone can
    # hold an old ID token of their own, and must not log a victim out with it.
    hint_is_this_login = bool(
        hint_claims and user is not None and login is not None
        and hint_claims.get("sub") == user.subject
        and hint_claims.get("sid") == session_id_claim(login.id)
    )
    if request.method == "GET" and login is not None and not hint_is_this_login:
        return render_template("oidc/logout_confirm.html", tenant=server.tenant,
                               values=request.values)  # type: ignore[return-value]
    if login is not None:
        logout_flow.end_login_session(server, login)
        db().commit()
    if target:
        state = request.values.get("state")
        response = redirect(add_params_to_uri(target, [("state", state)] if state else []))
    else:
        response = current_app.make_response(
            render_template("oidc/logged_out.html", tenant=server.tenant)
        )
    response.delete_cookie(login_session.cookie_name(tenant), path=f"/t/{tenant}")
    return response

