"""The demo portal: a real OIDC relying party of the broker, one per demo tenant.

It stands in for a utility's self-service portal: "Log in" runs the authorization code flow
with PKCE against the tenant's issuer, and the page shows the decoded ID token and userinfo,
including the customer accounts the user may act for.
"""

from __future__ import annotations

import json
from typing import Any

from authlib.integrations.flask_client import OAuth
from flask import Flask, abort, redirect, render_template, request, session, url_for

from .config import BrokerConfig

SCOPE = "openid profile email phone customer_accounts offline_access"


def create_portal(config: BrokerConfig, portal_url: str, secret_key: str) -> Flask:
    app = Flask("demo_portal", template_folder=_templates())
    app.config.update(SECRET_KEY=secret_key, SESSION_COOKIE_NAME="demo_portal_session")
    oauth = OAuth(app)
    for slug, tenant in config.tenants.items():
        client = tenant.client("demo-portal")
        if client is None:
            continue
        oauth.register(
            name=slug,
            client_id=client.client_id,
            client_secret=client.client_secret,
            server_metadata_url=f"{config.public_url}/t/{slug}/.well-known/openid-configuration",
            client_kwargs={"scope": SCOPE, "code_challenge_method": "S256"},
        )

    def remote(slug: str) -> Any:
        client = oauth.create_client(slug)
        if client is None:
            abort(404)
        return client

    @app.get("/")
    def index():  # type: ignore[no-untyped-def]
        return render_template("portal/index.html", tenants=config.tenants)

    @app.get("/<tenant>/")
    def home(tenant: str):  # type: ignore[no-untyped-def]
        remote(tenant)
        signed_in = session.get(tenant)
        return render_template(
            "portal/home.html",
            tenant=config.tenants[tenant],
            signed_in=signed_in,
            claims=json.dumps(signed_in["claims"], indent=2, ensure_ascii=False)
            if signed_in else "",
            userinfo=json.dumps(signed_in["userinfo"], indent=2, ensure_ascii=False)
            if signed_in else "",
        )

    @app.get("/<tenant>/login")
    def login(tenant: str):  # type: ignore[no-untyped-def]
        extra = {}
        if request.args.get("acr"):
            extra["acr_values"] = request.args["acr"]
        return remote(tenant).authorize_redirect(
            url_for("callback", tenant=tenant, _external=True), **extra
        )

    @app.get("/<tenant>/callback")
    def callback(tenant: str):  # type: ignore[no-untyped-def]
        client = remote(tenant)
        if "error" in request.args:
            return render_template("portal/error.html", tenant=config.tenants[tenant],
                                   error=request.args.get("error"),
                                   description=request.args.get("error_description", "")), 400
        token = client.authorize_access_token()
        userinfo = client.userinfo(token=token)
        session[tenant] = {
            "claims": dict(token["userinfo"]),
            "userinfo": dict(userinfo),
            "id_token": token["id_token"],
        }
        return redirect(url_for("home", tenant=tenant))

    @app.post("/<tenant>/logout")
    def logout(tenant: str):  # type: ignore[no-untyped-def]
        signed_in = session.pop(tenant, None)
        end_session = f"{config.public_url}/t/{tenant}/logout"
        if not signed_in:
            return redirect(url_for("home", tenant=tenant))
        target = url_for("home", tenant=tenant, _external=True)
        return redirect(
            f"{end_session}?id_token_hint={signed_in['id_token']}"
            f"&post_logout_redirect_uri={target}"
        )

    @app.post("/<tenant>/backchannel-logout")
    def backchannel_logout(tenant: str):  # type: ignore[no-untyped-def]
        # A real portal verifies the logout token and ends the matching local session; the
        # demo keeps sessions in signed cookies it cannot reach from here, so it only accepts.
        return "", 200

    return app


def _templates() -> str:
    from .app import TEMPLATES_DIR

    return str(TEMPLATES_DIR)
