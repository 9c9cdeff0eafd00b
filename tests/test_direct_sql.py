"""``DirectStatement``: the same rows, values and transactions as SQLAlchemy's own execution,
on PostgreSQL through the driver and on SQLite through SQLAlchemy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import bindparam, event, insert, select, update
from sqlalchemy.exc import StatementError

from broker import db as database
from broker.direct_sql import DirectStatement
from broker.models import AuditEvent
from broker.oidc.token_store import TOKEN_COLUMNS, insert_token

AUDIT = AuditEvent.__table__
RECORD = DirectStatement(
    insert(AUDIT)
    .values(tenant=bindparam("in_tenant"), at=bindparam("when"), event="probe",
            actor_type="system", outcome="ok", details=bindparam("facts"))
    .returning(AUDIT.c.id, AUDIT.c.at, AUDIT.c.details, AUDIT.c.tenant)
)
READ = DirectStatement(
    select(AUDIT.c.at, AUDIT.c.details).where(AUDIT.c.id == bindparam("wanted"))
)
HELSINKI_WINTER = timezone(timedelta(hours=2))


@pytest.fixture
def engine(database_url):  # type: ignore[no-untyped-def]
    engine = database.make_engine(database_url)
    yield engine
    engine.dispose()


def _record(connection, when, facts):  # type: ignore[no-untyped-def]
    return RECORD.first(connection, {"in_tenant": "fjordvarme", "when": when, "facts": facts})


def test_values_go_in_and_come_back_as_sqlalchemy_would_give_them(engine):
    when = datetime(2026, 12, 6, 9, 30, tzinfo=HELSINKI_WINTER)
    with engine.begin() as connection:
        row_id, at, details, tenant = _record(connection, when, {"steps": [1, 2], "ok": True})
        assert isinstance(row_id, int) and tenant == "fjordvarme"
        assert at == when and at.tzinfo == UTC  # stored and read back in UTC
        assert details == {"steps": [1, 2], "ok": True}  # JSON both ways
        assert READ.first(connection, {"wanted": row_id}) == (at, details)
        assert READ.first(connection, {"wanted": row_id + 1000}) is None
        # and SQLAlchemy's own execution reads the same
        assert tuple(connection.execute(READ.statement, {"wanted": row_id}).one()) == (
            at, details)


def test_a_naive_datetime_is_refused_as_by_sqlalchemy(engine):
    with engine.begin() as connection, pytest.raises((ValueError, StatementError),
                                                     match="naive datetime"):
        _record(connection, datetime(2026, 12, 6, 9, 30), {})


def test_python_side_column_defaults_are_left_to_sqlalchemy(engine):
    """``at``, ``outcome`` and ``details`` have Python-side defaults: SQLAlchemy computes them
    at execution, so such a statement runs through SQLAlchemy, and they are filled in."""
    sparse = DirectStatement(
        insert(AUDIT).values(tenant="fjordvarme", event="probe", actor_type="system")
        .returning(AUDIT.c.at, AUDIT.c.outcome, AUDIT.c.details))
    with engine.begin() as connection:
        at, outcome, details = sparse.first(connection, {})
    assert at.tzinfo == UTC and (outcome, details) == ("ok", {})


def test_it_runs_in_the_connections_transaction(engine):
    with engine.connect() as connection:
        row_id = _record(connection, datetime.now(UTC), {})[0]
        connection.rollback()
        assert READ.first(connection, {"wanted": row_id}) is None
        connection.commit()
    if engine.dialect.name != "postgresql":
        return  # this project's SQLite writers always BEGIN IMMEDIATE (broker/db.py)
    with engine.connect() as connection:
        autocommit = connection.execution_options(isolation_level="AUTOCOMMIT")
        row_id = _record(autocommit, datetime.now(UTC), {})[0]
        autocommit.rollback()  # nothing to undo: the statement committed by itself
    with engine.connect() as connection:
        assert READ.first(connection, {"wanted": row_id}) is not None


def test_statement_listeners_see_it_run_through_sqlalchemy(engine):
    seen: list[str] = []

    def count(_conn, _cursor, statement, *_args):  # type: ignore[no-untyped-def]
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        with engine.begin() as connection:
            row_id = _record(connection, datetime.now(UTC), {"listened": True})[0]
            assert READ.first(connection, {"wanted": row_id})[1] == {"listened": True}
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert [statement.split()[0] for statement in seen if statement != "BEGIN IMMEDIATE"] == [
        "INSERT", "SELECT"]


def test_all_rows_and_statements_without_rows(engine):
    stamp = DirectStatement(
        update(AUDIT).where(AUDIT.c.tenant == bindparam("in_tenant")).values(reason="seen"))
    every = DirectStatement(
        select(AUDIT.c.reason, AUDIT.c.at).where(AUDIT.c.tenant == bindparam("in_tenant"))
        .order_by(AUDIT.c.id))
    with engine.begin() as connection:
        for _ in range(3):
            _record(connection, datetime.now(UTC), {})
        assert stamp.execute(connection, {"in_tenant": "fjordvarme"}) is None
        rows = every.all(connection, {"in_tenant": "fjordvarme"})
        assert [reason for reason, _ in rows] == ["seen"] * 3
        assert all(at.tzinfo == UTC for _, at in rows)
        assert every.all(connection, {"in_tenant": "nowhere"}) == []


def test_a_token_row_must_have_exactly_its_columns():
    with pytest.raises(ValueError, match="token columns differ: \\['surprise'\\]"):
        insert_token(None, {**dict.fromkeys(TOKEN_COLUMNS), "surprise": 1})  # type: ignore[arg-type]
