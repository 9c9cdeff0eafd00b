"""Profile: name and phone, an email change verified before it replaces the old address, and
a password change that needs the current password and ends other sessions."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from broker.models import LoginSession, User
from flows import links, profile

from .accounts_support import (
    GOOD_PASSWORD,
    NO,
    db_session,
    last_mail,
    link_in,
    log_in,
    mails_to,
    register,
    register_and_activate,
    running_app,
    user,
)

EMAIL = "kari@example.no"
NEW_EMAIL = "kari.ny@example.no"


@pytest.fixture
def broker_app(sqlite_url):  # type: ignore[no-untyped-def]
    yield from running_app(sqlite_url)

def _logged_in(app):  # type: ignore[no-untyped-def]
    return register_and_activate(app, NO, EMAIL)


def test_the_profile_needs_a_login(broker_app):
    response = broker_app.test_client().get(f"/t/{NO}/profile")
    assert response.status_code == 302 and response.location.endswith(f"/t/{NO}/login")


def test_name_and_phone_change_and_a_bad_phone_is_refused(broker_app):
    client = _logged_in(broker_app)
    page = client.get(f"/t/{NO}/profile").get_data(as_text=True)
    assert "Kari Nordmann" in page and "No other logins are linked" in page
    bad = client.post(f"/t/{NO}/profile", data={"action": "details", "name": "Kari N",
                                                "phone": "abc"})
    assert bad.status_code == 400 and 'id="phone-error"' in bad.get_data(as_text=True)
    ok = client.post(f"/t/{NO}/profile", data={"action": "details", "name": "Kari N",
                                               "phone": "+47 912 34 567"})
    assert ok.status_code == 302
    stored = user(broker_app, EMAIL)
    assert (stored.name, stored.phone) == ("Kari N", "+4791234567")


def test_a_new_email_is_verified_before_it_replaces_the_old_and_the_old_is_told(broker_app):
    client = _logged_in(broker_app)
    client.post(f"/t/{NO}/profile", data={"action": "email", "new_email": NEW_EMAIL,
                                          "email_current_password": GOOD_PASSWORD})
    assert user(broker_app, EMAIL) is not None  # unchanged until confirmed
    link = link_in(last_mail(broker_app, NEW_EMAIL))
    other_browser = broker_app.test_client()
    assert other_browser.get(link).status_code == 200
    assert user(broker_app, EMAIL) is not None  # a GET (mail scanner) changes nothing
    assert other_browser.post(link).status_code == 200
    changed = user(broker_app, NEW_EMAIL)
    assert changed is not None and changed.email_verified
    notice = last_mail(broker_app, EMAIL)
    assert "k***@example.no" in notice.body_text and NEW_EMAIL not in notice.body_text
    assert other_browser.post(link).status_code == 410  # single use
    assert log_in(broker_app.test_client(), NO, NEW_EMAIL).status_code == 302


def test_an_address_of_another_account_cannot_be_taken_over(broker_app):
    client = _logged_in(broker_app)
    register(broker_app.test_client(), NO, "other@example.no", name="Ola")
    client.post(f"/t/{NO}/profile", data={"action": "email", "new_email": "other@example.no",
                                          "email_current_password": GOOD_PASSWORD})
    link = link_in(last_mail(broker_app, "other@example.no"))
    assert broker_app.test_client().post(link).status_code == 409
    assert user(broker_app, EMAIL) is not None


def test_a_name_is_saved_on_one_line(broker_app):
    """It reaches other people's email (an invitation): no line breaks of the user's own."""
    client = _logged_in(broker_app)
    answer = client.post(f"/t/{NO}/profile", data={
        "action": "details", "name": "Kari\n\nYour account will be closed.\r\n", "phone": ""})
    assert answer.status_code == 302
    assert user(broker_app, EMAIL).name == "Kari Your account will be closed."


def test_a_stolen_session_alone_cannot_ask_for_a_new_email_address(broker_app):
    """The new address would take "forgot password" with it: the current password is asked
    for, and its guesses count with the password change's."""
    client = _logged_in(broker_app)
    without = client.post(f"/t/{NO}/profile", data={"action": "email", "new_email": NEW_EMAIL})
    wrong = client.post(f"/t/{NO}/profile", data={"action": "email", "new_email": NEW_EMAIL,
                                                  "email_current_password": "Not-The-One-1"})
    assert without.status_code == 401 and wrong.status_code == 401
    assert 'id="email_current_password-error"' in wrong.get_data(as_text=True)
    assert not mails_to(broker_app, NEW_EMAIL)  # nothing was sent
    # a third wrong guess locks, as the password change's lockout does (3 tries by default);
    # then the right password is refused too
    client.post(f"/t/{NO}/profile", data={"action": "email", "new_email": NEW_EMAIL,
                                          "email_current_password": "Not-The-One-2"})
    locked = client.post(f"/t/{NO}/profile", data={
        "action": "email", "new_email": NEW_EMAIL, "email_current_password": GOOD_PASSWORD})
    assert locked.status_code == 429
    assert not mails_to(broker_app, NEW_EMAIL)


