"""Liveness and readiness for load balancers and orchestrators."""

from __future__ import annotations

from flask import Blueprint, jsonify

from .. import db as database
from ..state import current

blueprint = Blueprint("health", __name__)


@blueprint.get("/healthz")
def healthz():  # type: ignore[no-untyped-def]
    """The process is up."""
    return jsonify(status="ok")


@blueprint.get("/readyz")
def readyz():  # type: ignore[no-untyped-def]
    """The process can serve: its database answers."""
    if database.database_reachable(current().engine):
        return jsonify(status="ok", database="ok")
    return jsonify(status="unavailable", database="unreachable"), 503
