"""The forgot customer number / PIN page (seed 001): same answer for matched and unmatched
input, the PIN only to the contact on record, a clear error for an impossible mobile number."""

from __future__ import annotations

import io
import re
import time

import pytest
from sqlalchemy import func, select

from broker import login_session
from broker.app import create_app
from broker.customers.importer import import_stream
from broker.models import AuditEvent, OutboxMessage, User
from broker.security import new_token
from broker.views import forgot_pin as forgot_pin_views

from .accounts_support import without_csrf
from .conftest import make_config
from .customers_support import as_csv, customer_rows

SLUG = "fjordvarme"
PAGE = f"/t/{SLUG}/forgot-pin"
KARI = customer_rows(3)[1]  # customer 100001, Kunde1@Example.NO, +47 90000001


def _app(database_url: str, **overrides):  # type: ignore[no-untyped-def]
    application = create_app(make_config(database_url, csrf_protection=True, **overrides))
    application.config["TESTING"] = True
    state = application.extensions["broker"]
    import_stream(state.engine, state.config.tenants[SLUG], state.config.hmac_key,
                  io.StringIO(as_csv(customer_rows(3))), "csv")
    return application


@pytest.fixture
def app(database_url):  # type: ignore[no-untyped-def]
    application = _app(database_url)
    yield application
    application.extensions["broker"].engine.dispose()


@pytest.fixture
def sqlite_app(sqlite_url):  # type: ignore[no-untyped-def]
    application = _app(sqlite_url)
    yield application
    application.extensions["broker"].engine.dispose()


def _ask(client, **fields: str):  # type: ignore[no-untyped-def]
    """Fill in the page as a browser would: the CSRF token comes from the form."""
    page = client.get(PAGE).get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    return client.post(PAGE, data={"csrf_token": token, **fields})


def _outbox(app) -> list[OutboxMessage]:  # type: ignore[no-untyped-def]
    with app.extensions["broker"].sessions() as db:
        return list(db.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))


def test_the_form_asks_for_email_mobile_and_an_optional_customer_number_with_two_buttons(
    sqlite_app,
):
    page = sqlite_app.test_client().get(PAGE).get_data(as_text=True)
    assert 'name="email"' in page and 'name="phone"' in page and 'name="customer_number"' in page
    assert "Customer number (optional)" in page
    assert '<button type="submit" name="channel" value="email">' in page
    assert '<button type="submit" name="channel" value="sms">' in page
    assert re.search(r'name="csrf_token" value="[^"]+"', page)
    assert "+47 63 82 33 50" in page  # or call customer service, as the seed says


@pytest.mark.parametrize(
    ("channel", "matched", "unmatched", "recipient"),
    [
        ("email", {"email": " KUNDE1@example.no "}, {"email": "stranger@example.no"},
         "kunde1@example.no"),
        ("sms", {"phone": "900 00 001"}, {"phone": "+47 41 23 45 67"}, "+4790000001"),
    ],
)
def test_a_matching_and_an_unknown_contact_get_byte_identical_pages(
    app, channel, matched, unmatched, recipient
):
    client = app.test_client()
    stranger = _ask(client, channel=channel, **unmatched)
    assert _outbox(app) == []
    customer = _ask(client, channel=channel, **matched)
    assert stranger.status_code == customer.status_code == 200
    assert without_csrf(stranger.get_data()) == without_csrf(customer.get_data())
    assert "Request received" in customer.get_data(as_text=True)
    [message] = _outbox(app)
    assert (message.channel, message.recipient) == (channel, recipient)
    assert "100001" in message.body_text


def test_a_customer_and_a_stranger_wait_alike_for_the_answer(app):
    """A match writes new PINs and a message, a stranger's request nothing: every answer is
    held to EVEN_ANSWER_SECONDS, so that its time does not tell them apart (a review measured
    8.6 against 4.6 ms; a handful of tries per contact and hour told them apart)."""
    client = app.test_client()

    def seconds(email: str) -> float:
        started = time.perf_counter()
        assert _ask(client, channel="email", email=email).status_code == 200
        return time.perf_counter() - started

    for email in ("kunde1@example.no", "stranger@example.no"):  # both paths warm
        seconds(email)
    customer = [seconds("kunde1@example.no") for _ in range(3)]
    stranger = [seconds("stranger@example.no") for _ in range(3)]
    floor = forgot_pin_views.EVEN_ANSWER_SECONDS
    # No answer comes sooner than the floor (an upper bound would test the machine's load).
    assert min(customer) >= floor and min(stranger) >= floor


