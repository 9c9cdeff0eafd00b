"""Engine, sessions and migrations.

One engine per process, one session per request (``broker.db.session()`` inside a request).
SQLite gets WAL, foreign keys and a busy timeout so the embedded default behaves like a server.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def make_engine(url: str, **options: Any) -> Engine:
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # Let SQLAlchemy own transactions (pysqlite's implicit BEGIN is too late for locks).
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(connection: Any) -> None:
            # BEGIN IMMEDIATE: writers queue up instead of failing on lock upgrade.
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    if "poolclass" not in options:
        options.setdefault("pool_size", 10)
        options.setdefault("max_overflow", 20)
    engine = create_engine(url, **options)
    if not options.get("pool_pre_ping"):
        _ping_after_idle(engine)
    return engine


IDLE_PING_SECONDS = 10.0


def _ping_after_idle(engine: Engine) -> None:
    """Check a pooled connection before use only when it sat idle for a while.

    A connection that went back to the pool moments ago is alive; one that sat idle may have
    been closed by a server restart, a failover or a firewall, and is then replaced before a
    request uses it (SQLAlchemy's documented pessimistic check, raising DisconnectionError).
    ``pool_pre_ping`` would instead spend a round trip on every checkout: a fifth of a token
    grant's round trips.
    """

    @event.listens_for(engine, "checkin")
    def _returned(_dbapi_connection: Any, record: Any) -> None:
        record.info["returned_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _taken(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        returned_at = record.info.get("returned_at")
        if returned_at is None or time.monotonic() - returned_at < IDLE_PING_SECONDS:
            return  # new, or back in the pool moments ago
        try:
            dbapi_connection.execute("SELECT 1")
            dbapi_connection.rollback()
        except Exception as error:  # noqa: BLE001 - any failure means: use another
            raise DisconnectionError("pooled connection failed its idle check") from error


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    factory = sessionmaker(bind=engine, expire_on_commit=False, autoflush=False)
    event.listen(factory, "after_begin", _note_connection)
    return factory


_CONNECTED = "connected_transaction"
_STAND_ALONE = "stand_alone_transaction"


def _note_connection(db: Session, transaction: Any, _connection: Any) -> None:
    """Remember which transaction of ``db`` holds a connection: ``Session.in_transaction``
    also says yes when the ORM merely began one (``Session.add`` does), with no connection,
    and so no isolation level, chosen yet."""
    db.info[_CONNECTED] = transaction


def statements_stand_alone(db: Session) -> None:
    """Run ``db``'s statements up to its next commit each on its own (autocommit), on
    PostgreSQL. Only for code whose statements there each stand alone: reads, and writes that
    are whole in one statement (an attempt reservation, a login's combined session start).
    It saves ``BEGIN`` and ``COMMIT``, two of a password login's network round trips each.

    Does nothing when ``db`` already holds a connection or has pending changes (these must not be
    flushed one by one), or on SQLite (an embedded database has no round trips to save, and
    its writers rely on ``BEGIN IMMEDIATE``)."""
    transaction = db.get_transaction()
    if transaction is not None and db.info.get(_CONNECTED) is transaction:
        return  # a connection is in use: its transaction has begun
    if db.new or db.dirty or db.deleted:
        return
    if db.get_bind().dialect.name == "postgresql":
        db.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        db.info[_STAND_ALONE] = db.get_transaction()


def runs_stand_alone(db: Session) -> bool:
    """True while ``db``'s statements each commit on their own (``statements_stand_alone``):
    what they wrote is committed already, and the connection stays for the next one."""
    transaction = db.get_transaction()
    return transaction is not None and db.info.get(_STAND_ALONE) is transaction


def end_stand_alone(db: Session) -> None:
    """From here on, run ``db``'s statements in a transaction again: call it before work that
    must be written together. The connection that ran statements on their own goes back to the
    pool; their writes are committed already."""
    if runs_stand_alone(db):
        if db.new or db.dirty or db.deleted:
            raise RuntimeError("changes made while statements stood alone: end that first")
        db.commit()


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session whose work commits together or not at all."""
    with factory() as db, db.begin():
        yield db


def alembic_config(url: str) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def database_reachable(engine: Engine) -> bool:
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return True
    except Exception:
        return False
