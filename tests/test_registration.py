"""Registration: the form, what is stored, and that a known address learns nothing."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from broker.models import User, Verification

from .accounts_support import (
    ES,
    GOOD_PASSWORD,
    NO,
    db_session,
    mails_to,
    register,
    running_app,
    user,
    without_csrf,
)


@pytest.fixture
def broker_app(sqlite_url):  # type: ignore[no-untyped-def]
    yield from running_app(sqlite_url)

def test_the_form_shows_the_password_rules_before_the_user_types(broker_app):
    page = broker_app.test_client().get("/t/stadsenergi/register").get_data(as_text=True)
    assert "Use at least 10 characters." in page
    assert "Do not use 3 characters in a row from your name or email address." in page
    assert 'autocomplete="new-password"' in page and 'autocomplete="email"' in page
    assert 'name="csrf_token"' in page


def test_a_new_account_is_pending_with_the_accepted_privacy_version_and_e_bill_choice(broker_app):
    response = register(broker_app.test_client(), NO, "  Kari@Example.NO ", phone="912 34 567",
                        ebill="on")
    assert response.status_code == 200
    assert "Check your email" in response.get_data(as_text=True)
    stored = user(broker_app, "kari@example.no")
    assert stored is not None and stored.status == "pending" and not stored.email_verified
    assert stored.phone == "+4791234567"
    assert stored.privacy_version == "1" and stored.privacy_accepted_at is not None
    assert stored.ebill_opt_in is True
    assert len(stored.subject) == 32 and stored.password_hash.startswith("$argon2id$")
    assert len(mails_to(broker_app, "kari@example.no")) == 1


def test_every_unmet_password_rule_is_listed_and_nothing_is_created(broker_app):
    response = register(broker_app.test_client(), "stadsenergi", "anna.berg@example.fi",
                        name="Anna Berg", password="annaberg")
    page = response.get_data(as_text=True)
    assert response.status_code == 400
    for message in ("Use at least 10 characters.", "Include at least 1 upper-case letter.",
                    "Include at least 1 digit.", "Do not use 3 characters in a row"):
        assert message in page
    assert 'aria-describedby="password-rules password-error"' in page
    assert user(broker_app, "anna.berg@example.fi") is None


def test_missing_privacy_acceptance_and_a_bad_phone_are_tied_to_their_fields(broker_app):
    client = broker_app.test_client()
    response = client.post(f"/t/{NO}/register", data={
        "email": "x@example.no", "name": "X", "phone": "12", "password": GOOD_PASSWORD,
        "password_confirmation": GOOD_PASSWORD})
    page = response.get_data(as_text=True)
    assert response.status_code == 400
    assert 'aria-describedby="phone-error"' in page and 'id="phone-error"' in page
    assert 'id="privacy-error"' in page
    assert user(broker_app, "x@example.no") is None


def test_registering_a_known_address_gives_the_same_page_and_creates_nothing(broker_app):
    client = broker_app.test_client()
    first = register(client, NO, "kari@example.no")
    again = register(client, NO, "kari@example.no", password="Another-Pass-42",
                     name="Someone Else")
    fresh = register(client, NO, "ola@example.no", password="Another-Pass-42",
                     name="Someone Else")
    assert first.status_code == again.status_code == fresh.status_code == 200
    page = without_csrf(again.get_data())
    assert page == without_csrf(fresh.get_data()).replace(b"ola@example.no", b"kari@example.no")
    with db_session(broker_app) as session:
        assert session.scalar(select(func.count(User.id)).where(
            User.email == "kari@example.no")) == 1
        assert session.scalar(select(User.name).where(User.email == "kari@example.no")) == \
            "Kari Nordmann"
    # The owner hears about it (a fresh code, since the account is still pending).
    assert len(mails_to(broker_app, "kari@example.no")) == 2


def test_an_active_owner_gets_a_reset_link_when_someone_registers_their_address(broker_app):
    client = broker_app.test_client()
    register(client, NO, "kari@example.no")
    with db_session(broker_app) as session, session.begin():
        session.query(User).update({"status": "active"})
    register(client, NO, "kari@example.no")
    assert "reset-password" in mails_to(broker_app, "kari@example.no")[-1].body_text


def test_seed_003_registration_types_and_no_password_before_activation(broker_app):
    client = broker_app.test_client()
    page = client.get(f"/t/{ES}/register").get_data(as_text=True)
    assert 'value="company"' in page and 'value="administrator"' in page
    assert 'name="password"' not in page
    response = register(client, ES, "empresa@example.es", password=None,
                        registration_type="company")
    assert response.status_code == 200
    stored = user(broker_app, "empresa@example.es")
    assert stored.registration_type == "company" and stored.password_hash is None
    with db_session(broker_app) as session:
        assert session.scalar(select(Verification.method)) == "link"


def test_an_unknown_registration_type_is_refused(broker_app):
    response = register(broker_app.test_client(), ES, "x@example.es", password=None,
                        registration_type="superuser")
    assert response.status_code == 400
    assert user(broker_app, "x@example.es") is None


def test_a_tenant_without_password_login_has_no_registration(broker_app):
    assert broker_app.test_client().get("/t/norrnat/register").status_code == 404
