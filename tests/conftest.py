"""Shared fixtures: a broker on SQLite and, when reachable, on PostgreSQL.

PostgreSQL tests run whenever 127.0.0.1:5432 answers (or BROKER_TEST_POSTGRES_URL points
elsewhere). With CI=true an unreachable PostgreSQL is a failure, never a skip.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from broker import db as database
from broker.app import create_app
from broker.config import BrokerConfig, parse_config
from broker.models import Base

POSTGRES_ADMIN_URL = os.environ.get(
    "BROKER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
IN_CI = os.environ.get("CI", "").lower() == "true"
PORTAL_SECRET = "portal-secret-0123456789abcdefghijklmnop"


def _postgres_available() -> str | None:
    try:
        engine = create_engine(POSTGRES_ADMIN_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        engine.dispose()
        return None
    except Exception as error:  # noqa: BLE001 - any failure means "not reachable"
        return f"{type(error).__name__}: {error}".splitlines()[0]


@pytest.fixture(scope="session")
def postgres_url(worker_id: str) -> Iterator[str]:
    """A database of our own on the PostgreSQL server, migrated once, dropped at the end."""
    problem = _postgres_available()
    if problem:
        if IN_CI:
            pytest.fail(f"CI=true but PostgreSQL is not reachable: {problem}")
        pytest.skip(f"PostgreSQL not reachable ({problem})")
    name = f"broker_test_{worker_id}_{secrets.token_hex(4)}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    database.upgrade(url)
    yield url
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SQLite file migrated to head once; each test gets a copy."""
    path = tmp_path_factory.mktemp("template") / "broker.db"
    database.upgrade(f"sqlite:///{path}")
    return path


def _empty_postgres(url: str) -> None:
    engine = create_engine(url)
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty, migrated database: each test that takes it runs on both backends."""
    if request.param == "sqlite":
        path = tmp_path / "broker.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    url = request.getfixturevalue("postgres_url")
    _empty_postgres(url)
    return url


@pytest.fixture
def sqlite_url(tmp_path: Path, sqlite_template: Path) -> str:
    """For tests whose subject is not the database: SQLite only, fast."""
    path = tmp_path / "broker.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


def make_config(
    database_url: str, *, page_language: str | None = "en", **overrides: Any
) -> BrokerConfig:
    """The demo tenants as a test configuration; ``overrides`` replace top-level keys.

    Pages speak ``page_language`` (every tenant's default_locale) so that tests can read them;
    pass ``page_language=None`` to keep the utilities' own defaults (da, nb, sv, es).
    """
    from broker.demo import demo_tenants

    tenants = demo_tenants(PORTAL_SECRET, "http://portal.test", "http://emulator.test")
    data: dict[str, Any] = {
        "public_url": "http://broker.test",
        "database_url": database_url,
        "secret_key": "test-secret-key-0123456789abcdefghijkl",
        "hmac_key": "test-hmac-key-0123456789abcdefghijklmn",
        "dev_mode": True,
        "emulator_url": "http://emulator.test",
        # Forms are tested without CSRF tokens; tests/test_web_security.py turns it on.
        "csrf_protection": False,
        "tenants": tenants,
    }
    data.update(overrides)
    if page_language is not None:
        for tenant in data["tenants"].values():
            if page_language in tenant.get("locales", [page_language]):
                tenant["default_locale"] = page_language
    return parse_config(data, "test config")


def cli_config_file(folder: Path, database_url: str, extra: str = "") -> Path:
    """A broker.toml for the CLI commands: the database, test keys and the tenant fjordvarme;
    ``extra`` is appended (more of fjordvarme's settings, say)."""
    path = folder / "broker.toml"
    path.write_text(
        f'database_url = "{database_url}"\n'
        'secret_key = "test-secret-key-0123456789abcdefghijkl"\n'
        'hmac_key = "test-hmac-key-0123456789abcdefghijklmn"\n'
        '[tenants.fjordvarme]\nname = "Fjordvarme AS"\ncountry = "NO"\n' + extra
    )
    return path


@pytest.fixture
def app(database_url: str):  # type: ignore[no-untyped-def]
    application = create_app(make_config(database_url))
    application.config["TESTING"] = True
    yield application
    application.extensions["broker"].engine.dispose()


@pytest.fixture
def client(app):  # type: ignore[no-untyped-def]
    return app.test_client()


@pytest.fixture(scope="session")
def worker_id(request: pytest.FixtureRequest) -> str:
    """xdist's worker id, or 'main' when run without xdist."""
    workerinput = getattr(request.config, "workerinput", None)
    return workerinput["workerid"] if workerinput else "main"
