"""Customer accounts pages: bind ("add address"), see who has access, invite a relative.

Also the first-time step of a portal login: a user with no customer account is offered the
binding form before the portal gets its code (seed 000: "now you need your customer number").
"""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, request, url_for
from flask_babel import lazy_gettext as _l
from sqlalchemy import select

from flows import binding as binding_flow
from flows import delegation

from ..models import Binding, CustomerAccount
from ..state import current, db
from ..throttle import CUSTOMER_NUMBER, EMAIL, throttled
from .login import authorize_flow
from .oidc import resume_url
from .tenancy import current_login, source_address, tenant_or_404

blueprint = Blueprint("customers", __name__, url_prefix="/t/<tenant>")
PROOF_LABELS = {
    "pin": _l("PIN code"),
    "bill_code": _l("Activation code from the bill (top right)"),
    "invoice": _l("A previous invoice number"),
}


def _require_login(tenant: str):  # type: ignore[no-untyped-def]
    tenant_config = tenant_or_404(tenant)
    login, user = current_login(tenant_config)
    return tenant_config, login, user


def _page(tenant_config, user, flow_id: str, status: int = 200, **context):  # type: ignore[no-untyped-def]
    accounts = binding_flow.customer_accounts_for(db(), user.id)
    owned = db().execute(
        select(CustomerAccount.id, CustomerAccount.number)
        .join(Binding, Binding.customer_account_id == CustomerAccount.id)
        .where(Binding.user_id == user.id, Binding.role == "owner")
    ).all()
    access = {number: delegation.who_has_access(db(), user, account_id)
              for account_id, number in owned}
    return render_template(
        "customers/accounts.html", tenant=tenant_config, accounts=accounts, access=access,
        owned=owned, proofs=[(p, PROOF_LABELS[p]) for p in tenant_config.binding.proofs],
        flow_id=flow_id, **context,
    ), status


@blueprint.get("/customer-accounts")
def accounts(tenant: str):  # type: ignore[no-untyped-def]
    tenant_config, login, user = _require_login(tenant)
    if login is None:
        return redirect(url_for("login.login_page", tenant=tenant))
    return _page(tenant_config, user, request.args.get("flow", ""))


@blueprint.post("/customer-accounts")
@throttled("binding", target=CUSTOMER_NUMBER)
def bind(tenant: str):  # type: ignore[no-untyped-def]
    tenant_config, login, user = _require_login(tenant)
    if login is None:
        return redirect(url_for("login.login_page", tenant=tenant))
    flow_id = request.form.get("flow", "")
    result = binding_flow.bind_with_proof(
        db(), tenant_config, current().config.hmac_key, user,
        request.form.get("customer_number", ""), request.form.get("proof_kind", ""),
        request.form.get("proof_value", ""), source_address(),
    )
    db().commit()  # a failed proof counts toward the customer number's limit
    if not result.ok:
        return _page(tenant_config, user, flow_id, 400, error=result.reason,
                     locked_until=result.locked_until,
                     customer_number=request.form.get("customer_number", ""))
    flow = authorize_flow(tenant, flow_id)
    if flow is not None:
        return redirect(resume_url(flow))
    return _page(tenant_config, user, flow_id, notice="bound")


@blueprint.post("/customer-accounts/skip")
def skip(tenant: str):  # type: ignore[no-untyped-def]
    """Continue to the portal without binding now (it can be done later)."""
    tenant_or_404(tenant)
    flow = authorize_flow(tenant, request.form.get("flow"))
    if flow is None:
        return redirect(url_for("customers.accounts", tenant=tenant))
    flow.data = {**flow.data, "binding_skipped": True}
    db().commit()
    return redirect(resume_url(flow))


@blueprint.post("/customer-accounts/<id:account_id>/invite")
@throttled("invitation", target=EMAIL)  # sends an email to the address typed, like registration
def invite(tenant: str, account_id: int):  # type: ignore[no-untyped-def]
    tenant_config, login, user = _require_login(tenant)
    if login is None:
        return redirect(url_for("login.login_page", tenant=tenant))
    result = delegation.invite(
        db(), tenant_config, current().config.public_url, user, account_id,
        request.form.get("email", ""), user.locale or tenant_config.default_locale,
        source_address(),
    )
    db().commit()
    if not result.ok:
        return _page(tenant_config, user, "", 400, error=f"invite_{result.reason}")
    return _page(tenant_config, user, "", notice="invited")


@blueprint.post("/customer-accounts/<id:account_id>/remove/<id:user_id>")
def remove(tenant: str, account_id: int, user_id: int):  # type: ignore[no-untyped-def]
    tenant_config, login, user = _require_login(tenant)
    if login is None:
        return redirect(url_for("login.login_page", tenant=tenant))
    result = delegation.remove_user(db(), tenant_config, user, account_id, user_id,
                                    source_address())
    db().commit()
    if not result.ok:
        return _page(tenant_config, user, "", 400, error=f"remove_{result.reason}")
    return _page(tenant_config, user, "", notice="removed")


@blueprint.route("/invitations/<token>", methods=["GET", "POST"])
def accept_invitation(tenant: str, token: str):  # type: ignore[no-untyped-def]
    tenant_config, login, user = _require_login(tenant)
    if login is None:
        return redirect(url_for("login.login_page", tenant=tenant))
    if request.method == "GET":
        return render_template("customers/invitation.html", tenant=tenant_config)
    result = delegation.accept(db(), tenant_config, token, user, source_address())
    db().commit()
    if not result.ok:
        return render_template("customers/invitation.html", tenant=tenant_config,
                               error=result.reason), 400
    return redirect(url_for("customers.accounts", tenant=tenant))
