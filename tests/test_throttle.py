"""Throttles per source address and per target on every form where something is guessed.

Each test builds a broker with tight limits and attacks one form over the Flask test client;
addresses come from REMOTE_ADDR. The Redis tests run when 127.0.0.1:6379 answers (with CI=true
they must run) and show two broker apps sharing one counter without a raw email in any key.
"""

from __future__ import annotations

import base64
import os
import secrets
from typing import Any

import pytest
import redis
from sqlalchemy import select

from broker import db as database
from broker.app import create_app
from broker.config import ConfigError, parse_config
from broker.models import AuditEvent, OutboxMessage, User
from broker.passwords import hash_password
from broker.throttle import network_of

from .conftest import IN_CI, PORTAL_SECRET, make_config
from .customers_support import Broker, customer_rows

SLUG = "fjordvarme"
REDIS_URL = os.environ.get("BROKER_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
KNOWN = "kari.nordmann@example.no"
UNKNOWN = "nobody-here@example.no"


def throttle_settings(**sections: dict[str, str]) -> dict[str, Any]:
    """Tight limits for the forms under test, everything else left at its default. Counted
    exactly (moving window): the default sliding-window counter weighs the previous minute's
    hits and rounds down, so three hits spread over a minute boundary could pass a limit of 2,
    and a test sending them at hh:mm:59.99 failed once."""
    return {"key_prefix": "t" + secrets.token_hex(6), "strategy": "moving-window", **sections}


@pytest.fixture
def make_app(sqlite_url):
    apps = []

    def build(throttle: dict[str, Any], **overrides: Any):
        application = create_app(make_config(sqlite_url, throttle=throttle, **overrides))
        application.config["TESTING"] = True
        apps.append(application)
        return application

    yield build
    for application in apps:
        application.extensions["broker"].engine.dispose()


def post_from(client, address: str, path: str, **form: str):
    return client.post(path, data=form, environ_base={"REMOTE_ADDR": address})


def audit_rows(application, event: str = "throttled") -> list[AuditEvent]:
    with application.extensions["broker"].sessions() as db:
        return list(db.scalars(select(AuditEvent).where(AuditEvent.event == event)))


def add_user(application, email: str = KNOWN) -> None:
    state = application.extensions["broker"]
    tenant = state.config.tenants[SLUG]
    with database.transaction(state.sessions) as db:
        db.add(User(tenant=SLUG, subject=secrets.token_hex(8), email=email, status="active",
                    password_hash=hash_password(tenant, "fjord-varme-hus")))


# --- per source address --------------------------------------------------------------------


def test_the_fourth_login_from_one_address_in_a_minute_gets_a_calm_429_with_retry_after(
    make_app,
):
    application = make_app(throttle_settings(login={"per_address": "3/minute"}))
    client = application.test_client()
    login = f"/t/{SLUG}/login"
    # An empty password is refused before any hash, but every POST counts.
    answers = [post_from(client, "198.51.100.4", login, email=f"user{i}@example.no",
                         password="") for i in range(3)]
    assert [a.status_code for a in answers] == [400, 400, 400]

    throttled = post_from(client, "198.51.100.4", login, email="user9@example.no", password="")
    assert throttled.status_code == 429
    assert 1 <= int(throttled.headers["Retry-After"]) <= 60
    page = throttled.get_data(as_text=True)
    assert "Please wait a moment" in page and "+47 63 82 33 50" in page  # support contact
    assert "user9" not in page

    other_address = post_from(client, "198.51.100.5", login, email="user9@example.no",
                              password="")
    assert other_address.status_code == 400
    assert client.get(login, environ_base={"REMOTE_ADDR": "198.51.100.4"}).status_code == 200


def test_limits_are_checked_in_the_throttled_views_only_not_around_every_request(make_app):
    """No hook runs around every request (Flask-Limiter's default-limit and header hooks cost a
    quarter of a bare request); the limits sit in the marked views' wrappers and still hold."""
    application = make_app(throttle_settings(login={"per_address": "1/minute"}))
    hooks = [*application.before_request_funcs.get(None, []),
             *application.after_request_funcs.get(None, []),
             *application.teardown_request_funcs.get(None, [])]
    assert not [hook for hook in hooks
                if getattr(hook, "__module__", "").startswith(("flask_limiter", "limits",
                                                                "broker.throttle",
                                                                "broker.rate_counters"))]
    client = application.test_client()
    login = f"/t/{SLUG}/login"
    address = "198.51.100.8"
    assert post_from(client, address, login, email="a@example.no", password="").status_code == 400
    assert post_from(client, address, login, email="b@example.no", password="").status_code == 429
    for _ in range(5):  # an unthrottled page is never counted
        assert client.get("/healthz", environ_base={"REMOTE_ADDR": address}).status_code == 200


def test_the_shortest_window_is_checked_first_so_a_refusal_spends_no_daily_allowance(make_app):
    application = make_app(throttle_settings(login={"per_address": "50/day;20/hour",
                                                    "per_target": "2/minute"}))
    client = application.test_client()
    login = f"/t/{SLUG}/login"
    answers = [post_from(client, "198.51.100.20", login, email=KNOWN, password="").status_code
               for _ in range(5)]
    assert answers == [400, 400, 429, 429, 429]
    # The three refused posts were stopped by the per-minute email limit before the address
    # limits counted them: 48 of the 50 a day are left for this address.
    throttle = application.extensions["broker_throttle"]
    wrapped = application.view_functions["login.login_submit"]
    day = next(limit for limit in wrapped.throttle_limits
               if limit.item.GRANULARITY.name == "day")
    with application.test_request_context(environ_base={"REMOTE_ADDR": "198.51.100.20"}):
        identifiers = day.identifiers(throttle.prefix)
    stats = throttle.counters._primary.get_window_stats(day.item, *identifiers)
    assert stats.remaining == 48


def test_a_head_request_counts_as_the_get_it_is(make_app):
    application = make_app(throttle_settings(upstream_start={"per_address": "2/minute"}))
    client = application.test_client()
    path = f"/t/{SLUG}/login/no-such-upstream"
    heads = [client.head(path, environ_base={"REMOTE_ADDR": "198.51.100.21"}).status_code
             for _ in range(2)]
    assert 429 not in heads
    assert client.head(path, environ_base={"REMOTE_ADDR": "198.51.100.21"}).status_code == 429
    assert client.get(path, environ_base={"REMOTE_ADDR": "198.51.100.21"}).status_code == 429


def test_addresses_in_one_ipv6_slash_64_share_one_allowance(make_app):
    application = make_app(throttle_settings(login={"per_address": "2/minute"}))
    client = application.test_client()
    login = f"/t/{SLUG}/login"
    post_from(client, "2001:db8:1:2::1", login, email="a@example.no", password="")
    post_from(client, "2001:db8:1:2:ffff::9", login, email="b@example.no", password="")
    assert post_from(client, "2001:db8:1:2::abcd", login, email="c@example.no",
                     password="").status_code == 429
    assert post_from(client, "2001:db8:1:3::1", login, email="c@example.no",
                     password="").status_code == 400


@pytest.mark.parametrize(("address", "party"), [
    ("::ffff:192.0.2.1", "192.0.2.1"),  # an IPv4 client of a dual-stack listener
    ("::ffff:192.0.2.2", "192.0.2.2"),  # ... is its own party, not one /64 for all of IPv4
    ("203.0.113.5:40001", "203.0.113.5"),  # a proxy that writes ip:port
    ("[2001:db8:1:2::7]:443", "2001:db8:1:2::/64"),
    ("not an address", "unparsed"),  # junk shares one budget, whatever its spelling
    ("also not one", "unparsed"),
    ("", "unknown"),
])
def test_the_party_behind_an_address_however_it_arrives(address, party):
    assert network_of(address) == party


def test_an_ipv4_client_of_a_dual_stack_listener_does_not_spend_other_ipv4_clients_budget(
        make_app):
    application = make_app(throttle_settings(login={"per_address": "2/minute"}))
    client = application.test_client()
    login = f"/t/{SLUG}/login"
    for _ in range(3):
        post_from(client, "::ffff:198.51.100.7", login, email="a@example.no", password="")
    other = post_from(client, "::ffff:198.51.100.8", login, email="b@example.no", password="")
    assert other.status_code == 400  # checked, not throttled


def test_every_spelling_of_one_mailbox_shares_the_registration_budget(make_app):
    """Registration reads quotes and comments out of an address; so must its throttle, or
    each spelling buys the mailbox a fresh allowance of mail (a review sent 11 under 2/hour)."""
    application = make_app(throttle_settings(registration={"per_address": "",
                                                           "per_target": "2/hour"}))
    client = application.test_client()
    register = f"/t/{SLUG}/register"
    answers = [post_from(client, f"192.0.2.{i}", register, email=spelling, name="Kari",
                         password="Correct-Horse-42", password_confirmation="Correct-Horse-42",
                         accept_privacy="yes").status_code
               for i, spelling in enumerate(
                   ['"kari"@example.no', "kari(1)@example.no", "Kari@Example.no "], start=1)]
    assert answers[:2] != [429, 429] and answers[2] == 429


FORMS = [
    ("registration", "/t/{slug}/register", {"email": "new@example.no"}, "POST"),
    ("forgot_password", "/t/{slug}/forgot-password", {"email": "new@example.no"}, "POST"),
    ("activation", "/t/{slug}/activate", {"email": "new@example.no", "code": "123456"}, "POST"),
    ("totp", "/t/{slug}/login/totp", {"code": "123456"}, "POST"),
    ("binding", "/t/{slug}/customer-accounts",
     {"customer_number": "100001", "proof_kind": "pin", "proof_value": "1"}, "POST"),
    ("upstream_start", "/t/{slug}/login/no-such-upstream", {}, "GET"),
    ("forgot_pin", "/t/{slug}/forgot-pin", {"channel": "sms", "phone": "+47 41234567"}, "POST"),
]


@pytest.mark.parametrize(("form", "path", "fields", "method"), FORMS,
                         ids=[form[0] for form in FORMS])
def test_every_guessable_form_is_throttled_per_address(make_app, form, path, fields, method):
    application = make_app(throttle_settings(**{form: {"per_address": "2/minute",
                                                       "per_target": ""}}))
    client = application.test_client()
    url = path.format(slug=SLUG)
    send = (lambda: client.get(url, environ_base={"REMOTE_ADDR": "203.0.113.8"})) \
        if method == "GET" else (lambda: post_from(client, "203.0.113.8", url, **fields))
    first, second, third = send(), send(), send()
    assert first.status_code != 429 and second.status_code != 429
    assert third.status_code == 429 and "Retry-After" in third.headers
    [record] = audit_rows(application)
    assert record.details["form"] == form and record.details["counted"] == "address"


# --- per target -----------------------------------------------------------------------------


def test_one_email_is_throttled_from_any_address_and_a_registered_one_looks_the_same(make_app):
    application = make_app(throttle_settings(login={"per_address": "", "per_target": "2/minute"}))
    add_user(application)
    client = application.test_client()
    login = f"/t/{SLUG}/login"
    answers = {}
    for email in (KNOWN, UNKNOWN):
        # Spelled differently and sent from three addresses: still one target.
        post_from(client, "192.0.2.1", login, email=email.upper(), password="")
        post_from(client, "192.0.2.2", login, email=f"  {email}", password="")
        answers[email] = post_from(client, "192.0.2.3", login, email=email, password="")
    known, unknown = answers[KNOWN], answers[UNKNOWN]
    assert known.status_code == unknown.status_code == 429
    assert known.get_data() == unknown.get_data()
    assert known.headers["Retry-After"] and unknown.headers["Retry-After"]
    assert post_from(client, "192.0.2.3", login, email="third@example.no",
                     password="").status_code == 400


def test_the_throttled_audit_record_holds_hashes_once_per_minute_and_no_email(make_app):
    application = make_app(throttle_settings(login={"per_address": "", "per_target": "1/minute"}))
    client = application.test_client()
    login = f"/t/{SLUG}/login"
    for _ in range(4):
        post_from(client, "192.0.2.9", login, email=KNOWN, password="")
    [record] = audit_rows(application)
    assert (record.tenant, record.outcome, record.reason) == (SLUG, "refused", "login per email")
    assert record.source_address == "192.0.2.9"
    assert record.details["key"].startswith("email:") and len(record.details["key"]) == 38
    assert "kari" not in str(record.details).lower()


def test_a_customer_number_is_one_target_however_it_is_typed(make_app):
    application = make_app(throttle_settings(binding={"per_address": "",
                                                      "per_target": "2/minute"}))
    client = application.test_client()
    url = f"/t/{SLUG}/customer-accounts"
    post_from(client, "192.0.2.10", url, customer_number="100 001", proof_value="1")
    post_from(client, "192.0.2.11", url, customer_number="100-001", proof_value="2")
    assert post_from(client, "192.0.2.12", url, customer_number="100001",
                     proof_value="3").status_code == 429
    assert post_from(client, "192.0.2.12", url, customer_number="100002",
                     proof_value="3").status_code != 429


# --- the OIDC endpoints ---------------------------------------------------------------------


def basic(client_id: str, secret: str) -> dict[str, str]:
    token = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def test_token_calls_are_limited_per_portal_with_an_oauth_style_answer(make_app):
    application = make_app(throttle_settings(oidc={"per_client": "2/minute"}))
    client = application.test_client()
    token = f"/t/{SLUG}/token"
    form = {"grant_type": "authorization_code", "code": "not-a-code",
            "redirect_uri": "http://portal.test/x", "code_verifier": "v" * 43}
    for address in ("192.0.2.20", "192.0.2.21"):  # a portal runs on several hosts
        refused = client.post(token, data=form, headers=basic("demo-portal", PORTAL_SECRET),
                              environ_base={"REMOTE_ADDR": address})
        assert refused.status_code == 400  # a bad code, but the call counted
    throttled = client.post(token, data=form, headers=basic("demo-portal", PORTAL_SECRET))
    assert throttled.status_code == 429
    assert throttled.get_json()["error"] == "temporarily_unavailable"
    assert throttled.headers["Retry-After"] and throttled.headers["Cache-Control"] == "no-store"
    # Another tenant's portal of the same name is another client.
    other = client.post("/t/aaro-vand/token", data=form,
                        headers=basic("demo-portal", PORTAL_SECRET))
    assert other.status_code == 400


def test_unknown_client_ids_count_per_address_and_cannot_spend_a_portals_allowance(make_app):
    application = make_app(throttle_settings(oidc={"per_client": "2/minute"}))
    client = application.test_client()
    token = f"/t/{SLUG}/token"
    for i in range(3):
        last = client.post(token, data={"grant_type": "client_credentials"},
                           headers=basic(f"made-up-{i}", "x"),
                           environ_base={"REMOTE_ADDR": "192.0.2.30"})
    assert last.status_code == 429
    portal = client.post(token, data={"grant_type": "client_credentials"},
                         headers=basic("demo-portal", PORTAL_SECRET),
                         environ_base={"REMOTE_ADDR": "192.0.2.30"})
    assert portal.status_code != 429


# --- configuration -------------------------------------------------------------------------


def test_a_section_keeps_its_defaults_for_what_it_does_not_name_and_bad_limits_are_named():
    config = make_config("sqlite://", throttle={"login": {"per_address": "5/minute"}})
    assert config.throttle.login.per_address == "5/minute"
    assert config.throttle.login.per_target == "10/minute"
    assert make_config("sqlite://").throttle.oidc.per_client is None  # off by default
    with pytest.raises(ConfigError, match=r"throttle\.login\.per_target"):
        make_config("sqlite://", throttle={"login": {"per_target": "lots"}})
    with pytest.raises(ConfigError, match=r"throttle\.logn"):
        parse_config({"secret_key": "s" * 32, "hmac_key": "h" * 32,
                      "throttle": {"logn": {}}})


def test_throttles_can_be_turned_off(make_app):
    application = make_app({"enabled": False, "login": {"per_address": "1/minute"}})
    client = application.test_client()
    for _ in range(3):
        answer = post_from(client, "192.0.2.40", f"/t/{SLUG}/login", email=KNOWN, password="")
    assert answer.status_code == 400


def test_without_redis_each_broker_process_counts_on_its_own(make_app):
    settings = throttle_settings(login={"per_address": "1/minute"})
    first, second = make_app(settings).test_client(), make_app(settings).test_client()
    login = f"/t/{SLUG}/login"
    assert post_from(first, "192.0.2.50", login, email=KNOWN, password="").status_code == 400
    assert post_from(second, "192.0.2.50", login, email=KNOWN, password="").status_code == 400


# --- Redis -----------------------------------------------------------------------------------


@pytest.fixture
def redis_server():
    server = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        server.ping()
    except redis.RedisError as error:
        server.close()
        if IN_CI:
            pytest.fail(f"CI=true but Redis is not reachable at {REDIS_URL}: {error}")
        pytest.skip(f"Redis not reachable at {REDIS_URL} ({error})")
    yield server
    server.close()


def test_two_brokers_on_one_redis_share_the_limit_and_no_key_holds_an_email(
    make_app, redis_server
):
    settings = throttle_settings(login={"per_address": "", "per_target": "2/minute"})
    prefix = settings["key_prefix"]
    first = make_app(settings, redis_url=REDIS_URL).test_client()
    second = make_app(settings, redis_url=REDIS_URL).test_client()
    login = f"/t/{SLUG}/login"
    try:
        assert post_from(first, "192.0.2.60", login, email=KNOWN, password="").status_code == 400
        assert post_from(second, "192.0.2.61", login, email=KNOWN,
                         password="").status_code == 400
        assert post_from(first, "192.0.2.62", login, email=KNOWN, password="").status_code == 429
        assert post_from(second, "192.0.2.63", login, email=KNOWN,
                         password="").status_code == 429
        keys = [key.decode() for key in redis_server.scan_iter(match=f"*{prefix}*")]
        assert keys, "the counters live in Redis"
        assert not any("kari" in key or "example" in key or "192.0.2" in key for key in keys)
    finally:
        for key in redis_server.scan_iter(match=f"*{prefix}*"):
            redis_server.delete(key)


def test_when_redis_stops_answering_logins_go_on_with_counters_in_memory(make_app):
    settings = throttle_settings(login={"per_address": "2/minute"})
    application = make_app(settings, redis_url="redis://127.0.0.1:9/0")  # nothing listens
    client = application.test_client()
    login = f"/t/{SLUG}/login"
    answers = [post_from(client, "192.0.2.70", login, email=KNOWN, password="").status_code
               for _ in range(3)]
    assert answers == [400, 400, 429]


# --- forgot PIN: per contact, and the SMS caps behind it -------------------------------------


@pytest.fixture
def customers(database_url):
    broker = Broker(database_url)
    broker.load(SLUG, customer_rows(4))  # +47 90000000 .. +47 90000003 on record
    yield broker
    broker.close()


def test_forgot_pin_is_throttled_per_phone_however_typed_and_alike_for_strangers(
    make_app, customers
):
    settings = throttle_settings(forgot_pin={"per_address": "", "per_target": "2/minute"})
    application = create_app(make_config(customers.config.database_url, throttle=settings))
    client = application.test_client()
    url = f"/t/{SLUG}/forgot-pin"
    try:
        answers = {}
        for phone in ("+4790000001", "+4741234567"):  # on record, and not
            post_from(client, "192.0.2.90", url, channel="sms", phone=phone)
            post_from(client, "192.0.2.91", url, channel="sms", phone=f"{phone[3:6]} {phone[6:]}")
            answers[phone] = post_from(client, "192.0.2.92", url, channel="sms", phone=phone)
        on_record, stranger = answers.values()
        assert on_record.status_code == stranger.status_code == 429
        assert on_record.get_data() == stranger.get_data()
        # The email channel is another contact with its own allowance.
        assert post_from(client, "192.0.2.92", url, channel="email",
                         email="kunde1@example.no").status_code == 200
        with customers.session() as db:
            assert len(db.scalars(select(OutboxMessage).where(
                OutboxMessage.channel == "sms")).all()) == 2
    finally:
        application.extensions["broker"].engine.dispose()


def test_past_the_tenants_hourly_sms_cap_the_forgot_pin_page_answers_the_same_and_sends_nothing(
    customers,
):
    config = make_config(customers.config.database_url,
                         messaging={"sms": {"max_per_tenant_per_hour": 2}})
    application = create_app(config)
    client = application.test_client()
    try:
        answers = [post_from(client, f"192.0.2.{100 + i}", f"/t/{SLUG}/forgot-pin",
                             channel="sms", phone=f"+47 9000000{i}") for i in (1, 2, 3)]
        assert {a.status_code for a in answers} == {200}
        assert answers[0].get_data() == answers[1].get_data() == answers[2].get_data()
        with customers.session() as db:
            sent = db.scalars(select(OutboxMessage.recipient)).all()
            assert sorted(sent) == ["+4790000001", "+4790000002"]
            reasons = db.scalars(
                select(AuditEvent.reason).where(AuditEvent.event == "forgot_pin_requested")
                .order_by(AuditEvent.id)
            ).all()
            assert reasons == ["sent", "sent", "sms_limited"]
    finally:
        application.extensions["broker"].engine.dispose()
