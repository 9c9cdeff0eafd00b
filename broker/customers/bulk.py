"""The database side of a customer import: one batch's reads and writes, per dialect.

Why not SQLAlchemy's ``executemany``: at thousands of rows a batch, its per-row parameter
processing cost more than the database's own work. Rows go to the driver as plain tuples
(SQLite ``executemany``, PostgreSQL ``COPY``) through statements written once below. New
accounts get their ids before they are written (SQLite: after the largest id, under the write
lock the batch's transaction holds; PostgreSQL: from the id column's sequence, as the column
default would), so their invoice rows go out in the same pass instead of being read back.

Every method runs inside the batch's transaction, which the importer opens and commits.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Column, Connection, Integer, MetaData, String, Table

from broker.models import CustomerAccount

# The register's columns an import writes, in the order the importer's rows carry them and
# the statements below list them.
ACCOUNT_FIELDS = (
    "number", "kind", "name", "address_label", "email", "phone", "national_id_hmac",
    "pin_hmac", "bill_code_hmac", "source_digest",
)
_REWRITTEN = ACCOUNT_FIELDS[1:]  # a changed row keeps its number
_TIMESTAMP = CustomerAccount.__table__.c.created_at.type

# Temporary tables: per connection, dropped when the import ends.
_STAGING = MetaData()
_SEEN = Table(
    "customer_import_seen",
    _STAGING,
    Column("number", String(64), primary_key=True),
    Column("line", Integer, nullable=False),
    prefixes=["TEMPORARY"],
)
_CHANGES = Table(  # PostgreSQL only: changed rows, COPY'd in, then one UPDATE ... FROM
    "customer_import_changes",
    _STAGING,
    Column("id", Integer, primary_key=True),
    *(Column(name, String()) for name in _REWRITTEN),
    prefixes=["TEMPORARY"],
    postgresql_on_commit="DELETE ROWS",
)

AccountValues = Sequence[Any]  # one row's ACCOUNT_FIELDS, in that order


class BatchWriter(ABC):
    """What the importer asks of the database for one batch."""

    def __init__(self, connection: Connection, tenant: str) -> None:
        self.connection = connection
        self.tenant = tenant
        self._bind_time = _TIMESTAMP.bind_processor(connection.dialect)

    @staticmethod
    def for_connection(connection: Connection, tenant: str) -> BatchWriter:
        if connection.dialect.name == "postgresql":
            return PostgresBatchWriter(connection, tenant)
        return SqliteBatchWriter(connection, tenant)

    def create_staging(self) -> None:
        _SEEN.create(self.connection)

    def drop_staging(self) -> None:
        _SEEN.drop(self.connection)

    def timestamp(self, moment: datetime) -> Any:
        """``moment`` as the driver stores it in a ``UTCDateTime`` column."""
        return self._bind_time(moment) if self._bind_time else moment

    def _account_rows(
        self, ids: list[int], rows: list[AccountValues], moment: datetime
    ) -> Iterator[tuple[Any, ...]]:
        """New accounts as the insert lists their columns: id, tenant, values, timestamps."""
        stamp = self.timestamp(moment)
        for account_id, row in zip(ids, rows, strict=True):
            yield (account_id, self.tenant, *row, stamp, stamp)

    @abstractmethod
    def earlier_lines(self, numbers: list[str]) -> list[tuple[str, int]]:
        """(number, first line) for each of ``numbers`` an earlier batch already had."""

    @abstractmethod
    def remember(self, numbers_and_lines: list[tuple[str, int]]) -> None:
        """Note these numbers as seen in this file."""

    @abstractmethod
    def existing(self, numbers: list[str]) -> dict[str, tuple[int, str | None]]:
        """number -> (account id, source digest) for the numbers already in the register."""

    @abstractmethod
    def add_accounts(self, rows: list[AccountValues], moment: datetime) -> list[int]:
        """Insert new accounts; returns their ids, in the order of ``rows``."""

    @abstractmethod
    def rewrite_accounts(self, rows: list[tuple[int, AccountValues]], moment: datetime) -> None:
        """Overwrite changed accounts (by id) with the file's values; a new PIN has no expiry."""

    @abstractmethod
    def drop_invoices(self, account_ids: list[int]) -> None:
        """Forget the invoice numbers of these accounts (the file's list replaces them)."""

    @abstractmethod
    def add_invoices(self, rows: list[tuple[int, str]]) -> None:
        """Insert (account id, invoice digest) rows."""


