"""Runs the demo: broker, demo portal, upstream emulator and dev outbox, each on its own port."""

from __future__ import annotations

import threading
from pathlib import Path

from werkzeug.serving import make_server

from . import demo as demo_settings
from .app import create_app


def _serve(app, host: str, port: int) -> threading.Thread:  # type: ignore[no-untyped-def]
    server = make_server(host, port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name=f"http-{port}", daemon=True)
    thread.start()
    return thread


def run_demo(data_dir: Path, host: str = "127.0.0.1") -> None:
    config = demo_settings.demo_config(data_dir, host)
    broker = create_app(config, migrate=True)
    demo_settings.load_demo_customers(config)
    links = broker.extensions["broker"].services.setdefault("demo_links", {})
    broker.extensions["broker"].services["demo_customers"] = demo_settings.DEMO_CUSTOMERS
    threads = [_serve(broker, host, demo_settings.BROKER_PORT)]
    for extra in _extra_servers(config, host):
        name, app, port, link = extra
        threads.append(_serve(app, host, port))
        links[name] = link
        if name == "portal":
            links.update({slug: f"{link}/{slug}/" for slug in config.tenants})
    print(f"Broker demo on {config.public_url}/  (Ctrl-C stops it)", flush=True)
    try:
        for thread in threads:
            thread.join()
    except KeyboardInterrupt:
        print("stopped")


def _extra_servers(config, host):  # type: ignore[no-untyped-def]
    """Demo companions that exist so far (portal, emulator, outbox)."""
    servers = []

    # Dev outbox: catches the demo's email (SMTP) and SMS (webhook) and shows them on a page.
    from .devoutbox import outbox_server

    servers.append(outbox_server(config, host))

    # Upstream emulator: MitID, FTN, Microsoft, Google and Facebook logins for the demo.
    if config.dev_mode and config.emulator_url:
        from emulator.demo import emulator_server

        servers.append(emulator_server(config))

    # Demo portal: a real OIDC client of each demo tenant, showing the claims it receives.
    from . import demo as demo_settings
    from .demo_portal import create_portal

    portal_url = f"http://{host}:{demo_settings.PORTAL_PORT}"
    portal = create_portal(config, portal_url, config.secret_key + ":portal")
    servers.append(("portal", portal, demo_settings.PORTAL_PORT, portal_url))
    return servers
