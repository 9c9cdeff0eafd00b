"""The fast import keeps the old import's answers: the E.164 short path judges phone numbers
as phonenumbers does, the prepared HMACs are keyed_hmac, row digests did not change, the bulk
writes (SQLite executemany, PostgreSQL COPY) store every column, and a failed batch leaves
the batches before it whole."""

from __future__ import annotations

import io
import random
from datetime import UTC, datetime

import phonenumbers
import pytest
from sqlalchemy import func, select, update

from broker.customers import bulk, contact
from broker.customers.digests import ImportDigests, KeyedDigest, proof_hmac
from broker.customers.importer import _prepare, import_stream
from broker.models import CustomerAccount, CustomerInvoice
from broker.security import keyed_hmac

from .customers_support import Broker, as_csv, customer_rows

SLUG = "fjordvarme"


def _load(broker, rows, **options):
    return import_stream(broker.engine, broker.tenant(SLUG), broker.hmac_key,
                         io.StringIO(as_csv(rows)), "csv", **options)


def _slow_phone(text: str, country: str) -> str | None:
    try:
        return contact._normalise_with_phonenumbers(text, country)
    except contact.InvalidPhone:
        return None


def _e164_samples() -> set[str]:
    """Every region's example numbers, each with a few digits changed, one more and one
    less, spaced, plus random digits after every calling code."""
    chooser = random.Random(20261204)
    samples: set[str] = set()
    for calling_code, regions in phonenumbers.COUNTRY_CODE_TO_REGION_CODE.items():
        examples = []
        for region in regions:
            if region == "001":
                examples.append(phonenumbers.example_number_for_non_geo_entity(calling_code))
                continue
            for number_type in (phonenumbers.PhoneNumberType.FIXED_LINE,
                                phonenumbers.PhoneNumberType.MOBILE,
                                phonenumbers.PhoneNumberType.TOLL_FREE):
                examples.append(phonenumbers.example_number_for_type(region, number_type))
        for example in filter(None, examples):
            e164 = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)
            samples |= {e164, e164 + "7", e164[:-1], phonenumbers.format_number(
                example, phonenumbers.PhoneNumberFormat.INTERNATIONAL)}
            for _ in range(8):
                digits = list(e164)
                digits[chooser.randrange(len(str(calling_code)) + 1, len(digits))] = str(
                    chooser.randrange(10))
                samples.add("".join(digits))
        for _ in range(20):
            tail = "".join(str(chooser.randrange(10)) for _ in range(chooser.randrange(4, 14)))
            samples.add(f"+{calling_code}{tail}")
    return samples


def test_the_e164_short_path_agrees_with_phonenumbers_on_every_calling_code():
    accepted = valid = 0
    for text in sorted(_e164_samples()):
        authority = _slow_phone(text, "NO")
        short = contact._valid_e164(text)
        valid += authority is not None
        if short is not None:
            accepted += 1
            assert short == authority, text
    # The short path takes most valid numbers (the rest go the long way, still correct).
    assert accepted > 0.8 * valid


@pytest.mark.parametrize("text, expected", [
    ("+4791234567", "+4791234567"),
    ("+47 912 34 567", "+4791234567"),
    ("912 34 567", "+4791234567"),  # national form: phonenumbers.parse as always
    ("+46 70 123 45 67", "+46701234567"),
    ("+4712345678", None),  # E.164 in form, but no Norwegian number starts with 1
    ("+47912345678", None),  # one digit too many
    ("+999123456789", None),  # no such calling code
])
def test_normalise_phone_answers_as_phonenumbers_does(text, expected):
    if expected is None:
        with pytest.raises(contact.InvalidPhone):
            contact.normalise_phone(text, "NO")
    else:
        assert contact.normalise_phone(text, "NO") == expected
    assert _slow_phone(text, "NO") == expected


def test_an_invalid_number_written_in_e164_form_is_refused_by_the_import(database_url):
    broker = Broker(database_url)
    rows = customer_rows(3)
    rows[1]["phone"] = "+4712345678"
    report = _load(broker, rows)
    assert (report.added, report.refused) == (2, 1)
    assert [(r.line, r.reason) for r in report.refusals] == [
        (3, "bad phone number '+4712345678'")
    ]
    broker.close()


@pytest.mark.parametrize("key_length", [0, 1, 39, 63, 64, 65, 200])
def test_prepared_digests_are_exactly_keyed_hmac(key_length):
    key = "".join(chr(0x41 + (i * 7) % 0x2000) for i in range(key_length))
    for value in ("", "731940", "ø" * 80, "F" * 1000):
        assert KeyedDigest(key, "customer.pin")(value) == keyed_hmac(
            key, value, purpose="customer.pin")


def test_row_digests_are_those_the_earlier_importer_stored(sqlite_url):
    """Digests computed by the importer before it was made fast: a re-import after the
    upgrade must find every row unchanged, not rewrite the register once."""
    broker = Broker(sqlite_url)
    digests = ImportDigests.for_key(broker.hmac_key)
    full = {
        "customer_number": "100 234-5", "kind": "Company", "name": " Kari Nordmann ",
        "address": "Fjordveien 1, 2000 Lillestrøm", "email": "Kari@Example.NO",
        "phone": "+47 912 34 567", "national_id": "290471-88101", "pin": "731 940",
        "bill_code": "zq-4470", "invoice_numbers": "INV-1;inv2;INV-1",
    }
    row = _prepare(2, full, broker.tenant(SLUG), digests)
    assert row.source_digest == (
        "57f916a35078ffc16dc4d741971325bc2c70a6fc92401d99aa2cd38bacf3ea49")
    assert row.national_id_hmac == (
        "99fdb7904afb7264a8eb290403069416cfee2b2c95db13e9e0d9317efa39f701")
    assert row.pin_hmac == "b71ffc2e02e847f24fd29428a05e51a79ded94c765920b33baeeb086dd6f0f90"
    assert row.invoice_hmacs == (
        "828d610a851616542f91486a870c4144bb8762261886a1686ccf6dc2240e6040",
        "ed96c352982dbff7498384f3ea7ba76ee18a13691187f48fc08f8e882070fcc6",
    )
    bare = _prepare(3, {"customer_number": "77"}, broker.tenant(SLUG), digests)
    assert bare.source_digest == (
        "94cade674030a866681d2799ec1dca5a2718d69cab4518499e31094a36415174")
    broker.close()


