"""The user's privacy pages: download my data, delete my account, accept a new privacy policy.

Deleting asks for fresh proof that the person at the keyboard owns the account
(``broker.views.reauth``). The consent page is a step of a portal
login (``broker.views.oidc``): the portal gets its code only after the new version is accepted.
"""

from __future__ import annotations

import json

from flask import Blueprint, Response, abort, redirect, render_template, request, url_for

from flows import privacy

from .. import audit, login_session
from ..config import TenantConfig
from ..models import LoginSession, User
from ..oidc.logout import notify_portals
from ..state import current, db
from .login import authorize_flow
from .oidc import resume_url
from .reauth import FRESH_LOGIN_MINUTES, fresh, reauthenticate
from .tenancy import current_login, source_address, tenant_or_404

blueprint = Blueprint("privacy", __name__, url_prefix="/t/<tenant>")


def _page(template: str, tenant: TenantConfig, status: int = 200, **context: object):
    return render_template(f"account/{template}", tenant=tenant, **context), status


def _logged_in(slug: str) -> tuple[TenantConfig, LoginSession | None, User | None]:
    tenant = tenant_or_404(slug)
    login, user = current_login(tenant)
    return tenant, login, user


@blueprint.get("/profile/data")
def download(tenant: str):  # type: ignore[no-untyped-def]
    tenant_config, login, user = _logged_in(tenant)
    if user is None:
        return redirect(url_for("login.login_page", tenant=tenant))
    session = db()
    data = privacy.export_account(session, tenant_config, user)
    audit.record(session, "data_exported", tenant=tenant, actor_type="user", actor_id=user.id,
                 target_user_id=user.id, source_address=source_address())
    session.commit()
    response = Response(json.dumps(data, ensure_ascii=False, indent=2),
                        mimetype="application/json")
    response.headers["Content-Disposition"] = f'attachment; filename="my-data-{tenant}.json"'
    response.headers["Cache-Control"] = "no-store"
    return response


def _delete_page(tenant: TenantConfig, login: LoginSession, user: User, status: int = 200,
                 error: str | None = None):  # type: ignore[no-untyped-def]
    return _page(
        "privacy_delete.html", tenant, status, user=user, error=error,
        has_password=user.password_hash is not None, fresh=fresh(login),
        fresh_minutes=FRESH_LOGIN_MINUTES,
        last_owner=privacy.last_owner_accounts(db(), user),
        relogin_url=url_for("login.login_page", tenant=tenant.slug),
    )


@blueprint.get("/profile/delete")
def delete_page(tenant: str):  # type: ignore[no-untyped-def]
    tenant_config, login, user = _logged_in(tenant)
    if user is None or login is None:
        return redirect(url_for("login.login_page", tenant=tenant))
    return _delete_page(tenant_config, login, user)


@blueprint.post("/profile/delete")
def delete_submit(tenant: str):  # type: ignore[no-untyped-def]
    tenant_config, login, user = _logged_in(tenant)
    if user is None or login is None:
        return redirect(url_for("login.login_page", tenant=tenant))
    if request.form.get("confirm") != "yes":
        return _delete_page(tenant_config, login, user, 400, error="confirm")
    problem = reauthenticate(tenant_config, login, user, request.form.get("password", ""),
                             refused_event="account_deletion_refused")
    if problem is not None:
        status = 429 if problem == "locked" else 401
        return _delete_page(tenant_config, login, user, status, error=problem)
    session = db()
    erasure = privacy.erase_account(
        session, tenant_config, user, hmac_key=current().config.hmac_key, actor_type="user",
        actor_id=user.id, source_address=source_address(),
    )
    session.commit()
    tell_portals(tenant_config, erasure)
    response = Response(*_page("privacy_deleted.html", tenant_config))
    response.delete_cookie(login_session.cookie_name(tenant), path=f"/t/{tenant}")
    return response


def tell_portals(tenant: TenantConfig, erasure: privacy.Erasure) -> None:
    """Back-channel logout to every portal that held tokens for the erased account. Call after
    the erasure is committed (also from the support console)."""
    if not erasure.portals:
        return
    server = current().services["oidc_servers"][tenant.slug]
    server.keys.ring(tenant.slug)
    notify_portals(server, erasure.subject, None, set(erasure.portals))


# --- Consent to a new privacy policy, as a step of a portal login ------------------------------


@blueprint.route("/privacy/consent", methods=["GET", "POST"])
def consent(tenant: str):  # type: ignore[no-untyped-def]
    tenant_config, login, user = _logged_in(tenant)
    flow = authorize_flow(tenant, request.values.get("flow"))
    if user is None or login is None:
        return redirect(url_for("login.login_page", tenant=tenant,
                                **({"flow": flow.id} if flow else {})))
    context = {"flow_id": flow.id if flow else "", "version": tenant_config.privacy_policy_version}
    if request.method == "GET":
        return _page("privacy_consent.html", tenant_config, **context)
    action = request.form.get("action")
    if action == "decline":
        return _page("privacy_consent.html", tenant_config, declined=True, **context)
    if action != "accept":
        abort(400)
    session = db()
    privacy.accept_privacy_policy(session, tenant_config, user, source_address=source_address())
    session.commit()
    if flow is not None:
        return redirect(resume_url(flow))
    return redirect(url_for("account.profile_page", tenant=tenant))
