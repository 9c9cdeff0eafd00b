"""Hot-path statements run on the database driver, compiled once.

A password login runs two statements, a token grant two or three, thousands of times a
minute. On PostgreSQL, SQLAlchemy's execution around each one (execution context, parameter
construction, result metadata built from ``cursor.description``, result objects) costs about
twice what psycopg spends on the statement itself: 0.3 ms of a login's 3.9 ms without argon2
(BENCHMARKS.md, 2026-12-06).

``DirectStatement`` keeps the statement a SQLAlchemy Core expression, compiled by SQLAlchemy
once per dialect, with the same parameter and result processing as SQLAlchemy's (each type's
``bind_processor`` and ``result_processor``, e.g. ``UTCDateTime`` and JSON), and on PostgreSQL
runs the compiled SQL on the psycopg connection under the SQLAlchemy connection, in whatever
transaction (or autocommit) that connection is in. Left out, so it falls back to SQLAlchemy's
own execution:

- when anything listens for ``before_cursor_execute`` on the engine, or it logs SQL (echo, the
  ``sqlalchemy.engine`` logger at INFO): statement counters (tests,
  ``bench/statements_per_request.py``) and logs then see every statement;
- on other dialects (SQLite), and for statements SQLAlchemy finishes at execution time
  (``literal_execute``, expanding ``IN``, Python-side column defaults and ``onupdate``).

Errors are psycopg's own (a naive datetime: the ``ValueError`` of ``UTCDateTime``), not wrapped
in ``sqlalchemy.exc``: callers of these statements catch no database errors (a failed login
statement is a server error either way), and a connection lost under one is invalidated at the
rollback that follows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.compiler import Compiled

Processor = Callable[[Any], Any]


@dataclass(frozen=True)
class _Prepared:
    """A statement compiled for one dialect, with the processors its values go through."""

    sql: str
    compiled: Compiled
    parameters: tuple[tuple[str, Processor], ...]  # bind name, processor (those that have one)
    results: tuple[tuple[int, Processor], ...]  # column index, processor


class DirectStatement:
    """A Core statement that ``first``, ``all`` or ``execute`` runs on the driver."""

    def __init__(self, statement: Any) -> None:
        self.statement = statement
        self._prepared: dict[str, _Prepared | None] = {}

    def first(self, connection: Connection,
              parameters: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """The statement's first row (a tuple), or None."""
        rows = self._rows(connection, parameters, first=True)
        return rows[0] if rows else None

    def all(self, connection: Connection, parameters: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Every row the statement returns, as tuples."""
        return self._rows(connection, parameters, first=False)

    def execute(self, connection: Connection, parameters: Mapping[str, Any]) -> None:
        """Run a statement that returns no rows (DML without RETURNING)."""
        prepared = self._prepare(connection)
        if prepared is None:
            connection.execute(self.statement, parameters)
        else:
            self._send(connection, prepared, parameters)

    def _rows(self, connection: Connection, parameters: Mapping[str, Any], *,
              first: bool) -> list[tuple[Any, ...]]:
        prepared = self._prepare(connection)
        if prepared is None:
            result = connection.execute(self.statement, parameters)
            found: list[Any] = [result.first()] if first else result.all()
            return [tuple(row) for row in found if row is not None]
        cursor = self._send(connection, prepared, parameters)
        found = [cursor.fetchone()] if first else cursor.fetchall()
        rows = [row for row in found if row is not None]
        if not prepared.results:
            return rows
        processed = []
        for row in rows:
            values = list(row)
            for index, process in prepared.results:
                values[index] = process(values[index])
            processed.append(tuple(values))
        return processed

    def _prepare(self, connection: Connection) -> _Prepared | None:
        """The compiled form to send, or None when SQLAlchemy should execute it instead."""
        if connection.dispatch.before_cursor_execute or connection.engine.logger.isEnabledFor(
                logging.INFO):
            return None  # someone watches statements (listeners, echo, the engine's log)
        dialect = connection.dialect
        if dialect.name not in self._prepared:
            self._prepared[dialect.name] = (
                _compile(self.statement, dialect) if dialect.name == "postgresql" else None
            )
        return self._prepared[dialect.name]

    @staticmethod
    def _send(connection: Connection, prepared: _Prepared, parameters: Mapping[str, Any]) -> Any:
        if not connection.in_transaction():
            connection.begin()  # as SQLAlchemy's execution would: its commit or rollback ends it
        values = prepared.compiled.construct_params(parameters)
        for name, process in prepared.parameters:
            values[name] = process(values[name])
        driver = connection.connection.driver_connection
        assert driver is not None  # noqa: S101 - a checked-out connection has its driver's
        return driver.execute(prepared.sql, values)


def _compile(statement: Any, dialect: Dialect) -> _Prepared | None:
    compiled = statement.compile(dialect=dialect)
    if (compiled.literal_execute_params or compiled.post_compile_params
            or compiled.insert_prefetch or compiled.update_prefetch):
        return None  # finished at execution time (Python-side defaults too): SQLAlchemy's job
    parameters: dict[str, Processor] = {}  # by name, as SQLAlchemy keeps them: a name used
    for bind, name in compiled.bind_names.items():  # twice is one value, processed once
        process = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if process is not None:
            parameters[name] = process
    results = []
    for index, column in enumerate(statement.exported_columns):  # a SELECT's, or RETURNING's
        process = column.type.dialect_impl(dialect).result_processor(dialect, None)
        if process is not None:
            results.append((index, process))
    return _Prepared(compiled.string, compiled, tuple(parameters.items()), tuple(results))
