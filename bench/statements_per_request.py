"""Benchmark: the SQL statements one request runs, for the hot paths, on PostgreSQL.

    .venv/bin/python bench/statements_per_request.py

Drives the broker in-process (Flask test client) on a scratch PostgreSQL database and lists,
per request, every statement the engine sent (first line of each), then flags any statement
text that ran twice in one request. Covers: a successful password login, /authorize issuing a
code, the authorization_code grant and the refresh_token grant. Transaction control (BEGIN,
COMMIT) are not statements here: each checkout that ran in a transaction adds those two round
trips, one that ran in autocommit adds none. (A pooled connection is checked with a ping only
after 10 s idle, broker/db.py.)
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import sys
from collections import Counter
from pathlib import Path
from urllib.parse import parse_qs, urlparse

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from sqlalchemy import event  # noqa: E402

from broker import db as database  # noqa: E402
from broker import login_session  # noqa: E402
from broker.app import create_app  # noqa: E402
from broker.config import load_config  # noqa: E402
from broker.models import Binding, CustomerAccount, User  # noqa: E402
from broker.passwords import hash_password  # noqa: E402

PASSWORD = "Correct-Horse-Battery-42"
SCOPE = "openid profile email customer_accounts offline_access"


def main() -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as scratch, \
            harness.scratch_postgres("broker_bench_statements") as url:
        config_path = Path(scratch) / "broker.toml"
        harness.write_config(config_path, url, "http://broker.bench")
        database.upgrade(url)
        app = create_app(load_config(config_path))
        state = app.extensions["broker"]
        tenant = state.config.tenants[harness.TENANT]
        with database.transaction(state.sessions) as db:
            user = User(tenant=tenant.slug, subject=secrets.token_hex(16),
                        email="anna@bench.example", email_verified=True, name="Anna",
                        status="active", password_hash=hash_password(tenant, PASSWORD))
            db.add(user)
            db.flush()
            account = CustomerAccount(tenant=tenant.slug, number="100234", kind="private")
            db.add(account)
            db.flush()
            db.add(Binding(user_id=user.id, customer_account_id=account.id, role="owner",
                           proof="bill_code"))
        statements: list[str] = []
        checkouts: list[int] = []
        transactions: list[int] = []
        event.listen(state.engine, "before_cursor_execute",
                     lambda _c, _cur, sql, *_: statements.append(sql.split("\n")[0][:110]))
        event.listen(state.engine.pool, "checkout", lambda *_: checkouts.append(1))
        event.listen(state.engine, "begin", lambda conn: transactions.append(
            conn.get_execution_options().get("isolation_level") != "AUTOCOMMIT"))
        client = app.test_client()
        issuer = f"/t/{harness.TENANT}"
        basic = "Basic " + base64.b64encode(
            f"{harness.CLIENT_ID}:{harness.CLIENT_SECRET}".encode()).decode()

        def login() -> None:
            client.delete_cookie(login_session.cookie_name(harness.TENANT), path=issuer)
            answer = client.post(f"{issuer}/login",
                                 data={"email": "anna@bench.example", "password": PASSWORD})
            assert answer.status_code == 302, answer.status_code

        def authorize() -> tuple[str, str]:
            verifier = secrets.token_urlsafe(48)
            challenge = base64.urlsafe_b64encode(
                hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
            answer = client.get(f"{issuer}/authorize", query_string={
                "response_type": "code", "client_id": harness.CLIENT_ID,
                "redirect_uri": harness.REDIRECT_URI, "scope": SCOPE, "state": "s",
                "nonce": "n", "code_challenge": challenge, "code_challenge_method": "S256"})
            assert answer.status_code == 302, answer.status_code
            return parse_qs(urlparse(answer.headers["Location"]).query)["code"][0], verifier

        tokens: dict[str, str] = {}

        def code_grant(code_and_verifier: tuple[str, str]) -> None:
            code, verifier = code_and_verifier
            answer = client.post(f"{issuer}/token", headers={"Authorization": basic}, data={
                "grant_type": "authorization_code", "code": code,
                "redirect_uri": harness.REDIRECT_URI, "code_verifier": verifier})
            assert answer.status_code == 200, answer.get_data(as_text=True)
            tokens["refresh"] = answer.json["refresh_token"]

        def refresh_grant() -> None:
            answer = client.post(f"{issuer}/token", headers={"Authorization": basic}, data={
                "grant_type": "refresh_token", "refresh_token": tokens["refresh"]})
            assert answer.status_code == 200, answer.get_data(as_text=True)
            tokens["refresh"] = answer.json["refresh_token"]

        login()
        code_grant(authorize())  # warm: key ring, prepared statements
        refresh_grant()
        pending: list[tuple[str, str]] = []
        for label, action in (("password login (success)", login),
                              ("authorize (code issued)", lambda: pending.append(authorize())),
                              ("authorization_code grant", lambda: code_grant(pending.pop())),
                              ("refresh_token grant", refresh_grant)):
            statements.clear()
            checkouts.clear()
            transactions.clear()
            action()
            repeated = [s for s, n in Counter(statements).items() if n > 1]
            wrapped = sum(transactions)
            print(f"{label}: {len(statements)} statements, {len(checkouts)} connection "
                  f"checkout(s), {wrapped} in BEGIN/COMMIT (the others autocommit): "
                  f"{len(statements) + 2 * wrapped} network round trips; repeated: "
                  f"{repeated or 'none'}")
            for statement in statements:
                print(f"    {statement}")
        state.engine.dispose()


if __name__ == "__main__":
    main()
