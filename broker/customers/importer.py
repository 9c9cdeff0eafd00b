"""Import of the utility's customer export (CSV or JSON Lines) into the SQL register.

Why it looks like this:
- Streaming in batches (``BATCH_SIZE`` rows per transaction): a million rows run in bounded
  memory, and an interrupted import leaves whole batches, never half rows.
- Bulk writes: a batch goes to the database as plain tuples (``broker.customers.bulk``:
  ``executemany`` on SQLite, ``COPY`` on PostgreSQL); per-row statements and per-row
  SQLAlchemy parameter processing would cost more than the database's work.
- Idempotent: each row has a keyed content digest; a row whose digest is unchanged is not
  written again, so re-running yesterday's file touches nothing.
- Secrets never reach the database in plain text: national id, PIN, bill code and invoice
  numbers become keyed HMACs (``broker.customers.digests``); the content digest is keyed too,
  because a plain SHA-256 of a row would let anyone with the table guess a 6-digit PIN.
- Duplicates in the file are found through a temporary table of the numbers seen so far, so
  the check costs no Python memory however large the file is.
- A malformed row is refused with its line, never an exception: an exception would stop the
  import between batches, with the earlier ones committed and the rest of the file not read.
  So what the readers cannot parse (JSON too deep, a number over Python's digit limit, a CSV
  field over the csv module's limit) and values the HMAC or the database cannot take (NUL,
  text that is not UTF-8) are refusals, found before a batch goes to the database.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NamedTuple

from sqlalchemy import Connection, Engine, insert, select

from broker.config import TenantConfig
from broker.models import Tenant
from broker.models.base import utcnow
from policies.binding import (
    CUSTOMER_KINDS,
    MAX_CUSTOMER_NUMBER_LENGTH,
    normalise_customer_number,
    normalise_national_id,
    normalise_proof_value,
)

from .bulk import ACCOUNT_FIELDS, BatchWriter
from .contact import InvalidPhone, looks_like_email, normalise_email, normalise_phone
from .digests import ImportDigests

# Rows per transaction: large enough that the fixed cost of a batch's statements disappears,
# small enough that a batch (about 1.5 KB a row in Python) stays a few megabytes.
BATCH_SIZE = 10_000
MAX_LISTED_REFUSALS = 1000
COLUMNS = (
    "customer_number", "kind", "name", "address", "email", "phone", "national_id", "pin",
    "bill_code", "invoice_numbers",
)
FORMATS = ("csv", "jsonl")

class ImportFileError(Exception):
    """The file as a whole cannot be read (no header, unknown format); nothing was imported."""


@dataclass(frozen=True)
class Refusal:
    line: int
    customer_number: str
    reason: str


@dataclass
class ImportReport:
    """Counts per outcome; the first ``MAX_LISTED_REFUSALS`` refusals with line and reason."""

    added: int = 0
    changed: int = 0
    unchanged: int = 0
    refused: int = 0
    refusals: list[Refusal] = field(default_factory=list)

    def refuse(self, line: int, number: str, reason: str) -> None:
        self.refused += 1
        if len(self.refusals) < MAX_LISTED_REFUSALS:
            self.refusals.append(Refusal(line, number, reason))

    def merge(self, batch: ImportReport) -> None:
        """Add one batch's outcome (the writer thread reports per batch, see import_stream)."""
        self.added += batch.added
        self.changed += batch.changed
        self.unchanged += batch.unchanged
        for refusal in batch.refusals:
            self.refuse(refusal.line, refusal.customer_number, refusal.reason)
        self.refused += batch.refused - len(batch.refusals)

    @property
    def rows(self) -> int:
        return self.added + self.changed + self.unchanged + self.refused

    def summary(self) -> str:
        lines = [
            f"added {self.added}, changed {self.changed}, unchanged {self.unchanged}, "
            f"refused {self.refused}"
        ]
        for refusal in self.refusals:
            number = f" {refusal.customer_number}" if refusal.customer_number else ""
            lines.append(f"  line {refusal.line}{number}: {refusal.reason}")
        if self.refused > len(self.refusals):
            lines.append(f"  ... and {self.refused - len(self.refusals)} more refusals")
        return "\n".join(lines)


