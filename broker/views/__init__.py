"""HTTP views: one blueprint per area. Views parse input, call a flow, render."""

from __future__ import annotations

from flask import Flask


def register(app: Flask) -> None:
    from . import health, home

    app.register_blueprint(health.blueprint)
    app.register_blueprint(home.blueprint)
