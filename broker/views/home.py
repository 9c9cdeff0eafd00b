"""The landing page: the tenants this broker serves and their demo portals."""

from __future__ import annotations

from flask import Blueprint, render_template

from ..state import current

blueprint = Blueprint("home", __name__)


@blueprint.get("/")
def index():  # type: ignore[no-untyped-def]
    state = current()
    return render_template(
        "home.html",
        tenants=list(state.config.tenants.values()),
        demo=state.services.get("demo_links", {}),
        customers=state.services.get("demo_customers", {}),
    )