def test_email_change_links_go_out_once_per_cooldown(sqlite_url):
    """Each link is an email to any address the user types: not a mail cannon."""
    for broker_app in running_app(sqlite_url, fjordvarme={"resend_cooldown_seconds": 60}):
        client = _logged_in(broker_app)
        asks = [client.post(f"/t/{NO}/profile", data={
            "action": "email", "new_email": f"victim{i}@example.org",
            "email_current_password": GOOD_PASSWORD}) for i in range(3)]
        assert [answer.status_code for answer in asks] == [302, 429, 429]
        assert "Please wait a minute" in asks[1].get_data(as_text=True)
        assert [len(mails_to(broker_app, f"victim{i}@example.org"))
                for i in range(3)] == [1, 0, 0]


def test_a_password_reset_spends_a_pending_change_of_address(broker_app):
    """Whoever held the session asked to move the account to their address; the owner resets
    the password: the link that would have moved it must be dead."""
    client = _logged_in(broker_app)
    client.post(f"/t/{NO}/profile", data={"action": "email", "new_email": NEW_EMAIL,
                                          "email_current_password": GOOD_PASSWORD})
    change_link = link_in(last_mail(broker_app, NEW_EMAIL))
    owner = broker_app.test_client()
    owner.post(f"/t/{NO}/forgot-password", data={"email": EMAIL})
    reset_link = link_in(last_mail(broker_app, EMAIL))
    new = "Helt-Nytt-Pass-9"
    assert owner.post(reset_link, data={"password": new, "password_confirmation": new}
                      ).status_code in (200, 302)
    assert broker_app.test_client().post(change_link).status_code == 410
    assert user(broker_app, EMAIL) is not None and user(broker_app, NEW_EMAIL) is None


def test_password_change_needs_the_current_password_and_ends_other_sessions(broker_app):
    client = _logged_in(broker_app)
    other = broker_app.test_client()
    assert log_in(other, NO, EMAIL).status_code == 302
    new = "Helt-Nytt-Pass-9"
    wrong = client.post(f"/t/{NO}/profile", data={
        "action": "password", "current_password": "not-it", "password": new,
        "password_confirmation": new})
    assert wrong.status_code == 400 and "current password is not correct" in wrong.get_data(
        as_text=True)
    mismatch = client.post(f"/t/{NO}/profile", data={
        "action": "password", "current_password": GOOD_PASSWORD, "password": new,
        "password_confirmation": new + "x"})
    assert mismatch.status_code == 400
    assert "The two passwords must be the same." in mismatch.get_data(as_text=True)
    done = client.post(f"/t/{NO}/profile", data={
        "action": "password", "current_password": GOOD_PASSWORD, "password": new,
        "password_confirmation": new})
    assert done.status_code == 302
    assert client.get(f"/t/{NO}/profile").status_code == 200  # this session stays
    assert other.get(f"/t/{NO}/profile").status_code == 302  # the other one ended
    with db_session(broker_app) as session:
        live = session.scalars(select(LoginSession).where(LoginSession.revoked_at.is_(None)))
        assert len(list(live)) == 1
    assert log_in(broker_app.test_client(), NO, EMAIL, new).status_code == 302


def test_two_accounts_confirming_one_new_address_at_once_get_taken_not_a_server_error(
        broker_app, monkeypatch):
    """The second confirmation passes the check before the first commits: the unique index
    refuses it, and the answer is the calm 'taken'."""
    register_and_activate(broker_app, NO, "ola@example.no")
    first = _logged_in(broker_app)
    first.post(f"/t/{NO}/profile", data={"action": "email", "new_email": NEW_EMAIL,
                                         "email_current_password": GOOD_PASSWORD})
    first_link = link_in(last_mail(broker_app, NEW_EMAIL))
    assert broker_app.test_client().post(first_link).status_code == 200  # Kari has it now
    state = broker_app.extensions["broker"]
    with db_session(broker_app) as db:
        ola = db.scalar(select(User).where(User.email == "ola@example.no"))
        token = links.issue(db, tenant=NO, user_id=ola.id, purpose=profile.EMAIL_CHANGE,
                            target=NEW_EMAIL, ttl=profile.EMAIL_CHANGE_TTL)
        db.commit()
    monkeypatch.setattr(profile, "_held_by_another", lambda *args: False)  # the race's window
    with db_session(broker_app) as db:
        answer = profile.confirm_email_change(db, state.config.tenants[NO], token,
                                              source_address=None)
    assert answer == "taken"
    assert user(broker_app, "ola@example.no") is not None
