"""A tenant whose customers live in the utility's own system, reached over HTTP.

A fake utility system on a loopback port implements the JSON contract of
``broker/customers/http_registry.py``: it checks proofs, matches national ids and sends
forgot-PIN reminders itself. The broker counts tries before asking, keeps a local copy of what
it binds (without proof digests), and answers calmly when the system fails.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import func, select
from werkzeug.wrappers import Request, Response

from broker.config import ConfigError, RegistryConfig, TenantConfig
from broker.customers.http_registry import HttpRegistry
from broker.customers.registry import SqlRegistry, registry_for
from broker.demo import demo_tenants
from broker.models import AttemptCounter, AuditEvent, Binding, CustomerAccount, OutboxMessage
from flows.binding import bind_by_national_id, bind_with_proof, customer_accounts_for
from flows.forgot_pin import request_customer_number_and_pin

from .accounts_support import running_app
from .conftest import PORTAL_SECRET, make_config
from .customers_support import Broker
from .live import serve_wsgi

SLUG = "fjordvarme"
TOKEN = "utility-system-token-0123456789"
KARI = {
    "number": "7001234", "kind": "private", "name": "Kari Nordmann",
    "address": "Fjordveien 1, 2000 Lillestrøm", "email": "Kari@Example.NO",
    "phone": "+47 912 34 567",
}
KARI_PIN = "482913"
KARI_NATIONAL_ID = "01019012345"
FIRM = {**KARI, "number": "7009999", "kind": "company", "name": "Nordmann Rør AS"}


@dataclass
class UtilitySystem:
    """The utility's customer system as the contract describes it, recording every call."""

    customers: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {KARI["number"]: KARI, FIRM["number"]: FIRM}
    )
    pins: dict[str, str] = field(default_factory=lambda: {KARI["number"]: KARI_PIN})
    national_ids: dict[str, list[str]] = field(
        default_factory=lambda: {KARI_NATIONAL_ID: [KARI["number"], FIRM["number"]]}
    )
    failure: str = ""  # "", "5xx" or "hang"
    calls: list[tuple[str, dict[str, Any], str]] = field(default_factory=list)
    released: threading.Event = field(default_factory=threading.Event)

    def calls_to(self, path: str) -> list[dict[str, Any]]:
        return [body for called, body, _ in self.calls if called == path]

    def __call__(self, environ: Any, start_response: Any) -> Any:
        return self.answer(Request(environ))(environ, start_response)

    def answer(self, request: Request) -> Response:
        body = request.get_json(silent=True) or {}
        self.calls.append((request.path, body, request.headers.get("Authorization", "")))
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return _json({"error": "unauthorized"}, 401)
        if self.failure == "5xx":
            return _json({"error": "database down"}, 503)
        if self.failure == "hang":
            self.released.wait(5)
        if request.path == "/api/proofs/verify":
            number = body["customer_number"]
            right = body["kind"] == "pin" and self.pins.get(number) == body["value"]
            if right:
                return _json({"ok": True, "customer": self.customers[number]})
            return _json({"ok": False})
        if request.path == "/api/customers/by-national-id":
            numbers = self.national_ids.get(body["national_id"], [])
            return _json({"customers": [self.customers[n] for n in numbers]})
        if request.path == "/api/contact/send-reminder":
            return Response(status=202)
        return _json({"error": "not found"}, 404)


def _json(data: Any, status: int = 200) -> Response:
    return Response(json.dumps(data), status=status, mimetype="application/json")


@pytest.fixture
def utility() -> Iterator[tuple[UtilitySystem, str]]:
    system = UtilitySystem()
    with serve_wsgi(system) as url:
        yield system, f"{url}/api"
        system.released.set()


def _http_tenant(tenant: TenantConfig, url: str, **settings: Any) -> TenantConfig:
    registry = RegistryConfig(kind="http", url=url, token=TOKEN, timeout_seconds=0.5, **settings)
    binding = tenant.binding.model_copy(update={"registry": registry, "national_id_match": True})
    return tenant.model_copy(update={"binding": binding})


