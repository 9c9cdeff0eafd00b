"""The self-service unlock link from the lock email: GET confirms, POST unlocks.

GET never spends the link, because mail scanners and link previews fetch URLs on their own.
"""

from __future__ import annotations

from flask import Blueprint, abort, render_template, request

from flows.unlock import consume_unlock_link, forgot_password_path, unlock_link_is_valid

from ..state import current, db

blueprint = Blueprint("unlock", __name__)


def _tenant(slug: str):  # type: ignore[no-untyped-def]
    tenant = current().tenant(slug)
    if tenant is None:
        abort(404)
    return tenant


@blueprint.get("/t/<tenant_slug>/unlock/<token>")
def confirm(tenant_slug: str, token: str):  # type: ignore[no-untyped-def]
    tenant = _tenant(tenant_slug)
    if not unlock_link_is_valid(db(), tenant, token):
        return render_template("unlock/invalid.html", tenant=tenant), 410
    return render_template(
        "unlock/confirm.html",
        tenant=tenant,
        password_reset_required=tenant.lockout.unlock_requires_password_reset,
    )


@blueprint.post("/t/<tenant_slug>/unlock/<token>")
def unlock(tenant_slug: str, token: str):  # type: ignore[no-untyped-def]
    tenant = _tenant(tenant_slug)
    result = consume_unlock_link(db(), tenant, token, source_address=request.remote_addr)
    if not result.unlocked:
        return render_template("unlock/invalid.html", tenant=tenant), 410
    return render_template(
        "unlock/done.html",
        tenant=tenant,
        password_reset_required=result.password_reset_required,
        forgot_password_url=forgot_password_path(tenant.slug),
    )
