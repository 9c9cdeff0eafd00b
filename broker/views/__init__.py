"""HTTP views: one blueprint per area. Views parse input, call a flow, render."""

from __future__ import annotations

from flask import Flask
from werkzeug.routing import IntegerConverter

from ..models import ROW_ID_MAX


class RowIdConverter(IntegerConverter):
    """``<id:user_id>``: a positive number a primary key can hold. A larger one matches no
    route (404) instead of reaching PostgreSQL, which would refuse it as out of range."""

    def __init__(self, map, *args, **kwargs):  # type: ignore[no-untyped-def]
        super().__init__(map, min=1, max=ROW_ID_MAX)


def register(app: Flask) -> None:
    app.url_map.converters["id"] = RowIdConverter
    from . import health, home, login, oidc

    app.register_blueprint(health.blueprint)
    app.register_blueprint(home.blueprint)
    app.register_blueprint(oidc.blueprint)
    app.register_blueprint(login.blueprint)
    from .unlock import blueprint as unlock_blueprint

    app.register_blueprint(unlock_blueprint)
    from .customers import blueprint as customers_blueprint

    app.register_blueprint(customers_blueprint)
    from .forgot_pin import blueprint as forgot_pin_blueprint

    app.register_blueprint(forgot_pin_blueprint)
    from .account import blueprint as account_blueprint

    app.register_blueprint(account_blueprint)
    from .upstream import blueprint as upstream_blueprint

    app.register_blueprint(upstream_blueprint)
    from .privacy import blueprint as privacy_blueprint  # privacy: export, delete, consent

    app.register_blueprint(privacy_blueprint)
    from .console import register_staff_views

    register_staff_views(app)
