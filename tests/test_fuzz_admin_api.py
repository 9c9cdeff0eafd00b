"""Schemathesis against the JSON admin API: every operation of its OpenAPI document, called as
a tenant administrator, a support agent, a foreign utility's agent, with a console cookie with
and without the CSRF header, with a forged token and with none.

Properties: no input makes a server error; every answer is one the document lists (status
code, content type, body schema); and a refused request (4xx) changes no row. "No row" means
the full content of every table, apart from the bookkeeping a refusal is *meant* to write
(tests/fuzzing.py: the attempt counters, a staff session's idle time) and the audit records the
document promises: a 403 or 409 may leave refused or failed records, a staff login may leave its
refusal, and any other refusal leaves none.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from argon2 import PasswordHasher
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import select, update

from broker.models import AuditEvent, Staff
from broker.staff import auth

from .fuzzing import table_snapshot
from .staff_support import (
    STAFF_PASSWORD,
    Scene,
    add_account,
    bind,
    build_scene,
    config,
    lock,
    make_app,
    sessions,
    staff_token,
    totp_now,
)

API = "/admin/api/v1"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
# Each example is one request plus two snapshots of the database: tens of milliseconds, which
# Hypothesis calls too slow for a data generation health check. That cost is the point here.
FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                       HealthCheck.data_too_large])
CALLERS = ("admin", "agent", "foreign_agent", "cookie", "cookie_without_csrf", "forged", "none")
# Only a staff login may record a 401 (its refusal); refusals the document lists as recorded.
AUDITED_REFUSALS = {403, 409}
CHEAP_HASHER = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1)


@pytest.fixture
def api(database_url, monkeypatch):  # type: ignore[no-untyped-def]
    """Two utilities' staff and customers; staff passwords hashed cheaply so that a hundred
    fuzzed logins do not spend seconds in argon2 (the real parameters have their own tests)."""
    monkeypatch.setattr(auth, "STAFF_HASHER", CHEAP_HASHER)
    dummy = CHEAP_HASHER.hash("no such staff member")
    monkeypatch.setattr(auth, "_dummy_hash", lambda: dummy)
    app = make_app(database_url, throttle={"enabled": False})
    scene = build_scene(app)
    bind(app, scene.user_b, add_account(app, "aaro-vand", "5500123", email="jens@example.com"))
    lock(app, scene.user_a)
    with sessions(app).begin() as db:
        db.execute(update(Staff).values(password_hash=CHEAP_HASHER.hash(STAFF_PASSWORD)))
    yield app, scene
    app.extensions["broker"].engine.dispose()


def _caller_headers(app, scene: Scene, caller: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Headers for one caller, with a fresh session (a fuzzed logout ends only its own)."""
    members = {"admin": scene.admin_a, "agent": scene.agent_a, "foreign_agent": scene.agent_b}
    if caller in members:
        return {"Authorization": f"Bearer {staff_token(app, members[caller])}"}
    if caller.startswith("cookie"):
        token = staff_token(app, scene.admin_a, kind="cookie")
        headers = {"Cookie": f"broker_staff={token}"}
        if caller == "cookie":
            headers["X-CSRF-Token"] = auth.csrf_token_for(config(app).secret_key, token)
        return headers
    if caller == "forged":
        return {"Authorization": "Bearer forged-0123456789"}
    return {}


def _reset_staff(app) -> None:  # type: ignore[no-untyped-def]
    """Every staff member enabled again, so one fuzzed disable does not end the coverage."""
    with sessions(app).begin() as db:
        db.execute(update(Staff).values(disabled=False))


def _audit_ids(app) -> int:  # type: ignore[no-untyped-def]
    with sessions(app)() as db:
        return db.scalar(select(AuditEvent.id).order_by(AuditEvent.id.desc()).limit(1)) or 0


def _new_audit(app, after: int) -> list[AuditEvent]:  # type: ignore[no-untyped-def]
    with sessions(app)() as db:
        return list(db.scalars(select(AuditEvent).where(AuditEvent.id > after)))


def _operations(schema, scene: Scene):  # type: ignore[no-untyped-def]
    """Positive and negative cases of every operation; path ids also drawn from the scene, so
    the actions reach real users (own and foreign utility) and real staff."""
    real_ids = {"user_id": [scene.user_a, scene.user_b],
                "staff_id": [scene.agent_a.id, scene.agent_b.id, scene.admin_a.id]}
    strategies = []
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategies.append(operation.as_strategy(generation_mode=mode))
        for name, values in real_ids.items():
            if f"{{{name}}}" in operation.path:
                strategies.extend(operation.as_strategy(path_parameters={name: value})
                                  for value in values)
    return st.one_of(strategies)


def _realistic(case: Any, scene: Scene) -> None:
    """Now and then a body that can succeed: the real customer number, a live TOTP code."""
    body = case.body
    if not isinstance(body, dict):
        return
    if "customer_number" in body:
        body["customer_number"] = scene.account_a_number
    if case.operation.path == "/login":
        body.update(email=scene.admin_a.email, password=STAFF_PASSWORD,
                    totp_code=totp_now(scene.admin_a))


def test_every_admin_api_operation_answers_as_documented_and_a_refusal_changes_nothing(api):
    app, scene = api
    schema = schemathesis.openapi.from_wsgi(f"{API}/openapi.json", app)

    @FUZZ
    @given(case=_operations(schema, scene), caller=st.sampled_from(CALLERS),
           realistic=st.booleans())
    def check(case: Any, caller: str, realistic: bool) -> None:
        _reset_staff(app)
        if realistic:
            _realistic(case, scene)
        headers = _caller_headers(app, scene, caller)
        for name in ("Authorization", "Cookie", "X-CSRF-Token"):
            if case.headers:
                case.headers.pop(name, None)
        before, last_audit = table_snapshot(app), _audit_ids(app)
        response = case.call(headers=headers)
        case.validate_response(response, checks=CHECKS)
        if not 400 <= response.status_code < 500:
            return
        assert table_snapshot(app) == before, (case.operation.label, response.status_code)
        records = _new_audit(app, last_audit)
        assert all(record.outcome != "ok" for record in records), records
        if response.status_code not in AUDITED_REFUSALS and case.operation.path != "/login":
            assert records == [], (case.operation.label, response.status_code,
                                   [(r.event, r.outcome) for r in records])

    check()
