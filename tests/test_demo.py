"""The demo's own data: five utilities, a portal client each, customer records to bind."""

from __future__ import annotations

from sqlalchemy import func, select

from broker.app import create_app
from broker.demo import DEMO_CUSTOMERS, demo_config, load_demo_customers
from broker.models import CustomerAccount


def test_the_demo_config_has_five_utilities_each_with_a_portal(tmp_path):
    config = demo_config(tmp_path)
    assert set(config.tenants) == {"aaro-vand", "fjordvarme", "stadsenergi", "aguas-del-valle",
                                   "norrnat"}
    for tenant in config.tenants.values():
        assert tenant.client("demo-portal") is not None
    assert demo_config(tmp_path).secret_key == config.secret_key  # secrets kept across restarts


def test_demo_customers_load_once_and_a_restart_changes_nothing(tmp_path):
    config = demo_config(tmp_path)
    app = create_app(config, migrate=True)
    load_demo_customers(config)
    load_demo_customers(config)
    state = app.extensions["broker"]
    with state.sessions() as db:
        count = db.scalar(select(func.count()).select_from(CustomerAccount))
        pins = db.scalars(select(CustomerAccount.pin_hmac).where(
            CustomerAccount.number == "700101")).all()
    assert count == sum(len(rows) for rows in DEMO_CUSTOMERS.values())
    assert pins and pins[0] and pins[0] != "4711"  # stored as a keyed HMAC, never plain
    state.engine.dispose()
