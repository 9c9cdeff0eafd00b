"""Composing messages: every text in every language, escaping, and the same-transaction rule."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from broker.config import LOCALES
from broker.db import transaction
from broker.messaging.compose import (
    EMAIL_TEMPLATES,
    SMS_TEMPLATES,
    InvalidEmailAddress,
    render_email,
    render_sms,
    send_email,
)
from broker.models import OutboxMessage
from policies.names import one_line

from .conftest import make_config

SAMPLE = {
    "code": "482913",
    "minutes": 30,
    "hours": 48,
    "days": 7,
    "link": "https://broker.test/t/x/go?token=abc",
    "new_email": "ny@example.test",
    "accounts": [{"number": "100200", "pin": "7391"}, {"number": "100201", "pin": "2044"}],
    "pin_valid_days": 30,
    "inviter_name": "Kari Nordmann",
    "customer_number": "100200",
    "provider": "MitID",
}


@pytest.fixture(scope="module")
def config():
    return make_config("sqlite://")


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("template", sorted(EMAIL_TEMPLATES))
def test_every_email_reads_well_in_every_language(config, template, locale):
    tenant = config.tenants["fjordvarme"]
    context = {key: SAMPLE[key] for key in EMAIL_TEMPLATES[template]}
    subject, text, html = render_email(tenant, template, locale, **context)
    assert subject and "\n" not in subject
    assert "{{" not in text and "{%" not in text
    assert "Fjordvarme AS" in text and "+47 63 82 33 50" in text
    for key in EMAIL_TEMPLATES[template]:
        if key == "accounts":
            assert "100201" in text and "2044" in text
        else:
            assert str(SAMPLE[key]) in text
    assert html.startswith("<!doctype html>") and f'lang="{locale}"' in html
    if "link" in context:
        assert f'<a href="{SAMPLE["link"]}">' in html


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("template", sorted(SMS_TEMPLATES))
def test_every_sms_is_short_and_localized(config, template, locale):
    tenant = config.tenants["fjordvarme"]
    context = {key: SAMPLE[key] for key in SMS_TEMPLATES[template]}
    text = render_sms(tenant, template, locale, **context)
    assert "\n" not in text and len(text) <= 160
    assert ("482913" in text) if template == "code" else ("7391" in text)


def test_each_language_has_its_own_text(config):
    tenant = config.tenants["stadsenergi"]
    subjects = {
        locale: render_email(tenant, "activation_code", locale, code="1", minutes=5)[0]
        for locale in LOCALES
    }
    assert subjects["sv"] == "Din aktiveringskod"
    assert subjects["fi"] == "Aktivointikoodisi"
    assert len(set(subjects.values())) >= 5  # da and nb may agree


def test_a_language_without_texts_falls_back_to_english(config):
    subject, text, _ = render_email(config.tenants["norrnat"], "activation_code", "de",
                                    code="1", minutes=5)
    assert subject == "Your activation code"
    assert "Best regards" in text


def test_a_flow_that_forgets_a_value_is_told_which(config):
    with pytest.raises(TypeError, match="link"):
        render_email(config.tenants["norrnat"], "password_reset", "sv", minutes=5)
    with pytest.raises(ValueError, match="unknown email template"):
        render_email(config.tenants["norrnat"], "no_such_mail", "sv")


def test_names_typed_by_users_cannot_inject_markup_into_the_html_part(config):
    _, text, html = render_email(
        config.tenants["norrnat"], "invitation", "sv", inviter_name="<img src=x onerror=alert(1)>",
        customer_number="1", link="https://broker.test/i?a=1&b=2", days=7,
    )
    assert "<img src=x onerror=alert(1)>" in text  # plain text stays as typed
    assert "<img" not in html and "&lt;img src=x" in html


@pytest.mark.parametrize("written", [
    "Kari\n\nYour account will be closed. Confirm your card at "
    "https://fjordvarme-payments.example/login\n\n",
    "Kari (www.fjordvarme-payments.example)",
    "Kari, write to support@fjordvarme-payments.example",
    "Kari fjordvarme-payments.example/login",
])
def test_a_name_cannot_lay_out_paragraphs_or_carry_a_link_into_an_email(config, written):
    """The invitation goes out from the utility's own address to anyone; the owner chose
    their name (or an upstream's profile did). It stays one line with nothing to click."""
    _, text, html = render_email(
        config.tenants["norrnat"], "invitation", "en", inviter_name=written,
        customer_number="1", link="https://broker.test/i?a=1&b=2", days=7,
    )
    assert "fjordvarme-payments" not in text and "fjordvarme-payments" not in html
    assert "Kari" in text and "\n\nYour account" not in text
    assert html.count("<a href=") == 1  # the invitation's own link only


def test_names_are_kept_on_one_line_wherever_they_come_in():
    assert one_line("  Kari\n\n Nordmann\t\u202eX\x00 ") == "Kari Nordmann X"
    assert one_line("José María O'Brien") == "José María O'Brien"


@pytest.mark.parametrize(
    "address", ["kunde@example.test\r\nBcc: all@example.test", "no-at-sign", "a@b", "@x.test"]
)
def test_a_bad_recipient_address_is_refused_before_anything_is_queued(sqlite_url, address):
    from broker.app import create_app

    state = create_app(make_config(sqlite_url)).extensions["broker"]
    with pytest.raises(InvalidEmailAddress), transaction(state.sessions) as db:
        send_email(db, state.config.tenants["norrnat"], address, "activation_code", "sv",
                   code="1", minutes=5)


def test_a_message_exists_only_if_the_change_that_caused_it_was_committed(sqlite_url):
    from broker.app import create_app

    state = create_app(make_config(sqlite_url)).extensions["broker"]
    tenant = state.config.tenants["aaro-vand"]

    class FlowFailed(Exception):
        pass

    with pytest.raises(FlowFailed), transaction(state.sessions) as db:
        send_email(db, tenant, "kunde@example.test", "activation_code", "da", code="1", minutes=5)
        raise FlowFailed
    with transaction(state.sessions) as db:
        send_email(db, tenant, "kunde@example.test", "activation_code", "da", code="2", minutes=5)

    with state.sessions() as db:
        assert db.scalar(select(func.count(OutboxMessage.id))) == 1
        message = db.scalars(select(OutboxMessage)).one()
    assert message.sender_name == "Aarø Vand & Affald" and "    2\n" in message.body_text
