"""`broker customers import`: idempotent upsert, a refusal report with lines and reasons,
and secrets that reach the database only as keyed HMACs."""

from __future__ import annotations

import io
import json

from click.testing import CliRunner
from sqlalchemy import func, select, text

from broker.cli import main as cli
from broker.customers.importer import import_stream
from broker.models import CustomerAccount, CustomerInvoice

from .conftest import cli_config_file
from .customers_support import Broker, as_csv, customer_rows

SLUG = "fjordvarme"


def _count(broker, model):
    with broker.session() as db:
        return db.scalar(select(func.count()).select_from(model))


def test_importing_the_same_file_twice_changes_nothing_the_second_time(database_url):
    broker = Broker(database_url)
    rows = customer_rows(2000)
    stream = as_csv(rows)
    first = import_stream(broker.engine, broker.tenant(SLUG), broker.hmac_key,
                          io.StringIO(stream), "csv", batch_size=300)
    assert (first.added, first.changed, first.unchanged, first.refused) == (2000, 0, 0, 0)
    again = import_stream(broker.engine, broker.tenant(SLUG), broker.hmac_key,
                          io.StringIO(stream), "csv", batch_size=300)
    assert (again.added, again.changed, again.unchanged, again.refused) == (0, 0, 2000, 0)
    assert _count(broker, CustomerAccount) == 2000
    assert _count(broker, CustomerInvoice) == 4000

    rows[7]["email"] = "new.address@example.no"
    rows[1500]["invoice_numbers"] = ["F999"]
    rows.append({**customer_rows(1, start=900000)[0]})
    changed = broker.load(SLUG, rows)
    assert (changed.added, changed.changed, changed.unchanged) == (1, 2, 1998)
    assert _count(broker, CustomerInvoice) == 4000 - 1 + 2
    with broker.session() as db:
        account = db.scalar(select(CustomerAccount).where(CustomerAccount.number == "100007"))
        assert account.email == "new.address@example.no"
    broker.close()


def test_refused_rows_are_reported_with_line_and_reason_and_the_rest_is_imported(database_url):
    broker = Broker(database_url)
    rows = customer_rows(1200)
    bad = {
        2: {"customer_number": " "},
        3: {"phone": "12345"},
        4: {"kind": "household"},
        5: {"email": "not an email"},
        1100: {"customer_number": "100010"},  # the number of line 12, in a later batch
        6: {"customer_number": "100007"},  # the number of line 9, same batch
    }
    for index, change in bad.items():
        rows[index].update(change)
    report = import_stream(broker.engine, broker.tenant(SLUG), broker.hmac_key,
                           io.StringIO(as_csv(rows)), "csv", batch_size=500)
    assert report.added == 1200 - len(bad)
    by_line = {r.line: r.reason for r in report.refusals}
    # Line numbers count the header: row index i is on line i + 2.
    assert by_line == {
        4: "missing customer number",
        5: "bad phone number '12345'",
        6: "bad kind 'household' (use private or company)",
        7: "bad email address",
        9: "duplicate in file (first on line 8)",
        1102: "duplicate in file (first on line 12)",
    }
    broker.close()


def test_json_lines_with_invoice_lists_import_like_csv(sqlite_url):
    broker = Broker(sqlite_url)
    rows = customer_rows(5)
    lines = "\n".join(json.dumps(r) for r in rows) + "\n\n{not json}\n[1, 2]\n"
    report = import_stream(broker.engine, broker.tenant(SLUG), broker.hmac_key,
                           io.StringIO(lines), "jsonl")
    assert (report.added, report.refused) == (5, 2)
    assert [r.line for r in report.refusals] == [7, 8]
    csv_report = broker.load(SLUG, rows)
    assert csv_report.unchanged == 5  # the same content in another format is no change
    broker.close()


def test_secrets_are_stored_only_as_keyed_hmacs_and_contacts_normalised(sqlite_url):
    broker = Broker(sqlite_url)
    rows = customer_rows(3)
    for index, row in enumerate(rows):
        row.update(pin=f"73194{index}", bill_code=f"ZQ-447{index}",
                   national_id=f"290471-881{index}", invoice_numbers=[f"INV7712{index}"])
    broker.load(SLUG, rows)
    with broker.engine.connect() as connection:
        dump = "\n".join(connection.connection.driver_connection.iterdump())
        account = connection.execute(
            text("SELECT email, phone FROM customer_accounts WHERE number = '100001'")
        ).one()
    for row in rows:
        for secret in (row["pin"], row["bill_code"].replace("-", ""), row["national_id"],
                       *row["invoice_numbers"]):
            assert secret not in dump
    assert tuple(account) == ("kunde1@example.no", "+4790000001")
    broker.close()


def test_the_cli_imports_a_file_and_prints_the_report(sqlite_url, tmp_path):
    broker = Broker(sqlite_url)
    config_file = cli_config_file(tmp_path, sqlite_url)
    rows = customer_rows(10)
    rows[3]["kind"] = "alien"
    export = tmp_path / "customers.csv"
    export.write_text(as_csv(rows))
    result = CliRunner().invoke(
        cli, ["customers", "import", str(export), "--tenant", SLUG, "--config", str(config_file)]
    )
    assert result.exit_code == 0, result.output
    assert "added 9, changed 0, unchanged 0, refused 1" in result.output
    assert "line 5 100003: bad kind 'alien'" in result.output
    unknown = CliRunner().invoke(
        cli, ["customers", "import", str(export), "--tenant", "nope", "--config", str(config_file)]
    )
    assert unknown.exit_code == 2 and "unknown tenant 'nope'" in unknown.output
    broker.close()
