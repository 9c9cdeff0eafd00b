"""A right password's bookkeeping (attempt counter reset, last-login stamp, audit record) and
the new login session: written together, in one statement on PostgreSQL, and never lost when a
second factor comes first. On both backends, through the login page."""

from __future__ import annotations

from contextlib import contextmanager

import psycopg
import pyotp
import pytest
from sqlalchemy import event, select, update

from broker.models import AuditEvent, LoginSession, User
from broker.passwords import hasher_for

from .accounts_support import (
    GOOD_PASSWORD,
    NO,
    db_session,
    log_in,
    make_app,
    register_and_activate,
)

EMAIL = "kari@example.no"
WRONG = "Not-The-Password-1"


@pytest.fixture
def app(database_url):  # type: ignore[no-untyped-def]
    """TOTP optional: a second factor is due only once the account has a TOTP secret."""
    application = make_app(database_url, fjordvarme={"totp": "optional"})
    register_and_activate(application, NO, EMAIL)
    yield application
    application.extensions["broker"].engine.dispose()


def _account(app):  # type: ignore[no-untyped-def]
    with db_session(app) as db:
        user = db.scalar(select(User).where(User.email == EMAIL))
        sessions = db.scalars(select(LoginSession).where(LoginSession.user_id == user.id)
                              .order_by(LoginSession.id)).all()
        successes = db.scalars(select(AuditEvent).where(
            AuditEvent.event == "login_succeeded", AuditEvent.target_user_id == user.id)
            .order_by(AuditEvent.id)).all()
        return user, list(sessions), list(successes)


def _set_account(app, **values):  # type: ignore[no-untyped-def]
    with db_session(app) as db, db.begin():
        db.execute(update(User).where(User.email == EMAIL).values(**values))


@contextmanager
def _listening(app, name, listener):  # type: ignore[no-untyped-def]
    """``listener`` on the app's engine event ``name`` for the block."""
    engine = app.extensions["broker"].engine
    event.listen(engine, name, listener)
    try:
        yield
    finally:
        event.remove(engine, name, listener)


def _statements_of(app, send, transactions=None):  # type: ignore[no-untyped-def]
    """The statements ``send`` ran; ``transactions`` collects those it ran in a transaction
    (``BEGIN`` ... ``COMMIT``) rather than each on its own (autocommit)."""
    statements: list[str] = []

    def count(conn, _cursor, statement, *_args):  # type: ignore[no-untyped-def]
        statements.append(statement)
        if transactions is not None and (
                conn.get_execution_options().get("isolation_level") != "AUTOCOMMIT"):
            transactions.append(statement)

    with _listening(app, "before_cursor_execute", count):
        response = send()
    return response, [s for s in statements if not s.startswith(("BEGIN", "PRAGMA"))]


def test_a_right_password_resets_the_counter_stamps_audits_and_starts_one_session(app):
    client = app.test_client()
    for _ in range(2):
        assert log_in(client, NO, EMAIL, WRONG).status_code == 401
    before, sessions_before, audited_before = _account(app)
    assert before.failed_logins == 2

    assert log_in(client, NO, EMAIL).status_code == 302  # the third try: it also set the lock

    after, sessions, audited = _account(app)
    assert after.failed_logins == 0 and after.lock_count == 0
    assert after.locked_until is None and after.locked_at is None
    assert before.last_login_at is None or after.last_login_at > before.last_login_at
    assert len(sessions) == len(sessions_before) + 1
    assert sessions[-1].auth_time == after.last_login_at and sessions[-1].amr == ["pwd"]
    assert len(audited) == len(audited_before) + 1
    record = audited[-1]
    assert (record.tenant, record.actor_type, record.actor_id, record.outcome) == (
        NO, "user", str(after.id), "ok")
    assert record.details == {"method": "password"} and record.source_address
    # the counter really was reset, the lock lifted: two more wrong tries do not lock
    for _ in range(2):
        assert log_in(client, NO, EMAIL, WRONG).status_code == 401
    assert log_in(client, NO, EMAIL).status_code == 302

    in_transactions: list[str] = []
    response, statements = _statements_of(app, lambda: log_in(client, NO, EMAIL),
                                          in_transactions)
    assert response.status_code == 302
    if app.extensions["broker"].engine.dialect.name == "postgresql":
        # the reservation, then bookkeeping and session together: each a whole statement,
        # so neither needs BEGIN and COMMIT around it (two network round trips in all)
        assert len(statements) == 2, [s[:60] for s in statements]
        assert in_transactions == [], [s[:60] for s in in_transactions]
    else:
        assert len(statements) == 6, [s[:60] for s in statements]


