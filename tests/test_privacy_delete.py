"""Delete my account: fresh proof first, then nothing left that names the person."""

from __future__ import annotations

import threading

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet
from werkzeug import Request, Response

from broker.models import AuditEvent, Binding, User

from .accounts_support import running_app
from .live import serve_wsgi
from .privacy_support import NO, PASSWORD, add_person, logged_in, rich_account, rows_naming

KARI = ["kari@example.no", "Kari Nordmann", "+4791234567", "kari.mitid@example.no",
        "Kari N. (MitID)"]


class Portal:
    """A portal's back-channel logout endpoint over real HTTP."""

    def __init__(self) -> None:
        self.tokens: list[str] = []
        self.arrived = threading.Event()

    def __call__(self, environ, start_response):  # type: ignore[no-untyped-def]
        request = Request(environ)
        self.tokens.append(request.form.get("logout_token", ""))
        self.arrived.set()
        return Response("", 200)(environ, start_response)


@pytest.fixture
def portal():  # type: ignore[no-untyped-def]
    receiver = Portal()
    with serve_wsgi(receiver) as url:
        receiver.url = url
        yield receiver


@pytest.fixture
def app(database_url, portal):  # type: ignore[no-untyped-def]
    from broker.demo import demo_tenants

    clients = demo_tenants("x" * 40, "http://portal.test", "http://e.test")[NO]["clients"]
    clients = [{**c, "backchannel_logout_uri": f"{portal.url}/backchannel"} for c in clients]
    from .conftest import PORTAL_SECRET

    clients = [{**c, "client_secret": PORTAL_SECRET} for c in clients]
    yield from running_app(database_url, **{NO: {"clients": clients}})


def _user(app, user_id):  # type: ignore[no-untyped-def]
    with app.extensions["broker"].sessions() as db:
        return db.get(User, user_id)


def test_a_wrong_password_deletes_nothing(app):
    ids = rich_account(app)
    client = app.test_client()
    logged_in(app, client, ids["kari"])
    response = client.post(f"/t/{NO}/profile/delete",
                           data={"password": "not-my-password", "confirm": "yes"})
    assert response.status_code == 401
    assert "password is not correct" in response.get_data(as_text=True)
    assert _user(app, ids["kari"]) is not None


def test_without_the_confirmation_box_nothing_is_deleted(app):
    ids = rich_account(app)
    client = app.test_client()
    logged_in(app, client, ids["kari"])
    response = client.post(f"/t/{NO}/profile/delete", data={"password": PASSWORD})
    assert response.status_code == 400
    assert _user(app, ids["kari"]) is not None


def test_the_last_owner_is_told_what_happens_to_the_delegates_first(app):
    ids = rich_account(app)
    client = app.test_client()
    logged_in(app, client, ids["kari"])
    page = client.get(f"/t/{NO}/profile/delete").get_data(as_text=True)
    assert "Customer number 700123:" in page
    assert "1 other person loses access" in page
    assert "Your current password" in page


def test_deletion_leaves_no_row_naming_the_person_and_tells_the_portal(app, portal):
    ids = rich_account(app)
    client = app.test_client()
    logged_in(app, client, ids["kari"])
    assert rows_naming(app, KARI)  # the scan does find her before
    response = client.post(f"/t/{NO}/profile/delete",
                           data={"password": PASSWORD, "confirm": "yes"})
    assert response.status_code == 200
    assert "Your account is deleted" in response.get_data(as_text=True)
    assert f"bsid_{NO}=;" in response.headers.get("Set-Cookie", "")

    assert rows_naming(app, KARI) == []
    state = app.extensions["broker"]
    with state.sessions() as db:
        assert db.get(User, ids["kari"]) is None
        erased = db.query(AuditEvent).filter_by(event="account_erased",
                                                target_user_id=ids["kari"]).one()
        assert erased.actor_type == "user"
        assert erased.details["portals_notified"] == ["demo-portal"]
        # Her older records stay, pseudonymised: the id, and "[erased]" where she was named.
        support = db.query(AuditEvent).filter_by(event="password_reset_sent").one()
        assert support.target_user_id == ids["kari"]
        assert support.reason == "[erased] called from [erased]"
        assert support.details["note"] == "asked via [erased]"
        # Ola, the delegate on her account, lost his access with her; he is still there.
        assert db.query(Binding).filter_by(user_id=ids["ola"]).count() == 0
        assert db.get(User, ids["ola"]).email == "ola@example.no"

    assert portal.arrived.wait(10)
    keys = KeySet.import_key_set(state.services["keys"].ring(NO).public_jwks)
    claims = jwt.decode(portal.tokens[0], keys).claims
    assert claims["sub"] == ids["kari_subject"]
    assert claims["aud"] == "demo-portal"
    assert "http://schemas.openid.net/event/backchannel-logout" in claims["events"]


def test_the_old_session_cookie_is_dead_after_deletion(app):
    ids = rich_account(app)
    client = app.test_client()
    logged_in(app, client, ids["kari"])
    cookie = client.get_cookie(f"bsid_{NO}", path=f"/t/{NO}").value
    client.post(f"/t/{NO}/profile/delete", data={"password": PASSWORD, "confirm": "yes"})
    other = app.test_client()
    other.set_cookie(f"bsid_{NO}", cookie, path=f"/t/{NO}")
    assert other.get(f"/t/{NO}/profile/data").status_code == 302


def test_without_a_password_only_a_login_of_the_last_minutes_may_delete(app):
    state = app.extensions["broker"]
    with state.sessions() as db, db.begin():
        user_id = add_person(db, state.config, NO, "mitid-only@example.no", "Mads Mitid",
                             password=False).id
    stale = app.test_client()
    logged_in(app, stale, user_id, minutes_ago=30)
    assert "log in again" in stale.get(f"/t/{NO}/profile/delete").get_data(as_text=True)
    refused = stale.post(f"/t/{NO}/profile/delete", data={"confirm": "yes"})
    assert refused.status_code == 401
    assert _user(app, user_id) is not None

    fresh = app.test_client()
    logged_in(app, fresh, user_id, minutes_ago=1)
    assert fresh.post(f"/t/{NO}/profile/delete", data={"confirm": "yes"}).status_code == 200
    assert _user(app, user_id) is None
