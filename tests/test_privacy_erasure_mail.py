"""Erasure and the mail that named the person: the notice sent to a former address, and an
invitation that never went out (a review found both left behind)."""

from __future__ import annotations

from sqlalchemy import select

from broker.models import Binding, CustomerAccount, OutboxMessage, User
from flows import delegation, profile
from flows.privacy import erase_account

from .accounts_support import running_app
from .privacy_support import NO, add_person


def _mail(app) -> list[OutboxMessage]:  # type: ignore[no-untyped-def]
    with app.extensions["broker"].sessions() as db:
        return list(db.scalars(select(OutboxMessage)))


def _erase(app, user_id: int) -> None:  # type: ignore[no-untyped-def]
    state = app.extensions["broker"]
    with state.sessions() as db, db.begin():
        erase_account(db, state.config.tenants[NO], db.get(User, user_id),
                      hmac_key=state.config.hmac_key, actor_type="user", actor_id=user_id)


def test_the_notice_to_a_former_address_goes_with_the_person(database_url):
    for app in running_app(database_url):
        state = app.extensions["broker"]
        tenant = state.config.tenants[NO]
        with state.sessions() as db, db.begin():
            user_id = add_person(db, state.config, NO, "kari.old@example.no", "Kari").id
        with state.sessions() as db:
            assert profile.request_email_change(
                db, tenant, db.get(User, user_id), "kari.new@example.no",
                public_url="http://broker.test", source_address=None) is None
            [link] = [m for m in _mail(app) if m.recipient == "kari.new@example.no"]
            token = link.body_text.split("/profile/email/")[1].split()[0]
            assert profile.confirm_email_change(db, tenant, token, source_address=None) == "changed"
        assert "kari.old@example.no" in {m.recipient for m in _mail(app)}  # the notice

        _erase(app, user_id)
        assert _mail(app) == []


def test_an_unsent_invitation_naming_an_erased_owner_is_dropped_not_kept_for_a_retry(
        database_url):
    """A dead message can be sent again by support: it must not carry the name, escaped in
    its HTML part or not."""
    for app in running_app(database_url):
        state = app.extensions["broker"]
        tenant = state.config.tenants[NO]
        with state.sessions() as db, db.begin():
            owner = add_person(db, state.config, NO, "siobhan@example.no", "Siobhán O'Brien")
            account = CustomerAccount(tenant=NO, number="700555", kind="private")
            db.add(account)
            db.flush()
            db.add(Binding(user_id=owner.id, customer_account_id=account.id, role="owner",
                           proof="pin"))
            owner_id, account_id = owner.id, account.id
        with state.sessions() as db, db.begin():
            assert delegation.invite(db, tenant, "http://broker.test", db.get(User, owner_id),
                                     account_id, "brother@example.org", "en").ok
        with state.sessions() as db, db.begin():
            [message] = db.scalars(select(OutboxMessage)).all()
            assert "O&#39;Brien" in (message.body_html or "")
            message.status, message.last_error = "dead", "SMTP 550"

        _erase(app, owner_id)
        assert _mail(app) == []