class SqliteBatchWriter(BatchWriter):
    """In-process SQLite: ``executemany`` of tuples; lists travel as one JSON parameter."""

    _EARLIER = (
        "SELECT number, line FROM customer_import_seen"
        " WHERE number IN (SELECT value FROM json_each(?))"
    )
    _REMEMBER = "INSERT INTO customer_import_seen (number, line) VALUES (?, ?)"
    _EXISTING = (
        "SELECT number, id, source_digest FROM customer_accounts"
        " WHERE tenant = ? AND number IN (SELECT value FROM json_each(?))"
    )
    _LAST_ID = "SELECT coalesce(max(id), 0) FROM customer_accounts"
    _ADD = (
        "INSERT INTO customer_accounts (id, tenant, number, kind, name, address_label, email,"
        " phone, national_id_hmac, pin_hmac, bill_code_hmac, source_digest, created_at,"
        " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    _REWRITE = (
        "UPDATE customer_accounts SET kind = ?, name = ?, address_label = ?, email = ?,"
        " phone = ?, national_id_hmac = ?, pin_hmac = ?, bill_code_hmac = ?,"
        " source_digest = ?, pin_expires_at = NULL, updated_at = ? WHERE id = ?"
    )
    _DROP_INVOICES = (
        "DELETE FROM customer_invoices"
        " WHERE customer_account_id IN (SELECT value FROM json_each(?))"
    )
    _ADD_INVOICES = (
        "INSERT INTO customer_invoices (customer_account_id, invoice_hmac) VALUES (?, ?)"
    )

    def _run(self, sql: str, parameters: Any) -> Any:
        return self.connection.exec_driver_sql(sql, parameters)

    def earlier_lines(self, numbers: list[str]) -> list[tuple[str, int]]:
        return [tuple(row) for row in self._run(self._EARLIER, (json.dumps(numbers),))]

    def remember(self, numbers_and_lines: list[tuple[str, int]]) -> None:
        self._run(self._REMEMBER, numbers_and_lines)

    def existing(self, numbers: list[str]) -> dict[str, tuple[int, str | None]]:
        result = self._run(self._EXISTING, (self.tenant, json.dumps(numbers)))
        return {number: (account_id, digest) for number, account_id, digest in result}

    def add_accounts(self, rows: list[AccountValues], moment: datetime) -> list[int]:
        # The batch's transaction holds SQLite's write lock (BEGIN IMMEDIATE), so nobody else
        # can take these ids between the read and the insert; SQLite would pick the same ones.
        first = self._run(self._LAST_ID, ()).scalar_one() + 1
        ids = list(range(first, first + len(rows)))
        self._run(self._ADD, list(self._account_rows(ids, rows, moment)))
        return ids

    def rewrite_accounts(self, rows: list[tuple[int, AccountValues]], moment: datetime) -> None:
        stamp = self.timestamp(moment)
        self._run(self._REWRITE, [(*row[1:], stamp, account_id) for account_id, row in rows])

    def drop_invoices(self, account_ids: list[int]) -> None:
        self._run(self._DROP_INVOICES, (json.dumps(account_ids),))

    def add_invoices(self, rows: list[tuple[int, str]]) -> None:
        self._run(self._ADD_INVOICES, rows)


