"""Benchmark: the token endpoint, authorization_code (+PKCE) and refresh_token grants per
second per core, p50/p99, side by side with an in-process baseline measured in the same run.

    .venv/bin/python bench/token_endpoint.py [--threads 4] [--codes 1500] [--seconds 15]

What runs: a scratch PostgreSQL database; ``broker serve`` (gunicorn, one worker, pinned to
``--cpu``); one tenant, one confidential portal (client_secret_basic), one active user bound to a
customer account, and a login session made directly in the database (as tests/test_oidc.py's
``_browser`` does). The portal asks for ``openid profile email customer_accounts
offline_access``, so each code grant signs an ID token carrying the customer accounts and
returns a refresh token.

1. codes: GET /authorize with the session cookie and a fresh PKCE pair (timed too), in rounds
   small enough that every code is redeemed within its 2-minute lifetime;
2. code grants: POST /token grant_type=authorization_code with code_verifier;
3. refresh grants: each connection rotates its own refresh token chain for ``--seconds``;
4. the floor: GET /healthz through the same worker (what any request costs);

Steps 2-4 are sent by wrk (``bench/wrk_grants.lua``) when it is installed (Debian: ``apt-get
install wrk``), else by Python client threads (``--client python``). The Python client used
most of the other core, which PostgreSQL needs too, so the worker waited on it; wrk costs a
few microseconds a request. /authorize always uses the Python client (it follows a cookie).
5. the baseline, in this process on the worker's CPU: one RS256 signature with the tenant's key
   (joserfc, as the broker signs), one PostgreSQL round trip (``SELECT 1``), and one short write
   transaction (INSERT + COMMIT); ceiling = 1 / (signature + round trip).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import secrets
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
import requests  # noqa: E402
from joserfc import jwt  # noqa: E402

from broker import db as database  # noqa: E402
from broker import login_session  # noqa: E402
from broker.config import load_config  # noqa: E402
from broker.models import Binding, CustomerAccount, User  # noqa: E402
from broker.oidc.keys import KeyStore  # noqa: E402

SCOPE = "openid profile email customer_accounts offline_access"


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def seed(config_path: Path) -> str:
    """A user with a customer account and a live login session; returns the cookie token."""
    config = load_config(config_path)
    tenant = config.tenants[harness.TENANT]
    sessions = database.make_sessionmaker(database.make_engine(config.database_url))
    with database.transaction(sessions) as db:
        user = User(tenant=tenant.slug, subject=secrets.token_hex(16), email="anna@bench.example",
                    email_verified=True, name="Anna Bench", status="active")
        db.add(user)
        db.flush()
        account = CustomerAccount(tenant=tenant.slug, number="100234", kind="private",
                                  name="Anna Bench")
        db.add(account)
        db.flush()
        db.add(Binding(user_id=user.id, customer_account_id=account.id, role="owner",
                       proof="bill_code"))
        _, token = login_session.start(db, tenant, user, amr=["pwd"], remember=True)
    return token


def baseline(config_path: Path, seconds: float) -> dict[str, float]:
    """Per-operation costs in this thread: RS256 signature, PG round trip, write transaction."""
    config = load_config(config_path)
    engine = database.make_engine(config.database_url)
    sessions = database.make_sessionmaker(engine)
    ring = KeyStore(sessions, config.tenants).ring(harness.TENANT)
    now = int(time.time())
    claims = {"iss": "https://broker.example/t/x", "sub": secrets.token_hex(16),
              "aud": [harness.CLIENT_ID], "azp": harness.CLIENT_ID, "iat": now,
              "exp": now + 600, "auth_time": now, "nonce": "n-1", "acr": "low", "amr": ["pwd"],
              "customer_accounts": [{"number": "100234", "kind": "private", "role": "owner"}]}
    header = {"alg": ring.signing_alg, "kid": ring.signing_kid, "typ": "JWT"}

    def rate(operation) -> float:  # type: ignore[no-untyped-def]
        count, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            operation()
            count += 1
        return count / (time.perf_counter() - started)

    sign = rate(lambda: jwt.encode(header, claims, ring.signing, algorithms=[ring.signing_alg]))
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("CREATE TEMPORARY TABLE bench_tx (id serial primary key, v text)")
        raw.commit()

        def round_trip() -> None:
            cursor.execute("SELECT 1")
            cursor.fetchone()
            raw.commit()  # psycopg opened a transaction: close it, as a request would

        def write_transaction() -> None:
            cursor.execute("INSERT INTO bench_tx (v) VALUES (%s)", (secrets.token_hex(16),))
            raw.commit()

        select_one = rate(round_trip)
        write = rate(write_transaction)
    finally:
        raw.close()
        engine.dispose()
    return {"sign": sign, "round_trip": select_one, "write_transaction": write}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--codes", type=int, default=1500, help="code grants to measure")
    parser.add_argument("--round", type=int, default=500, help="codes prepared per round")
    parser.add_argument("--seconds", type=float, default=15.0, help="refresh grant phase")
    parser.add_argument("--baseline-seconds", type=float, default=3.0)
    parser.add_argument("--client", choices=("wrk", "python"),
                        default="wrk" if harness.WRK else "python",
                        help="what sends the grants and /healthz (wrk when installed; /authorize "
                             "always uses the Python client, which follows its cookie)")
    harness.add_worker_arguments(parser)
    args = parser.parse_args()
    use_wrk = args.client == "wrk"

    harness.print_run_header()
    with tempfile.TemporaryDirectory() as scratch, \
            harness.scratch_postgres("broker_bench_token") as url, \
            harness.broker_serve(Path(scratch), url, cpu=args.cpu,
                                 extra_env=harness.malloc_env(args.malloc_mmap_threshold)) \
            as server:
        cookie = {login_session.cookie_name(harness.TENANT): seed(server.config_path)}
        authorize_url = f"{server.issuer()}/authorize"
        token_url = f"{server.issuer()}/token"
        client_auth = (harness.CLIENT_ID, harness.CLIENT_SECRET)
        prepared: list[tuple[str, str]] = []
        issued: list[str] = []

        def authorize_job(browser: requests.Session) -> None:
            verifier, challenge = pkce()
            answer = browser.get(authorize_url, params={
                "response_type": "code", "client_id": harness.CLIENT_ID,
                "redirect_uri": harness.REDIRECT_URI, "scope": SCOPE, "state": "s",
                "nonce": secrets.token_urlsafe(8), "code_challenge": challenge,
                "code_challenge_method": "S256"}, cookies=cookie, allow_redirects=False,
                timeout=30)
            query = parse_qs(urlparse(answer.headers.get("Location", "")).query)
            if answer.status_code != 302 or "code" not in query:
                raise RuntimeError(f"authorize answered {answer.status_code}")
            prepared.append((query["code"][0], verifier))

        def exchange_job(code: str, verifier: str):  # type: ignore[no-untyped-def]
            def job(browser: requests.Session) -> None:
                answer = browser.post(token_url, data={
                    "grant_type": "authorization_code", "code": code,
                    "redirect_uri": harness.REDIRECT_URI, "code_verifier": verifier},
                    auth=client_auth, timeout=30)
                body = answer.json()
                if answer.status_code != 200 or "id_token" not in body:
                    raise RuntimeError(f"code grant answered {answer.status_code}: {body}")
                issued.append(body["refresh_token"])
            return job

        basic = "Basic " + base64.b64encode(
            f"{harness.CLIENT_ID}:{harness.CLIENT_SECRET}".encode()).decode()
        wrk_headers = {"Authorization": basic,
                       "Content-Type": "application/x-www-form-urlencoded"}

        def code_round(count: int) -> tuple[harness.LoadResult, harness.LoadResult]:
            prepared.clear()
            codes = harness.closed_loop(server, args.threads, [authorize_job] * count)
            if use_wrk:
                return codes, harness.wrk_load(
                    server, token_url, "code", [f"{c} {v}" for c, v in prepared],
                    connections=args.threads, seconds=120, headers=wrk_headers,
                    redirect_uri=harness.REDIRECT_URI)
            jobs = [exchange_job(code, verifier) for code, verifier in prepared]
            return codes, harness.closed_loop(server, args.threads, jobs)

        harness.pin_this_thread(harness.other_cpus(args.cpu))
        code_round(100)  # warm-up: connections, prepared statements, key ring
        issued.clear()
        rss_warm, _ = server.worker_memory_mib()

        authorize, grants = harness.LoadResult(), harness.LoadResult()
        left = args.codes
        while left > 0:
            codes, exchanged = code_round(min(args.round, left))
            left -= min(args.round, left)
            for total, part in ((authorize, codes), (grants, exchanged)):
                harness.add_round(total, part)

        if use_wrk:  # the chains start from code grants of the Python client
            issued.clear()
            prepared.clear()
            harness.closed_loop(server, args.threads, [authorize_job] * args.threads)
            harness.closed_loop(server, args.threads,
                                [exchange_job(c, v) for c, v in prepared])
        chains = issued[: args.threads]

        def refresh_job(index: int):  # type: ignore[no-untyped-def]
            def job(browser: requests.Session) -> None:
                answer = browser.post(token_url, data={
                    "grant_type": "refresh_token", "refresh_token": chains[index]},
                    auth=client_auth, timeout=30)
                body = answer.json()
                if answer.status_code != 200 or "refresh_token" not in body:
                    raise RuntimeError(f"refresh grant answered {answer.status_code}: {body}")
                chains[index] = body["refresh_token"]
            return job

        if use_wrk:
            refreshes = harness.wrk_load(server, token_url, "refresh", chains,
                                         connections=args.threads, seconds=args.seconds,
                                         headers=wrk_headers)
        else:
            refreshes = harness.closed_loop(server, args.threads, make_job=refresh_job,
                                            duration=args.seconds)

        def health_job(index: int):  # type: ignore[no-untyped-def]
            def job(browser: requests.Session) -> None:
                if browser.get(f"{server.url}/healthz", timeout=30).status_code != 200:
                    raise RuntimeError("healthz failed")
            return job

        if use_wrk:
            floor = harness.wrk_load(server, f"{server.url}/healthz", "get", [],
                                     connections=args.threads, seconds=args.seconds / 2,
                                     headers={})
        else:
            floor = harness.closed_loop(server, args.threads, make_job=health_job,
                                        duration=args.seconds / 2)
        rss_end, rss_peak = server.worker_memory_mib()
        harness.pin_this_thread({args.cpu})
        base = baseline(server.config_path, args.baseline_seconds)

    ceiling = 1 / (1 / base["sign"] + 1 / base["round_trip"])
    ceiling_write = 1 / (1 / base["sign"] + 1 / base["write_transaction"])
    print(f"baseline on CPU {args.cpu}, 1 thread: RS256 signature {base['sign']:.0f}/s, "
          f"PostgreSQL round trip {base['round_trip']:.0f}/s, "
          f"write transaction {base['write_transaction']:.0f}/s")
    print(f"baseline ceiling 1/(signature + round trip) = {ceiling:.0f}/s; "
          f"1/(signature + write transaction) = {ceiling_write:.0f}/s")
    clients = (f"wrk, {args.threads} connections" if use_wrk
               else f"{args.threads} client threads")
    print(f"authorize (code issued), {args.threads} Python client threads: "
          f"{authorize.summary()}")
    print(f"authorization_code grant (+PKCE, ID token), {clients}: {grants.summary()}")
    print(f"refresh_token grant (rotation), {clients}: {refreshes.summary()}")
    print(f"floor: GET /healthz (HTTP, gunicorn, Flask, request hooks; no database), "
          f"{clients}: {floor.summary()}")
    for label, result in (("code grant", grants), ("refresh grant", refreshes)):
        above = 1000 / result.rate_per_cpu_second - 1000 / floor.rate_per_cpu_second
        print(f"{label}: {1000 / result.rate_per_cpu_second:.2f} ms of worker CPU per request, "
              f"{above:.2f} ms above the /healthz floor")
        print(f"{label}: {result.rate:.0f}/s = {result.rate / ceiling:.2f} x the signature+round "
              f"trip ceiling, {result.rate / ceiling_write:.2f} x signature+write transaction; "
              f"target >= 240/s per core (aim 600): "
              f"{'met' if result.rate >= 240 else 'NOT met'}")
    print(f"worker RSS: {rss_warm:.0f} MiB after warm-up, {rss_end:.0f} MiB after the run, "
          f"peak {rss_peak:.0f} MiB  (target <= 150 MB)")
    print(f"machine after: {harness.machine()}")


if __name__ == "__main__":
    main()
