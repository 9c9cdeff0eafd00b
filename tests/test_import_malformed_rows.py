"""Malformed rows are refused with their line, never an exception out of the import: an
exception stops the import between batches, with the earlier ones committed, the rest of the
file not read and a traceback for the operator."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from broker.cli import main as cli
from broker.customers.digests import ImportDigests
from broker.customers.importer import (
    ImportFileError,
    ImportReport,
    _prepare,
    _Refused,
    import_file,
    import_stream,
)
from broker.models import CustomerAccount

from .conftest import cli_config_file
from .customers_support import Broker, as_csv, customer_rows

SLUG = "fjordvarme"
ROWS = 30
BATCH = 10
BAD_INDEX = 15  # rows 0-14 before it, 15-29 after it; three batches


def _jsonl(broker: Broker, lines: list[str]) -> ImportReport:
    return import_stream(broker.engine, broker.tenant(SLUG), broker.hmac_key,
                         io.StringIO("\n".join(lines) + "\n"), "jsonl", batch_size=BATCH)


def _csv(broker: Broker, text: str) -> ImportReport:
    return import_stream(broker.engine, broker.tenant(SLUG), broker.hmac_key,
                         io.StringIO(text), "csv", batch_size=BATCH)


def _numbers(broker: Broker) -> set[str]:
    with broker.session() as db:
        return set(db.scalars(select(CustomerAccount.number)))


def _good_numbers(skipped: int = BAD_INDEX) -> set[str]:
    return {row["customer_number"] for row in customer_rows(ROWS)} - {str(100000 + skipped)}


def _refusals(report: ImportReport) -> list[tuple[int, str, str]]:
    return [(r.line, r.customer_number, r.reason) for r in report.refusals]


def _nested(depth: int) -> list[Any]:
    """A list nested ``depth`` deep, built without recursion."""
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


BAD_JSON_LINES = {
    "integer over the digit limit": (
        '{"customer_number": ' + "1" * 5000 + "}", "",
        "a JSON number longer than 4300 digits",
    ),
    "nesting deeper than json reads": (
        '{"customer_number": "100015", "name": ' + "[" * 100_000 + "]" * 100_000 + "}", "",
        "JSON nested too deeply",
    ),
    "lone surrogate in the pin": (
        '{"customer_number": "100015", "pin": "\\ud800"}', "100015",
        "pin is not valid UTF-8 text",
    ),
    "lone surrogate in the name": (
        '{"customer_number": "100015", "name": "Kari \\udc80"}', "100015",
        "name is not valid UTF-8 text",
    ),
    "lone surrogate in an invoice number": (
        '{"customer_number": "100015", "invoice_numbers": ["F1", "F\\udfff"]}', "100015",
        "invoice_numbers is not valid UTF-8 text",
    ),
    "NUL in the name": (
        '{"customer_number": "100015", "name": "Kari\\u0000Nordmann"}', "100015",
        "name contains a NUL character",
    ),
    "NUL in the customer number": (
        '{"customer_number": "1000\\u000015"}', "",
        "customer_number contains a NUL character",
    ),
}


@pytest.mark.parametrize("case", list(BAD_JSON_LINES))
def test_a_bad_json_line_in_the_middle_is_refused_with_its_line_and_every_other_row_imported(
    database_url, case
):
    broker = Broker(database_url)
    bad_line, number, reason = BAD_JSON_LINES[case]
    lines = [json.dumps(row) for row in customer_rows(ROWS)]
    lines[BAD_INDEX] = bad_line
    report = _jsonl(broker, lines)
    assert (report.added, report.refused) == (ROWS - 1, 1)
    assert _refusals(report) == [(BAD_INDEX + 1, number, reason)]
    assert _numbers(broker) == _good_numbers()
    broker.close()


def test_a_csv_field_over_the_csv_limit_is_refused_with_its_line(database_url):
    broker = Broker(database_url)
    rows = customer_rows(ROWS)
    rows[BAD_INDEX]["address"] = "x" * 200_000
    report = _csv(broker, as_csv(rows))
    assert (report.added, report.refused) == (ROWS - 1, 1)
    # Line numbers count the header: row index i is on line i + 2.
    assert _refusals(report) == [
        (BAD_INDEX + 2, "", "not readable as CSV (field larger than field limit (131072))")
    ]
    assert _numbers(broker) == _good_numbers()
    broker.close()


def test_the_tail_of_an_overlong_quoted_csv_field_is_not_read_as_rows(sqlite_url):
    broker = Broker(sqlite_url)
    rows = customer_rows(ROWS)
    rows[BAD_INDEX]["address"] = "x" * 200_000 + '\n999999,"quoted" tail\nstill the address'
    report = _csv(broker, as_csv(rows))
    assert (report.added, report.refused) == (ROWS - 1, 1)
    assert [r.line for r in report.refusals] == [BAD_INDEX + 2]
    assert _numbers(broker) == _good_numbers()
    # The lines skipped with the record still count: the next row's line is right.
    rows[BAD_INDEX + 3]["kind"] = "alien"
    again = _csv(broker, as_csv(rows))
    assert [r.line for r in again.refusals] == [BAD_INDEX + 2, BAD_INDEX + 3 + 4]
    broker.close()


def test_a_nul_in_a_csv_name_is_refused_before_the_database(database_url):
    broker = Broker(database_url)
    rows = customer_rows(ROWS)
    rows[BAD_INDEX]["name"] = "Kari\x00Nordmann"
    report = _csv(broker, as_csv(rows))
    assert _refusals(report) == [(BAD_INDEX + 2, "100015", "name contains a NUL character")]
    assert _numbers(broker) == _good_numbers()
    broker.close()


def test_a_csv_header_over_the_csv_limit_is_a_file_error(sqlite_url):
    broker = Broker(sqlite_url)
    with pytest.raises(ImportFileError, match="the CSV header cannot be read"):
        _csv(broker, "customer_number," + "n" * 200_000 + "\n100001,Kari\n")
    broker.close()


def test_bytes_that_are_not_utf8_refuse_their_row_not_the_file(sqlite_url, tmp_path):
    broker = Broker(sqlite_url)
    export = tmp_path / "customers.csv"
    text = as_csv(customer_rows(ROWS)).replace("Nordmann 15", "Nordmann \udcff")
    export.write_bytes(text.encode("utf-8", "surrogateescape"))
    report = import_file(broker.engine, broker.tenant(SLUG), broker.hmac_key, export,
                         batch_size=BATCH)
    assert _refusals(report) == [(BAD_INDEX + 2, "100015", "name is not valid UTF-8 text")]
    assert _numbers(broker) == _good_numbers()
    broker.close()


@pytest.mark.parametrize("field", ["name", "invoice_numbers"])
def test_a_value_nested_deeper_than_text_can_show_is_refused(sqlite_url, field):
    """json.loads accepts a little more depth than str() has left further down the stack."""
    broker = Broker(sqlite_url)
    digests = ImportDigests.for_key(broker.hmac_key)
    raw = {"customer_number": "100015", field: [_nested(100_000)]}
    with pytest.raises(_Refused, match=f"{field} nested too deeply"):
        _prepare(2, raw, broker.tenant(SLUG), digests)
    broker.close()


def test_the_cli_reports_a_malformed_row_instead_of_a_traceback(sqlite_url, tmp_path):
    broker = Broker(sqlite_url)
    config_file = cli_config_file(tmp_path, sqlite_url)
    lines = [json.dumps(row) for row in customer_rows(10)]
    lines[4] = '{"customer_number": "100004", "pin": "\\ud800"}'
    export = tmp_path / "customers.jsonl"
    export.write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(
        cli, ["customers", "import", str(export), "--tenant", SLUG, "--config", str(config_file)]
    )
    assert result.exit_code == 0, result.output
    assert "added 9, changed 0, unchanged 0, refused 1" in result.output
    assert "line 5 100004: pin is not valid UTF-8 text" in result.output
    broker.close()