@pytest.fixture
def broker(database_url, utility):
    instance = Broker(database_url)
    system, url = utility
    instance.tenant_config = _http_tenant(instance.tenant(SLUG), url)
    instance.system = system
    yield instance
    instance.close()


@pytest.fixture
def sqlite_broker(sqlite_url, utility):
    instance = Broker(sqlite_url)
    system, url = utility
    instance.tenant_config = _http_tenant(instance.tenant(SLUG), url)
    instance.system = system
    yield instance
    instance.close()


def _bind(broker, db, user, value: str, number: str = KARI["number"]):
    result = bind_with_proof(
        db, broker.tenant_config, broker.hmac_key, user, number, "pin", value, "192.0.2.7"
    )
    db.commit()
    return result


def _failures(db, number: str = KARI["number"]) -> int:
    counter = db.get(AttemptCounter, f"bind:{SLUG}:{number}")
    return counter.failures if counter else 0


def _count(db, model) -> int:  # type: ignore[no-untyped-def]
    return db.scalar(select(func.count()).select_from(model))


# --- binding with a proof the utility checks --------------------------------------------------


def test_the_right_pin_binds_a_local_copy_of_the_utilitys_account_without_digests(broker):
    with broker.session() as db:
        user = broker.add_user(db, SLUG, "kari@example.no")
        result = _bind(broker, db, user, " 482-913 ")
        assert result.ok, result.reason
        assert customer_accounts_for(db, user.id) == [
            {"number": KARI["number"], "kind": "private", "role": "owner", "name": KARI["name"]}
        ]
        account = db.scalar(select(CustomerAccount))
        assert (account.tenant, account.address_label, account.email, account.phone) == (
            SLUG, KARI["address"], "kari@example.no", "+4791234567"
        )
        assert (account.pin_hmac, account.bill_code_hmac, account.national_id_hmac) == (
            None, None, None
        )
    [(path, body, authorization)] = broker.system.calls
    assert path == "/api/proofs/verify" and authorization == f"Bearer {TOKEN}"
    assert body == {"customer_number": KARI["number"], "kind": "pin", "value": KARI_PIN}


def test_a_second_person_binding_the_same_account_shares_the_local_copy(broker):
    with broker.session() as db:
        first = broker.add_user(db, SLUG, "kari@example.no")
        second = broker.add_user(db, SLUG, "ola@example.no")
        assert _bind(broker, db, first, KARI_PIN).ok
        assert _bind(broker, db, second, KARI_PIN).ok
        assert _count(db, CustomerAccount) == 1 and _count(db, Binding) == 2


def test_a_wrong_pin_is_refused_counted_and_binds_nothing(sqlite_broker):
    broker = sqlite_broker
    with broker.session() as db:
        user = broker.add_user(db, SLUG, "mallory@example.no")
        result = _bind(broker, db, user, "000000")
        assert not result.ok and result.reason == "wrong_proof"
        assert _failures(db) == 1
        assert _count(db, Binding) == 0 and _count(db, CustomerAccount) == 0


def test_after_three_wrong_pins_the_fourth_try_is_refused_without_asking_the_utility(
    sqlite_broker,
):
    broker = sqlite_broker
    with broker.session() as db:
        user = broker.add_user(db, SLUG, "mallory@example.no")
        answers = [_bind(broker, db, user, guess) for guess in ("111111", "222222", "333333")]
        assert [a.reason for a in answers] == ["wrong_proof"] * 3
        assert answers[-1].locked_until is not None
        fourth = _bind(broker, db, user, KARI_PIN)
        assert not fourth.ok and fourth.reason == "locked"
        assert _count(db, Binding) == 0
    assert len(broker.system.calls_to("/api/proofs/verify")) == 3


def test_the_utility_answering_for_another_customer_number_binds_nothing(sqlite_broker):
    broker = sqlite_broker
    broker.system.customers[KARI["number"]] = FIRM  # a buggy system: the wrong account
    with broker.session() as db:
        user = broker.add_user(db, SLUG, "kari@example.no")
        result = _bind(broker, db, user, KARI_PIN)
        assert not result.ok and result.reason == "customer_system_unavailable"
        assert _count(db, Binding) == 0 and _count(db, CustomerAccount) == 0


