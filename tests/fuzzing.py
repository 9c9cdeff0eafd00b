"""Shared by the fuzzing tests (test_fuzz_*.py): hostile text, a broker with a known user, and
the check that a refused request changed nothing.

"Changed nothing" compares the full content of every table before and after the request, apart
from the security bookkeeping a refusal is *meant* to write: the audit log (a failed login or
proof is an audited event; each test says which records it allows), the attempt counters and a
user's lockout fields (a wrong guess is counted), a verification's guess count, and a staff
session's idle time (every authenticated call extends it). Throttles are off (their own tests
cover them) and the lock limit is high, so every example reaches the form's real logic instead
of a 429; argon2 uses its smallest parameters so fifty logins stay cheap.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from broker import login_session
from broker.app import create_app
from broker.config import BrokerConfig, parse_config
from broker.customers.digests import proof_hmac
from broker.models import Base, CustomerAccount, User
from broker.passwords import hash_password

from .conftest import make_config

TENANT = "aaro-vand"
PORTAL = "demo-portal"
REDIRECT = f"http://portal.test/{TENANT}/callback"
KNOWN_EMAIL = "known@example.dk"
KNOWN_PASSWORD = "Kendt-Adgang-2024!"
CUSTOMER_NUMBER = "5500123"
BILL_CODE = "ZX98YU76"
BOOKKEEPING = {"audit_events", "attempt_counters"}
BOOKKEEPING_COLUMNS = {
    "users": {"failed_logins", "lock_count", "locked_at", "locked_until"},
    "verifications": {"attempts"},
    "staff_sessions": {"idle_until"},
}
# Every example is a request and two reads of the database, tens of milliseconds: Hypothesis
# would call that too slow for data generation, but that cost is the test, so the check is off.
FUZZ = settings(max_examples=50, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])

# Any text a browser could send: every Unicode character except lone surrogates (which no
# UTF-8 form can carry), NUL and control characters included.
NASTY = [
    "", " ", "\x00", "a\x00@example.dk", "known@example.dk\x00", "%00", "\r\nBcc: x@y.z",
    "' OR 1=1 --", "<script>alert(1)</script>", "{{7*7}}", "\u202e\u0000\ufeff", "ø" * 400,
    "x" * 5000, "😀@😀.dk", "100234\x00", "+45 00 00 00 00\x00",
]
ANY_TEXT = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=300), st.sampled_from(NASTY)
)
ASCII = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=120)


def fuzz_config(database_url: str) -> dict[str, Any]:
    """The test configuration as data: cheap argon2 and a high lock limit at every tenant,
    throttles off."""
    data = make_config(database_url).model_dump()
    for tenant in data["tenants"].values():
        tenant["argon2_time_cost"] = 1
        tenant["argon2_memory_kib"] = 8 * 1024
        tenant["lockout"]["max_attempts"] = 100
    if "throttle" in BrokerConfig.model_fields:
        data["throttle"] = {"enabled": False}
    return data


def make_fuzz_app(database_url: str):  # type: ignore[no-untyped-def]
    """A broker with one known, signed-in user and one customer account at ``TENANT``."""
    app = create_app(parse_config(fuzz_config(database_url), "fuzz config"))
    app.config["TESTING"] = True
    state = app.extensions["broker"]
    tenant_config = state.config.tenants[TENANT]
    with state.sessions() as db, db.begin():
        user = User(tenant=TENANT, subject=secrets.token_hex(16), email=KNOWN_EMAIL,
                    email_verified=True, name="Known User", status="active",
                    password_hash=hash_password(tenant_config, KNOWN_PASSWORD))
        db.add(user)
        db.add(CustomerAccount(
            tenant=TENANT, number=CUSTOMER_NUMBER, kind="private", name="Known User",
            bill_code_hmac=proof_hmac(state.config.hmac_key, "bill_code", BILL_CODE),
        ))
        db.flush()
        _, token = login_session.start(db, tenant_config, user, amr=["pwd"])
    app.config["FUZZ_SESSION_TOKEN"] = token
    state.services["keys"].ring(TENANT)  # the signing key is made on first use, not by a request
    return app


def row_counts(app) -> dict[str, int]:  # type: ignore[no-untyped-def]
    with app.extensions["broker"].sessions() as db:
        return {
            table.name: db.scalar(select(func.count()).select_from(table)) or 0
            for table in Base.metadata.sorted_tables
            if table.name not in BOOKKEEPING
        }


def table_snapshot(app) -> dict[str, list[str]]:  # type: ignore[no-untyped-def]
    """Every row of every table but the bookkeeping ones, in a comparable form."""
    snapshot: dict[str, list[str]] = {}
    with app.extensions["broker"].sessions() as db:
        for table in Base.metadata.sorted_tables:
            if table.name in BOOKKEEPING:
                continue
            ignored = BOOKKEEPING_COLUMNS.get(table.name, set())
            columns = [column for column in table.columns if column.name not in ignored]
            snapshot[table.name] = sorted(repr(tuple(row)) for row in db.execute(select(*columns)))
    return snapshot


def post_and_check(app, path: str, form: dict[str, str], *, refused: Callable[[Any], bool],  # type: ignore[no-untyped-def]
                   headers: dict[str, str] | None = None, cookie: bool = False,
                   cookies: dict[str, str] | None = None, tenant: str = TENANT) -> Any:
    """POST ``form``: never a server error, and when ``refused(answer)`` no row changed."""
    client = app.test_client()
    if cookie:
        client.set_cookie(login_session.cookie_name(tenant), app.config["FUZZ_SESSION_TOKEN"],
                          path=f"/t/{tenant}")
    for name, value in (cookies or {}).items():
        client.set_cookie(name, value, path="/")
    before = table_snapshot(app)
    answer = client.post(path, data=form, headers=headers or {})
    assert answer.status_code < 500, (form, answer.get_data(as_text=True)[:500])
    if refused(answer):
        assert table_snapshot(app) == before, (form, answer.status_code)
    return answer


def form(**fields: st.SearchStrategy[str]) -> st.SearchStrategy[dict[str, str]]:
    """Each field present or missing, holding any text."""
    return st.fixed_dictionaries({}, optional=fields)