def test_with_a_second_factor_due_the_bookkeeping_is_written_before_it_and_no_session_yet(app):
    secret = pyotp.random_base32()
    _set_account(app, totp_secret=secret, failed_logins=2)
    before, sessions_before, audited_before = _account(app)
    client = app.test_client()

    response = log_in(client, NO, EMAIL)
    assert response.status_code == 302 and "/login/totp" in response.headers["Location"]

    after, sessions, audited = _account(app)
    assert after.failed_logins == 0  # the password was right: its counter is reset now
    assert len(audited) == len(audited_before) + 1  # and audited, once
    assert len(sessions) == len(sessions_before)  # not yet
    assert after.last_login_at == before.last_login_at

    step = client.post(f"/t/{NO}/login/totp", data={"code": pyotp.TOTP(secret).now()})
    assert step.status_code == 302
    done, sessions, audited = _account(app)
    assert len(sessions) == len(sessions_before) + 1 and sessions[-1].amr == ["pwd", "otp"]
    assert done.last_login_at == sessions[-1].auth_time
    assert len(audited) == len(audited_before) + 1  # the password's success, not again


@pytest.mark.parametrize("status", ["pending", "disabled"])
def test_a_right_password_at_an_account_that_may_not_log_in_still_resets_its_counter(
    app, status
):
    _set_account(app, status=status, failed_logins=2)
    _, sessions_before, audited_before = _account(app)
    assert log_in(app.test_client(), NO, EMAIL).status_code == 403
    after, sessions, audited = _account(app)
    assert after.failed_logins == 0
    assert (len(sessions), len(audited)) == (len(sessions_before), len(audited_before))


def test_a_hash_with_old_parameters_is_replaced_in_the_same_login(app):
    from argon2 import PasswordHasher

    old = PasswordHasher(time_cost=2, memory_cost=8192, parallelism=1).hash(GOOD_PASSWORD)
    _set_account(app, password_hash=old, failed_logins=1)
    _, sessions_before, _ = _account(app)
    assert log_in(app.test_client(), NO, EMAIL).status_code == 302
    after, sessions, _ = _account(app)
    assert after.password_hash.startswith("$argon2id$v=19$m=8192,t=1,")  # the tenant's now
    assert after.failed_logins == 0 and len(sessions) == len(sessions_before) + 1


def test_a_wrong_password_writes_no_success(app):
    client = app.test_client()
    before, sessions_before, audited_before = _account(app)
    assert log_in(client, NO, EMAIL, WRONG).status_code == 401
    after, sessions, audited = _account(app)
    assert after.failed_logins == 1 and after.last_login_at == before.last_login_at
    assert (len(sessions), len(audited)) == (len(sessions_before), len(audited_before))


def test_a_login_that_rehashes_the_password_saves_the_new_hash_with_the_session(
        app, database_url):
    """The rehash leaves the user to flush, so the session's statement does not run on its
    own (autocommit) but in one transaction with it."""
    stronger = make_app(database_url, fjordvarme={"totp": "optional", "argon2_time_cost": 3})
    try:
        before, sessions_before, _ = _account(app)
        assert log_in(stronger.test_client(), NO, EMAIL).status_code == 302
        after, sessions, _ = _account(app)
        tenant = stronger.extensions["broker"].config.tenants[NO]
        assert after.password_hash != before.password_hash
        assert not hasher_for(tenant).check_needs_rehash(after.password_hash)
        assert len(sessions) == len(sessions_before) + 1
        assert sessions[-1].auth_time == after.last_login_at and after.failed_logins == 0
        assert log_in(app.test_client(), NO, EMAIL).status_code == 302  # the new hash verifies
    finally:
        stronger.extensions["broker"].engine.dispose()


def test_on_postgresql_the_login_statements_reach_the_driver_outside_a_transaction(
        app, monkeypatch):
    """As it runs in production, with no statement listener (which would make them run through
    SQLAlchemy): both go to psycopg directly, in autocommit, and the pooled connection comes
    back to the pool out of autocommit."""
    engine = app.extensions["broker"].engine
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL only: SQLite runs them through SQLAlchemy in BEGIN IMMEDIATE")
    sent: list[tuple[str, bool]] = []
    real_execute = psycopg.Connection.execute

    def watched(self, query, *args, **kwargs):  # type: ignore[no-untyped-def]
        sent.append((str(query).split()[0], self.autocommit))
        return real_execute(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.Connection, "execute", watched)
    assert log_in(app.test_client(), NO, EMAIL).status_code == 302
    monkeypatch.undo()
    assert sent == [("WITH", True), ("WITH", True)]
    with engine.connect() as connection:
        assert connection.connection.driver_connection.autocommit is False