@pytest.mark.parametrize("failure", ["5xx", "hang"])
def test_a_failing_customer_system_gives_a_calm_answer_binds_nothing_and_counts_the_try(
    sqlite_broker, failure,
):
    broker = sqlite_broker
    broker.system.failure = failure
    with broker.session() as db:
        user = broker.add_user(db, SLUG, "kari@example.no")
        result = _bind(broker, db, user, KARI_PIN)
        assert not result.ok and result.reason == "customer_system_unavailable"
        assert _count(db, Binding) == 0 and _failures(db) == 1
        reasons = db.scalars(select(AuditEvent.reason)).all()
        assert reasons == ["customer_system_unavailable"]
    # A proof check is not retried: the utility may count tries too.
    assert len(broker.system.calls_to("/api/proofs/verify")) == 1


def test_guessing_while_the_customer_system_times_out_still_runs_into_the_lock(sqlite_broker):
    broker = sqlite_broker
    broker.system.failure = "hang"
    with broker.session() as db:
        user = broker.add_user(db, SLUG, "mallory@example.no")
        for guess in ("111111", "222222", "333333"):
            assert _bind(broker, db, user, guess).reason == "customer_system_unavailable"
        broker.system.failure = ""
        assert _bind(broker, db, user, KARI_PIN).reason == "locked"
    assert len(broker.system.calls_to("/api/proofs/verify")) == 3


def test_a_wrong_token_is_a_configuration_error_not_a_wrong_pin(sqlite_broker):
    broker = sqlite_broker
    settings = broker.tenant_config.binding.registry.model_copy(update={"token": "wrong"})
    binding = broker.tenant_config.binding.model_copy(update={"registry": settings})
    broker.tenant_config = broker.tenant_config.model_copy(update={"binding": binding})
    with broker.session() as db:
        user = broker.add_user(db, SLUG, "kari@example.no")
        assert _bind(broker, db, user, KARI_PIN).reason == "customer_system_unavailable"
    [(_, _, authorization)] = broker.system.calls
    assert authorization == "Bearer wrong"


# --- national id match after MitID / FTN --------------------------------------------------------


def _bind_by_national_id(broker, db, user, national_id: str):
    result = bind_by_national_id(
        db, broker.tenant_config, broker.hmac_key, user, national_id, "192.0.2.7", country="DK"
    )
    db.commit()
    return result


def test_a_national_id_the_utility_knows_binds_its_accounts_and_prefills_the_profile(broker):
    with broker.session() as db:
        user = broker.add_user(db, SLUG, "kari@example.no")
        result = _bind_by_national_id(broker, db, user, "010190-12345")
        assert result.ok
        assert [a["number"] for a in result.accounts] == [KARI["number"], FIRM["number"]]
        assert result.prefill == {
            "name": KARI["name"], "email": "kari@example.no", "phone": "+4791234567"
        }
        assert [a["role"] for a in customer_accounts_for(db, user.id)] == ["owner", "owner"]
        # The national id went to the utility's system and nowhere into ours.
        assert db.scalars(select(CustomerAccount.national_id_hmac)).all() == [None, None]
        stored = json.dumps([e.details for e in db.scalars(select(AuditEvent))], default=str)
        assert KARI_NATIONAL_ID not in stored
    [body] = broker.system.calls_to("/api/customers/by-national-id")
    assert body == {"national_id": KARI_NATIONAL_ID, "country": "DK"}


def test_a_national_id_the_utility_does_not_know_shows_the_support_guidance(sqlite_broker):
    broker = sqlite_broker
    with broker.session() as db:
        user = broker.add_user(db, SLUG, "ola@example.no")
        result = _bind_by_national_id(broker, db, user, "31129912345")
        assert not result.ok and result.reason == "no_match" and result.show_support
        assert _count(db, Binding) == 0