def test_a_customer_number_that_is_not_the_contacts_gets_the_same_page_and_nothing_is_sent(
    sqlite_app,
):
    client = sqlite_app.test_client()
    other = _ask(client, channel="email", email=KARI["email"], customer_number="100002")
    nobody = _ask(client, channel="email", email="stranger@example.no")
    assert without_csrf(other.get_data()) == without_csrf(nobody.get_data())
    assert _outbox(sqlite_app) == []
    _ask(client, channel="email", email=KARI["email"], customer_number="100 001")
    assert len(_outbox(sqlite_app)) == 1


def test_sms_is_sent_only_to_the_number_on_record_even_when_the_email_matches(sqlite_app):
    response = _ask(sqlite_app.test_client(), channel="sms", email=KARI["email"],
                    phone="+47 41 23 45 67")
    assert response.status_code == 200
    assert _outbox(sqlite_app) == []


def test_an_impossible_mobile_number_is_an_error_on_the_mobile_field_and_nothing_is_sent(
    sqlite_app,
):
    response = _ask(sqlite_app.test_client(), channel="sms", phone="12ab", customer_number="7")
    page = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "This is not a valid mobile number" in page
    assert 'aria-invalid="true" aria-describedby="phone-error"' in page
    assert 'id="phone-error"' in page and 'id="email-error"' not in page
    assert 'value="12ab"' in page and 'value="7"' in page  # what was typed stays
    assert _outbox(sqlite_app) == []


def test_email_chosen_without_an_email_address_is_an_error_on_the_email_field(sqlite_app):
    response = _ask(sqlite_app.test_client(), channel="email", phone=KARI["phone"])
    assert response.status_code == 400
    assert 'id="email-error"' in response.get_data(as_text=True)
    assert _outbox(sqlite_app) == []


def test_a_request_without_the_csrf_token_is_refused_and_sends_nothing(sqlite_app):
    response = sqlite_app.test_client().post(PAGE, data={"channel": "email",
                                                         "email": KARI["email"]})
    assert response.status_code == 400
    assert _outbox(sqlite_app) == []


def test_past_the_sms_cap_the_page_stays_the_same_and_no_more_sms_go_out(sqlite_url):
    # The page's own throttle would answer first (tests/test_throttle.py); here the SMS cap.
    sqlite_app = _app(sqlite_url, throttle={"forgot_pin": {"per_address": "", "per_target": ""}})
    client = sqlite_app.test_client()
    cap = sqlite_app.extensions["broker"].config.messaging.sms.max_per_number_per_hour
    pages = {without_csrf(_ask(client, channel="sms", phone=KARI["phone"]).get_data())
             for _ in range(cap + 1)}
    assert len(pages) == 1
    assert len(_outbox(sqlite_app)) == cap
    with sqlite_app.extensions["broker"].sessions() as db:
        reasons = db.scalars(select(AuditEvent.reason).where(
            AuditEvent.event == "forgot_pin_requested")).all()
    assert reasons.count("sms_limited") == 1


def test_the_binding_form_the_registration_form_and_the_login_page_link_to_it(sqlite_app):
    client = sqlite_app.test_client()
    for path in (f"/t/{SLUG}/register", f"/t/{SLUG}/login"):
        assert f'href="{PAGE}"' in client.get(path).get_data(as_text=True), path
    state = sqlite_app.extensions["broker"]
    with state.sessions() as db, db.begin():
        user = User(tenant=SLUG, subject=new_token(16), email="kari@example.no",
                    email_verified=True, status="active")
        db.add(user)
        db.flush()
        _, token = login_session.start(db, state.config.tenants[SLUG], user, amr=["pwd"])
    client.set_cookie(login_session.cookie_name(SLUG), token, path=f"/t/{SLUG}")
    page = client.get(f"/t/{SLUG}/customer-accounts").get_data(as_text=True)
    assert f'href="{PAGE}"' in page


def test_a_tenant_that_takes_no_pin_has_no_forgot_pin_page(sqlite_app):
    client = sqlite_app.test_client()
    assert client.get("/t/aaro-vand/forgot-pin").status_code == 404
    assert "/forgot-pin" not in client.get("/t/aaro-vand/login").get_data(as_text=True)
    with sqlite_app.extensions["broker"].sessions() as db:
        assert db.scalar(select(func.count(OutboxMessage.id))) == 0