class _Row(NamedTuple):
    """One prepared row: its line, the register's values (``ACCOUNT_FIELDS`` in order), then
    its invoice digests."""

    line: int
    number: str
    kind: str
    name: str
    address_label: str
    email: str | None
    phone: str | None
    national_id_hmac: str | None
    pin_hmac: str | None
    bill_code_hmac: str | None
    source_digest: str
    invoice_hmacs: tuple[str, ...]


_VALUES = slice(1, 1 + len(ACCOUNT_FIELDS))
assert _Row._fields[_VALUES] == ACCOUNT_FIELDS


class _Refused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Unreadable(NamedTuple):
    """A line the reader could not turn into a row: it is refused with this reason."""

    reason: str


_NOT_A_ROW = _Unreadable("not a valid row (bad JSON, not an object, or too many CSV fields)")
RawRow = dict[str, Any] | _Unreadable


def detect_format(path: str | Path, given: str | None = None) -> str:
    if given:
        if given not in FORMATS:
            raise ImportFileError(f"unknown format {given!r}; use csv or jsonl")
        return given
    suffix = Path(path).suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    raise ImportFileError(f"cannot tell the format of {Path(path).name}; pass --format")


def import_file(
    engine: Engine,
    tenant: TenantConfig,
    hmac_key: str,
    path: str | Path,
    fmt: str | None = None,
    *,
    batch_size: int = BATCH_SIZE,
) -> ImportReport:
    fmt = detect_format(path, fmt)
    # Bytes that are not UTF-8 become lone surrogates, refused with their row (``_as_text``),
    # instead of a UnicodeDecodeError somewhere in the middle of the file.
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as stream:
        return import_stream(engine, tenant, hmac_key, stream, fmt, batch_size=batch_size)


def import_stream(
    engine: Engine,
    tenant: TenantConfig,
    hmac_key: str,
    stream: IO[str],
    fmt: str,
    *,
    batch_size: int = BATCH_SIZE,
) -> ImportReport:
    """Upsert every row of ``stream`` into ``tenant``'s register; returns the report.

    Preparing rows is Python; writing a batch is mostly the database's work (SQLite's C code
    without the GIL, or the PostgreSQL server). So one thread writes batch N while this one
    prepares batch N + 1: the two overlap on a machine with a second core. Batches are still
    written one at a time, in order, and a failed batch stops the import before the next.
    Refusals are listed in line order."""
    report = ImportReport()
    digests = ImportDigests.for_key(hmac_key)
    raw_rows = _read_csv(stream) if fmt == "csv" else _read_jsonl(stream)
    with engine.connect() as connection:
        writer = BatchWriter.for_connection(connection, tenant.slug)
        with connection.begin():
            _ensure_tenant(connection, tenant)
            writer.create_staging()
        try:
            with ThreadPoolExecutor(1, thread_name_prefix="customer-import") as writing:
                written: Future[ImportReport] | None = None
                for batch in _batches(raw_rows, tenant, digests, report, batch_size):
                    if written is not None:
                        report.merge(written.result())  # raises if that batch failed
                    written = writing.submit(_write_batch, writer, batch)
                if written is not None:
                    report.merge(written.result())
        finally:
            with connection.begin():
                writer.drop_staging()
    report.refusals.sort(key=lambda refusal: refusal.line)
    return report


def _batches(
    raw_rows: Iterable[tuple[int, RawRow]],
    tenant: TenantConfig,
    digests: ImportDigests,
    report: ImportReport,
    size: int,
) -> Iterator[list[_Row]]:
    """Prepared rows, ``size`` at a time; a refused row goes to the report instead."""
    batch: list[_Row] = []
    for line, raw in raw_rows:
        try:
            batch.append(_prepare(line, raw, tenant, digests))
        except _Refused as refused:
            report.refuse(line, _number_of(raw), refused.reason)
            continue
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _ensure_tenant(connection: Connection, tenant: TenantConfig) -> None:
    """The register hangs off the tenant's anchor row; the CLI may run before the app did."""
    known = connection.scalar(select(Tenant.slug).where(Tenant.slug == tenant.slug))
    if known is None:
        connection.execute(insert(Tenant.__table__).values(slug=tenant.slug, name=tenant.name))


