"""The connection pool on PostgreSQL: a connection killed while idle in the pool is replaced
before a request uses it, without a round trip on every checkout."""

from __future__ import annotations

import psycopg
from sqlalchemy import text

from broker import db as database


def test_a_connection_killed_while_idle_is_replaced_unseen(postgres_url, monkeypatch):
    monkeypatch.setattr(database, "IDLE_PING_SECONDS", 0.0)
    engine = database.make_engine(postgres_url)
    try:
        with engine.connect() as connection:
            first_pid = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
        admin = database.make_engine(postgres_url)
        with admin.connect() as connection:  # as a server restart or a firewall would
            connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first_pid})
            connection.commit()
        admin.dispose()
        with engine.connect() as connection:
            pid = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
        assert pid != first_pid
    finally:
        engine.dispose()


def test_only_a_connection_idle_for_a_while_is_checked(postgres_url, monkeypatch):
    """Checkouts moments apart send no check; after the idle threshold each sends one."""
    pings: list[str] = []
    original = psycopg.Connection.execute

    def counting(self, query, *args, **kwargs):  # type: ignore[no-untyped-def]
        pings.append(str(query))
        return original(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.Connection, "execute", counting)
    engine = database.make_engine(postgres_url)
    try:
        for _ in range(3):
            with engine.connect() as connection:
                assert connection.execute(text("SELECT 42")).scalar_one() == 42
        assert pings == []
        monkeypatch.setattr(database, "IDLE_PING_SECONDS", 0.0)
        for _ in range(2):
            with engine.connect() as connection:
                assert connection.execute(text("SELECT 42")).scalar_one() == 42
        assert pings == ["SELECT 1", "SELECT 1"]
    finally:
        engine.dispose()