def test_every_column_is_written_and_a_changed_row_is_rewritten_whole(database_url):
    broker = Broker(database_url)
    rows = customer_rows(3)
    _load(broker, rows)
    key = broker.hmac_key
    with broker.session() as db:
        account = db.scalar(select(CustomerAccount).where(CustomerAccount.number == "100001"))
        assert (account.tenant, account.kind, account.name, account.address_label) == (
            SLUG, "private", "Kari Nordmann 1", "Fjordveien 1, 2000 Lillestrøm")
        assert (account.email, account.phone) == ("kunde1@example.no", "+4790000001")
        assert account.pin_hmac == proof_hmac(key, "pin", rows[1]["pin"])
        assert account.bill_code_hmac == proof_hmac(key, "bill_code", rows[1]["bill_code"])
        assert account.national_id_hmac is not None and account.source_digest is not None
        assert account.pin_expires_at is None
        assert account.created_at == account.updated_at
        assert account.created_at.tzinfo is not None
        first_digest, created = account.source_digest, account.created_at
        db.execute(update(CustomerAccount).where(CustomerAccount.id == account.id)
                   .values(pin_expires_at=datetime(2030, 1, 1, tzinfo=UTC)))
        db.commit()

    rows[1].update(name="Kari Nordmann-Berg", phone="", pin="111111",
                   invoice_numbers=["NEW-1"])
    report = _load(broker, rows)
    assert (report.added, report.changed, report.unchanged) == (0, 1, 2)
    with broker.session() as db:
        account = db.scalar(select(CustomerAccount).where(CustomerAccount.number == "100001"))
        assert (account.name, account.phone) == ("Kari Nordmann-Berg", None)
        assert account.pin_hmac == proof_hmac(key, "pin", "111111")
        assert account.pin_expires_at is None  # a new PIN from the file does not expire
        assert account.source_digest != first_digest
        assert account.created_at == created and account.updated_at > created
        invoices = db.scalars(select(CustomerInvoice.invoice_hmac).where(
            CustomerInvoice.customer_account_id == account.id)).all()
        assert invoices == [proof_hmac(key, "invoice", "NEW-1")]
    broker.close()


def test_ids_taken_by_the_import_leave_the_next_ones_to_the_database(database_url):
    broker = Broker(database_url)
    with broker.session() as db:
        db.add(CustomerAccount(tenant=SLUG, number="LOCAL-1"))
        db.commit()
    _load(broker, customer_rows(50))
    with broker.session() as db:
        db.add(CustomerAccount(tenant=SLUG, number="LOCAL-2"))
        db.commit()
        ids = db.scalars(select(CustomerAccount.id).order_by(CustomerAccount.id)).all()
    assert len(ids) == len(set(ids)) == 52
    broker.close()


def test_a_failing_batch_leaves_the_earlier_batches_whole(database_url, monkeypatch):
    broker = Broker(database_url)
    writer = bulk.BatchWriter.for_connection
    calls = []

    def failing_on_the_third_batch(connection, tenant):
        instance = writer(connection, tenant)
        real = instance.add_invoices

        def add_invoices(rows):
            calls.append(len(rows))
            real(rows)  # the batch's accounts and invoices are written, then it fails
            if len(calls) == 3:
                raise RuntimeError("disk full")

        instance.add_invoices = add_invoices
        return instance

    monkeypatch.setattr(bulk.BatchWriter, "for_connection", failing_on_the_third_batch)
    rows = customer_rows(1000)
    with pytest.raises(RuntimeError, match="disk full"):
        _load(broker, rows, batch_size=300)
    with broker.session() as db:
        assert db.scalar(select(func.count()).select_from(CustomerAccount)) == 600
        assert db.scalar(select(func.count()).select_from(CustomerInvoice)) == 1200
    monkeypatch.undo()
    report = _load(broker, rows, batch_size=300)
    assert (report.added, report.unchanged) == (400, 600)
    broker.close()


def test_refusals_are_listed_in_line_order_though_batches_are_written_behind(database_url):
    """Duplicates are found when a batch is written, which happens while the next batch is
    prepared: the report still lists every refusal by its line."""
    broker = Broker(database_url)
    rows = customer_rows(900)
    rows[5]["customer_number"] = "100002"  # line 7: a duplicate of line 4, found at write
    rows[450]["kind"] = "alien"  # line 452, the next batch: refused while preparing
    rows[800]["customer_number"] = "100003"  # line 802: a duplicate from an earlier batch
    report = _load(broker, rows, batch_size=300)
    assert [(r.line, r.reason) for r in report.refusals] == [
        (7, "duplicate in file (first on line 4)"),
        (452, "bad kind 'alien' (use private or company)"),
        (802, "duplicate in file (first on line 5)"),
    ]
    assert (report.added, report.refused) == (897, 3)
    broker.close()