class _CsvLines:
    """The file's lines as ``csv.reader`` takes them, counted, with the quote characters of the
    record being read.

    When the reader gives up on a record (a field over ``csv.field_size_limit``) it goes on at
    the next line, which may still be inside that record's quoted field: an odd number of
    quotes since the record began says so, and ``skip_rest_of_record`` reads on to where the
    csv module would have ended the record, so its tail is not read as rows of its own."""

    def __init__(self, stream: IO[str]) -> None:
        self._lines = iter(stream)
        self._quotes = 0
        self.line_number = 0

    def __iter__(self) -> _CsvLines:
        return self

    def __next__(self) -> str:
        line = next(self._lines)
        self.line_number += 1
        self._quotes += line.count('"')
        return line

    def record_read(self) -> None:
        """The reader finished a record: the next one starts outside any quotes."""
        self._quotes = 0

    def skip_rest_of_record(self) -> None:
        while self._quotes % 2:
            if next(self, None) is None:
                break
        self.record_read()


def _read_csv(stream: IO[str]) -> Iterator[tuple[int, RawRow]]:
    lines = _CsvLines(stream)
    reader = csv.DictReader(lines)
    try:
        fieldnames = reader.fieldnames
    except csv.Error as error:
        raise ImportFileError(f"the CSV header cannot be read ({error})") from None
    if fieldnames is None:
        raise ImportFileError("the CSV file is empty (no header line)")
    header = [name.strip() for name in fieldnames]
    if "customer_number" not in header:
        raise ImportFileError(
            f"the CSV header has no customer_number column (columns: {', '.join(COLUMNS)})"
        )
    reader.fieldnames = header
    lines.record_read()
    while True:
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            yield lines.line_number, _Unreadable(f"not readable as CSV ({error})")
            lines.skip_rest_of_record()
            continue
        lines.record_read()
        yield lines.line_number, _NOT_A_ROW if None in record else record


def _read_jsonl(stream: IO[str]) -> Iterator[tuple[int, RawRow]]:
    for line_number, text in enumerate(stream, start=1):
        if text.strip():
            yield line_number, _json_row(text)


def _json_row(text: str) -> RawRow:
    """One JSON line as a row. ``json.loads`` raises more than JSONDecodeError on lines no
    customer system writes: ValueError for an integer over Python's digit limit,
    RecursionError for deep nesting."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return _NOT_A_ROW
    except ValueError:
        return _Unreadable(f"a JSON number longer than {sys.get_int_max_str_digits()} digits")
    except RecursionError:
        return _Unreadable("JSON nested too deeply")
    return value if isinstance(value, dict) else _NOT_A_ROW


def _number_of(raw: RawRow) -> str:
    """The row's customer number for the report; "" when it has none that can be printed."""
    if not isinstance(raw, dict):
        return ""
    try:
        return normalise_customer_number(_text(raw, "customer_number"))[:64]
    except _Refused:
        return ""


def _text(raw: dict[str, Any], key: str) -> str:
    value = raw.get(key)
    return "" if value is None else _as_text(key, value).strip()


def _as_text(key: str, value: Any) -> str:
    """``value`` as text that UTF-8, the HMACs and both databases take, or :class:`_Refused`.

    A JSON string may hold NUL or a lone surrogate ("\\ud800"), and bytes of the file that
    are not UTF-8 arrive as surrogates (``import_file``). PostgreSQL refuses NUL and nothing
    encodes a surrogate: one such value would fail its whole batch, so it is refused here."""
    try:
        text = value if isinstance(value, str) else str(value)
    except RecursionError:  # a JSON list nested nearly as deep as json.loads allows
        raise _Refused(f"{key} nested too deeply") from None
    if "\x00" in text:
        raise _Refused(f"{key} contains a NUL character")
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            raise _Refused(f"{key} is not valid UTF-8 text") from None
    return text


# The content digest's input: the stored values in the order of their column names, then the
# invoice digests, as compact JSON. Changing it would make every row look changed once.
_CANONICAL_JSON = json.JSONEncoder(separators=(",", ":"))