def _checkouts_of(app, send):  # type: ignore[no-untyped-def]
    """How many times ``send`` took a connection from the pool."""
    taken: list[object] = []
    with _listening(app, "checkout", lambda _dbapi, record, _proxy: taken.append(record)):
        response = send()
    return response, len(taken)


def _postgresql_only(app):  # type: ignore[no-untyped-def]
    if app.extensions["broker"].engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL only: SQLite commits the reservation before the verify")


def test_on_postgresql_a_login_runs_its_statements_on_one_pooled_connection(app):
    """The reservation committed itself (autocommit), so its connection is kept through the
    verify for the session's statement instead of going back to the pool and out again."""
    _postgresql_only(app)
    client = app.test_client()
    response, checkouts = _checkouts_of(app, lambda: log_in(client, NO, EMAIL))
    assert response.status_code == 302 and checkouts == 1
    with app.extensions["broker"].engine.connect() as connection:
        assert connection.connection.driver_connection.autocommit is False


def test_a_wrong_password_writes_its_bookkeeping_in_a_transaction(app):
    """The reservation stands alone; what a wrong guess writes after it (the audit record, and
    on the last try the lock's notice and email) is written together, in a transaction."""
    client = app.test_client()
    for _ in range(2):
        assert log_in(client, NO, EMAIL, WRONG).status_code == 401
    in_transactions: list[str] = []
    response, statements = _statements_of(app, lambda: log_in(client, NO, EMAIL, WRONG),
                                          in_transactions)
    assert response.status_code == 403  # the third wrong try locks
    after, _, _ = _account(app)
    assert after.locked_until is not None and after.failed_logins == 3
    writes = [s for s in in_transactions if s.startswith("INSERT")]
    assert any("audit_events" in s for s in writes), [s[:60] for s in in_transactions]
    assert any("outbox" in s for s in writes), [s[:60] for s in in_transactions]
    if app.extensions["broker"].engine.dialect.name == "postgresql":
        reservation = statements[0]
        assert reservation not in in_transactions  # it alone ran on its own


@pytest.mark.parametrize("case", ["second factor", "rehash", "pending"])
def test_on_postgresql_every_other_path_after_the_verify_writes_in_a_transaction(
        app, database_url, case):
    """A second factor's pending login, a rehash and a refused status each write after the
    reservation in a transaction of their own, never one statement at a time."""
    _postgresql_only(app)
    target = app
    if case == "second factor":
        _set_account(app, totp_secret=pyotp.random_base32())
    elif case == "pending":
        _set_account(app, status="pending")
    else:
        target = make_app(database_url, fjordvarme={"totp": "optional", "argon2_time_cost": 3})
    try:
        in_transactions: list[str] = []
        response, statements = _statements_of(
            target, lambda: log_in(target.test_client(), NO, EMAIL), in_transactions)
        assert response.status_code in (302, 403)
        after_reservation = statements[1:]
        writes = [s for s in after_reservation if s.startswith(("INSERT", "UPDATE", "WITH"))]
        assert writes and all(s in in_transactions for s in writes), [
            (s[:50], s in in_transactions) for s in after_reservation]
    finally:
        if target is not app:
            target.extensions["broker"].engine.dispose()


def test_a_login_that_dies_in_the_verify_keeps_its_try_and_returns_a_clean_connection(
        app, monkeypatch):
    """The reservation is committed before the verify. A request that dies in it (here argon2
    failing to allocate) leaves the try counted and, on PostgreSQL, the connection it kept
    for the session back in the pool, out of autocommit."""
    def dying(*_args):  # type: ignore[no-untyped-def]
        raise MemoryError("argon2 could not allocate")

    _, sessions_before, _ = _account(app)
    monkeypatch.setattr("flows.password_login.verify_password", dying)
    with pytest.raises(MemoryError):
        log_in(app.test_client(), NO, EMAIL)
    after, sessions, _ = _account(app)
    assert after.failed_logins == 1 and len(sessions) == len(sessions_before)
    engine = app.extensions["broker"].engine
    assert engine.pool.checkedout() == 0
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            assert connection.connection.driver_connection.autocommit is False
