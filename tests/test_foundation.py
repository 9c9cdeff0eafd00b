"""The skeleton: config validation, health endpoints, migrations, packaging."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from click.testing import CliRunner
from sqlalchemy import create_engine, inspect

from broker import db as database
from broker.cli import main as cli
from broker.config import ConfigError, RegistryConfig, load_config, parse_config
from broker.models import Base

from .conftest import make_config

ROOT = Path(__file__).resolve().parent.parent


def test_healthz_answers_and_readyz_checks_the_database(client):
    assert client.get("/healthz").json == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json["database"] == "ok"


def test_readyz_is_503_when_the_database_is_unreachable(tmp_path):
    from broker.app import create_app

    app = create_app(make_config(f"sqlite:///{tmp_path}/missing-dir/nope.db"))
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.json["database"] == "unreachable"


def test_every_response_carries_a_request_id(client):
    response = client.get("/healthz", headers={"X-Request-Id": "abc123"})
    assert response.headers["X-Request-Id"] == "abc123"
    assert len(client.get("/healthz").headers["X-Request-Id"]) == 16


def test_landing_page_lists_the_five_demo_tenants(client):
    page = client.get("/").get_data(as_text=True)
    for name in ("Aarø Vand", "Fjordvarme", "Stadsenergi", "Aguas del Valle", "Norrnät"):
        assert name in page


def test_migrations_reach_head_and_match_the_models(database_url):
    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": False})
        assert compare_metadata(context, Base.metadata) == []
        tables = set(inspect(connection).get_table_names())
    assert set(Base.metadata.tables) <= tables
    engine.dispose()


def test_upgrade_from_an_empty_sqlite_file(tmp_path):
    url = f"sqlite:///{tmp_path}/fresh.db"
    database.upgrade(url)
    engine = create_engine(url)
    assert "users" in inspect(engine).get_table_names()
    engine.dispose()


def test_a_typo_in_a_password_policy_names_the_key(sqlite_url):
    config = make_config(sqlite_url).model_dump()
    config["tenants"]["aaro-vand"]["password_policy"] = {"min_lenght": 8}
    with pytest.raises(ConfigError) as error:
        parse_config(config, "broker.toml")
    message = str(error.value)
    assert "tenants.aaro-vand.password_policy.min_lenght" in message
    assert "unknown key" in message


def test_a_short_client_secret_is_refused(sqlite_url):
    config = make_config(sqlite_url).model_dump()
    config["tenants"]["aaro-vand"]["clients"][0]["client_secret"] = "short"
    with pytest.raises(ConfigError, match="shorter than 32"):
        parse_config(config)


def test_a_login_method_without_its_upstream_is_refused(sqlite_url):
    config = make_config(sqlite_url).model_dump()
    config["tenants"]["fjordvarme"]["login_methods"] = ["password", "google"]
    with pytest.raises(ConfigError, match="tenants.fjordvarme"):
        parse_config(config)


def test_the_emulator_is_refused_outside_dev_mode(sqlite_url):
    with pytest.raises(ConfigError, match="emulator_url is for development only"):
        make_config(sqlite_url, dev_mode=False)


def test_config_example_is_valid_and_check_config_says_so():
    load_config(ROOT / "config.example.toml")
    example = str(ROOT / "config.example.toml")
    result = CliRunner().invoke(cli, ["check-config", "--config", example])
    assert result.exit_code == 0, result.output
    assert "ok" in result.output


def test_check_config_reports_errors_without_a_traceback(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('secret_key = "x"\n')
    result = CliRunner().invoke(cli, ["check-config", "--config", str(bad)])
    assert result.exit_code == 2
    assert "secret_key" in result.output
    assert "Traceback" not in result.output


def test_the_wheel_ships_templates_and_migrations(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(ROOT)],
        check=True,
    )
    wheel = next(tmp_path.glob("*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "templates/base.html" in names
    assert "migrations/env.py" in names
    assert any(n.startswith("migrations/versions/0001") for n in names)
    assert "policies/password.py" in names


def test_keys_rotate_makes_a_new_signing_key_and_keeps_the_old_published(tmp_path):
    from broker.app import create_app

    url = f"sqlite:///{tmp_path}/keys.db"
    database.upgrade(url)
    config = make_config(url)
    app = create_app(config)
    first = app.test_client().get("/t/fjordvarme/jwks").json["keys"]
    config_file = tmp_path / "broker.toml"
    config_file.write_text(
        f'database_url = "{url}"\nsecret_key = "{config.secret_key}"\n'
        f'hmac_key = "{config.hmac_key}"\n'
        '[tenants.fjordvarme]\nname = "Fjordvarme"\ncountry = "NO"\n'
    )
    result = CliRunner().invoke(cli, ["keys", "rotate", "--config", str(config_file),
                                      "--tenant", "fjordvarme", "--alg", "ES256"])
    assert result.exit_code == 0, result.output
    assert "published now, signs from" in result.output  # portals' cached JWKS learn it first
    app.extensions["broker"].services["keys"].forget()
    after = app.test_client().get("/t/fjordvarme/jwks").json["keys"]
    assert {k["kid"] for k in first} < {k["kid"] for k in after}
    assert after[0]["alg"] == "ES256"
    refused = CliRunner().invoke(cli, ["keys", "rotate", "--config", str(config_file),
                                       "--tenant", "nope"])
    assert refused.exit_code == 2 and "unknown tenant" in refused.output


@pytest.mark.parametrize(("url", "accepted"), [
    ("https://customers.example-utility.eu/api", True),
    ("http://127.0.0.1:8123/api", True),  # a test's customer system on this machine
    ("http://customers.example-utility.eu/api", False),
    ("http://10.0.0.5/api", False),
])
def test_the_customer_register_is_asked_over_tls_only(url, accepted):
    """PINs, bill codes, national ids and the token go to it: never in clear text."""
    if accepted:
        assert RegistryConfig(kind="http", url=url).url == url
    else:
        with pytest.raises(ValueError, match="registry.url must be https://"):
            RegistryConfig(kind="http", url=url)