def _prepare(line: int, raw: RawRow, tenant: TenantConfig, digests: ImportDigests) -> _Row:
    """Validate and normalise one row, or raise :class:`_Refused` with a readable reason."""
    if isinstance(raw, _Unreadable):
        raise _Refused(raw.reason)
    number = normalise_customer_number(_text(raw, "customer_number"))
    if not number:
        raise _Refused("missing customer number")
    if len(number) > MAX_CUSTOMER_NUMBER_LENGTH:
        raise _Refused(f"customer number longer than {MAX_CUSTOMER_NUMBER_LENGTH} characters")
    kind = _text(raw, "kind").lower() or "private"
    if kind not in CUSTOMER_KINDS:
        raise _Refused(f"bad kind {kind!r} (use {' or '.join(CUSTOMER_KINDS)})")
    name = _text(raw, "name")
    address = _text(raw, "address")
    if len(name) > 200:
        raise _Refused("name longer than 200 characters")
    if len(address) > 300:
        raise _Refused("address longer than 300 characters")
    email = normalise_email(_text(raw, "email")) or None
    if email and not looks_like_email(email):
        raise _Refused("bad email address")
    phone_text = _text(raw, "phone")
    phone = None
    if phone_text:
        try:
            phone = normalise_phone(phone_text, tenant.country)
        except InvalidPhone:
            raise _Refused(f"bad phone number {phone_text!r}") from None
    national_id = _text(raw, "national_id")
    pin = normalise_proof_value(_text(raw, "pin"))
    bill_code = normalise_proof_value(_text(raw, "bill_code"))
    national_id_digest = (
        digests.national_id(normalise_national_id(national_id, tenant.country))
        if national_id
        else None
    )
    pin_digest = digests.pin(pin) if pin else None
    bill_code_digest = digests.bill_code(bill_code) if bill_code else None
    invoices = tuple(sorted({digests.invoice(n) for n in _invoice_numbers(raw) if n}))
    canonical = _CANONICAL_JSON.encode([
        address, bill_code_digest, email, kind, name, national_id_digest, number, phone,
        pin_digest, tenant.slug, *invoices,
    ])
    source_digest = digests.row(canonical)
    return _Row(
        line, number, kind, name, address, email, phone, national_id_digest, pin_digest,
        bill_code_digest, source_digest, invoices,
    )


def _invoice_numbers(raw: dict[str, Any]) -> Iterable[str]:
    value = raw.get("invoice_numbers")
    if value is None:
        return []
    if isinstance(value, list):
        items = [_as_text("invoice_numbers", item) for item in value]
    else:
        items = _as_text("invoice_numbers", value).split(";")
    if len(items) > 100:
        raise _Refused("more than 100 invoice numbers")
    return [normalise_proof_value(item) for item in items]


def _write_batch(writer: BatchWriter, batch: list[_Row]) -> ImportReport:
    """One transaction: drop duplicates, insert new accounts, rewrite changed ones. Returns
    the batch's own outcome (it runs in the writer thread, which leaves the report alone)."""
    report = ImportReport()
    unique: dict[str, _Row] = {}
    for row in batch:
        first = unique.setdefault(row.number, row)
        if first is not row:
            report.refuse(row.line, row.number, f"duplicate in file (first on line {first.line})")
    with writer.connection.begin():
        for number, first_line in writer.earlier_lines(list(unique)):
            row = unique.pop(number)
            report.refuse(row.line, number, f"duplicate in file (first on line {first_line})")
        if not unique:
            return report
        writer.remember([(number, row.line) for number, row in unique.items()])
        existing = writer.existing(list(unique))
        new_rows = [row for number, row in unique.items() if number not in existing]
        changed_rows = [
            (existing[number][0], row)
            for number, row in unique.items()
            if number in existing and existing[number][1] != row.source_digest
        ]
        moment = utcnow()
        invoices: list[tuple[int, str]] = []
        if new_rows:
            ids = writer.add_accounts([row[_VALUES] for row in new_rows], moment)
            invoices += _invoice_rows(zip(ids, new_rows, strict=True))
        if changed_rows:
            writer.rewrite_accounts([(i, row[_VALUES]) for i, row in changed_rows], moment)
            writer.drop_invoices([account_id for account_id, _ in changed_rows])
            invoices += _invoice_rows(changed_rows)
        if invoices:
            writer.add_invoices(invoices)
    report.added += len(new_rows)
    report.changed += len(changed_rows)
    report.unchanged += len(unique) - len(new_rows) - len(changed_rows)
    return report


def _invoice_rows(accounts: Iterable[tuple[int, _Row]]) -> list[tuple[int, str]]:
    return [(account_id, digest) for account_id, row in accounts for digest in row.invoice_hmacs]


def rows_as_csv(rows: Iterable[dict[str, Any]]) -> Iterator[str]:
    """Render rows in the import's CSV layout (used by the benchmark and tests)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS)
    writer.writeheader()
    for row in rows:
        invoices = row.get("invoice_numbers") or []
        writer.writerow({**row, "invoice_numbers": ";".join(invoices)})
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()