class PostgresBatchWriter(BatchWriter):
    """PostgreSQL through psycopg 3: ``COPY`` for every bulk write, arrays for lookups."""

    _EARLIER = "SELECT number, line FROM customer_import_seen WHERE number = ANY(%s)"
    _EXISTING = (
        "SELECT number, id, source_digest FROM customer_accounts"
        " WHERE tenant = %s AND number = ANY(%s)"
    )
    _NEW_IDS = (
        "SELECT nextval(pg_get_serial_sequence('customer_accounts', 'id'))"
        " FROM generate_series(1, %s)"
    )
    _COPY_SEEN = "COPY customer_import_seen (number, line) FROM STDIN"
    _COPY_ACCOUNTS = (
        "COPY customer_accounts (id, tenant, number, kind, name, address_label, email, phone,"
        " national_id_hmac, pin_hmac, bill_code_hmac, source_digest, created_at, updated_at)"
        " FROM STDIN"
    )
    _COPY_CHANGES = (
        "COPY customer_import_changes (id, kind, name, address_label, email, phone,"
        " national_id_hmac, pin_hmac, bill_code_hmac, source_digest) FROM STDIN"
    )
    _REWRITE = (
        "UPDATE customer_accounts AS account SET kind = change.kind, name = change.name,"
        " address_label = change.address_label, email = change.email, phone = change.phone,"
        " national_id_hmac = change.national_id_hmac, pin_hmac = change.pin_hmac,"
        " bill_code_hmac = change.bill_code_hmac, source_digest = change.source_digest,"
        " pin_expires_at = NULL, updated_at = %s"
        " FROM customer_import_changes AS change WHERE account.id = change.id"
    )
    _DROP_INVOICES = "DELETE FROM customer_invoices WHERE customer_account_id = ANY(%s)"
    _COPY_INVOICES = "COPY customer_invoices (customer_account_id, invoice_hmac) FROM STDIN"

    def create_staging(self) -> None:
        super().create_staging()
        _CHANGES.create(self.connection)

    def drop_staging(self) -> None:
        _CHANGES.drop(self.connection)
        super().drop_staging()

    def _cursor(self) -> Any:
        """A psycopg cursor on the connection the batch's transaction is open on."""
        return self.connection.connection.driver_connection.cursor()

    def _query(self, sql: str, parameters: Sequence[Any]) -> list[Any]:
        with self._cursor() as cursor:
            return cursor.execute(sql, parameters).fetchall()

    def _copy(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self._cursor() as cursor, cursor.copy(sql) as copy:
            for row in rows:
                copy.write_row(row)

    def earlier_lines(self, numbers: list[str]) -> list[tuple[str, int]]:
        return [tuple(row) for row in self._query(self._EARLIER, (numbers,))]

    def remember(self, numbers_and_lines: list[tuple[str, int]]) -> None:
        self._copy(self._COPY_SEEN, numbers_and_lines)

    def existing(self, numbers: list[str]) -> dict[str, tuple[int, str | None]]:
        rows = self._query(self._EXISTING, (self.tenant, numbers))
        return {number: (account_id, digest) for number, account_id, digest in rows}

    def add_accounts(self, rows: list[AccountValues], moment: datetime) -> list[int]:
        ids = [account_id for (account_id,) in self._query(self._NEW_IDS, (len(rows),))]
        self._copy(self._COPY_ACCOUNTS, self._account_rows(ids, rows, moment))
        return ids

    def rewrite_accounts(self, rows: list[tuple[int, AccountValues]], moment: datetime) -> None:
        self._copy(self._COPY_CHANGES, ((account_id, *row[1:]) for account_id, row in rows))
        with self._cursor() as cursor:
            cursor.execute(self._REWRITE, (self.timestamp(moment),))

    def drop_invoices(self, account_ids: list[int]) -> None:
        with self._cursor() as cursor:
            cursor.execute(self._DROP_INVOICES, (account_ids,))

    def add_invoices(self, rows: list[tuple[int, str]]) -> None:
        self._copy(self._COPY_INVOICES, rows)