def test_an_unavailable_system_does_not_claim_the_national_id_is_missing(sqlite_broker):
    broker = sqlite_broker
    broker.system.failure = "5xx"
    with broker.session() as db:
        user = broker.add_user(db, SLUG, "kari@example.no")
        result = _bind_by_national_id(broker, db, user, KARI_NATIONAL_ID)
        assert not result.ok and result.reason == "customer_system_unavailable"
        assert not result.show_support and _count(db, Binding) == 0
    # A lookup changes nothing at the utility, so it is tried once more.
    assert len(broker.system.calls_to("/api/customers/by-national-id")) == 2


# --- forgot customer number / PIN ---------------------------------------------------------------


def test_forgot_pin_is_sent_by_the_utilitys_system_and_the_broker_never_makes_a_pin(
    sqlite_broker,
):
    broker = sqlite_broker
    with broker.session() as db:
        result = request_customer_number_and_pin(
            db, broker.tenant_config, broker.hmac_key, channel="sms", phone="912 34 567",
            customer_number=" 700-1234 ",
        )
        db.commit()
        assert result.ok and result.channel == "sms"
        assert _count(db, OutboxMessage) == 0 and _count(db, CustomerAccount) == 0
    [body] = broker.system.calls_to("/api/contact/send-reminder")
    assert body == {"channel": "sms", "phone": "+4791234567", "customer_number": "7001234"}


def test_forgot_pin_with_an_impossible_email_never_reaches_the_utility(sqlite_broker):
    broker = sqlite_broker
    with broker.session() as db:
        result = request_customer_number_and_pin(
            db, broker.tenant_config, broker.hmac_key, channel="email", email="not-an-email"
        )
        assert not result.ok and result.error == "invalid_email"
    assert broker.system.calls == []


@pytest.fixture
def http_app(sqlite_url, utility):
    system, url = utility
    binding = {**demo_tenants(PORTAL_SECRET, "http://portal.test", "http://e.test")[SLUG]["binding"],
               "registry": {"kind": "http", "url": url, "token": TOKEN, "timeout_seconds": 0.5}}
    for application in running_app(sqlite_url, **{SLUG: {"binding": binding}}):
        yield application, system


def _forgot_pin_page(client, **form: str) -> str:
    response = client.post(f"/t/{SLUG}/forgot-pin", data=form)
    assert response.status_code == 200
    return response.get_data(as_text=True)


def test_the_forgot_pin_page_answers_the_same_whether_the_utility_matched_or_failed(http_app):
    application, system = http_app
    client = application.test_client()
    known = _forgot_pin_page(client, channel="email", email="kari@example.no")
    unknown = _forgot_pin_page(client, channel="email", email="nobody@example.no")
    system.failure = "5xx"
    failed = _forgot_pin_page(client, channel="email", email="kari@example.no")
    assert known == unknown == failed
    assert "Request received" in known
    sent = [body["email"] for body in system.calls_to("/api/contact/send-reminder")]
    assert sent == ["kari@example.no", "nobody@example.no", "kari@example.no"]
    with application.extensions["broker"].sessions() as db:
        assert _count(db, OutboxMessage) == 0
        reasons = db.scalars(
            select(AuditEvent.reason).where(AuditEvent.event == "forgot_pin_requested")
            .order_by(AuditEvent.id)
        ).all()
        assert reasons == ["delegated", "delegated", "customer_system_unavailable"]


# --- configuration ------------------------------------------------------------------------------


def test_an_http_registry_without_a_url_is_refused_at_start_up(sqlite_url):
    tenants = demo_tenants(PORTAL_SECRET, "http://portal.test", "http://e.test")
    tenants[SLUG]["binding"] = {**tenants[SLUG]["binding"], "registry": {"kind": "http"}}
    with pytest.raises(ConfigError, match="registry.kind = 'http' needs registry.url"):
        make_config(sqlite_url, tenants=tenants)


def test_tenants_use_the_sql_register_unless_they_configure_http(sqlite_broker):
    broker = sqlite_broker
    with broker.session() as db:
        assert isinstance(registry_for(db, broker.tenant(SLUG)), SqlRegistry)
        assert isinstance(registry_for(db, broker.tenant_config), HttpRegistry)
