"""Benchmark: password logins per second per core through the full HTTP path, set against
the physical limit measured in the same run, the raw argon2id verify rate.

    .venv/bin/python bench/login_throughput.py [--threads 4] [--seconds 20] [--cpu 0]

What runs: a scratch PostgreSQL database; ``broker serve`` (gunicorn, one worker, pinned to
``--cpu``) with one tenant on the default argon2id parameters and CSRF off; one user per client
thread (a user's logins are serialised by its attempt counter, as they should be). Then:

1. ``--rounds`` times: raw argon2id verifies in this process, on the worker's CPU, for
   ``--raw-seconds``; then full logins, POST /t/<tenant>/login (email + password) -> 302 with
   the session cookie, from ``--threads`` client threads on the other CPU(s), for
   ``--seconds`` / ``--rounds``;
2. raw argon2id once more, so that every login round sits between two raw measurements;
3. the worker's RSS after warm-up and after the run.

The ratio logins / argon2 verifies is given per round (against the raw rates right before and
after it: this machine's speed drifts within a minute) and as the median of the rounds, per
wall-clock second on the pinned core and per CPU-second the worker actually used.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
import requests  # noqa: E402

from broker import db as database  # noqa: E402
from broker.config import load_config  # noqa: E402
from broker.models import User  # noqa: E402
from broker.passwords import hash_password, hasher_for  # noqa: E402

PASSWORD = "Correct-Horse-Battery-42"


def raw_argon2_rate(stored_hash: str, tenant, seconds: float) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """Verifies per wall second and per CPU second, single thread."""
    hasher = hasher_for(tenant)
    count = 0
    cpu_started, started = time.thread_time(), time.perf_counter()
    while time.perf_counter() - started < seconds:
        hasher.verify(stored_hash, PASSWORD)
        count += 1
    wall = time.perf_counter() - started
    return count / wall, count / (time.thread_time() - cpu_started)


def seed_users(config_path: Path, count: int) -> tuple[list[str], str]:
    config = load_config(config_path)
    tenant = config.tenants[harness.TENANT]
    stored = hash_password(tenant, PASSWORD)
    sessions = database.make_sessionmaker(database.make_engine(config.database_url))
    emails = [f"user{i}-{secrets.token_hex(3)}@bench.example" for i in range(count)]
    with database.transaction(sessions) as db:
        for email in emails:
            db.add(User(tenant=tenant.slug, subject=secrets.token_hex(16), email=email,
                        email_verified=True, name="Bench User", status="active",
                        password_hash=stored))
    return emails, stored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--raw-seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=4,
                        help="login rounds, each between two raw argon2 measurements")
    harness.add_worker_arguments(parser)
    args = parser.parse_args()

    harness.print_run_header()
    with tempfile.TemporaryDirectory() as scratch, \
            harness.scratch_postgres("broker_bench_login") as url, \
            harness.broker_serve(Path(scratch), url, cpu=args.cpu,
                                 extra_env=harness.malloc_env(args.malloc_mmap_threshold)) \
            as server:
        emails, stored = seed_users(server.config_path, args.threads)
        tenant = load_config(server.config_path).tenants[harness.TENANT]
        print(f"tenant argon2id: time_cost={tenant.argon2_time_cost} "
              f"memory_kib={tenant.argon2_memory_kib} parallelism={tenant.argon2_parallelism}")
        login_url = f"{server.issuer()}/login"

        def login_job(index: int):  # type: ignore[no-untyped-def]
            def job(browser: requests.Session) -> None:
                browser.cookies.clear()
                answer = browser.post(login_url, data={"email": emails[index],
                                                       "password": PASSWORD},
                                      allow_redirects=False, timeout=30)
                if answer.status_code != 302 or "bsid_" not in answer.headers.get(
                        "Set-Cookie", ""):
                    raise RuntimeError(f"login answered {answer.status_code}")
            return job

        harness.pin_this_thread(harness.other_cpus(args.cpu))
        warm = harness.closed_loop(server, args.threads, make_job=login_job, duration=3)
        rss_warm, _ = server.worker_memory_mib()
        print(f"warm-up: {warm.summary()}")

        raws = []
        rounds: list[harness.LoadResult] = []
        for _ in range(args.rounds):
            harness.pin_this_thread({args.cpu})
            raws.append(raw_argon2_rate(stored, tenant, args.raw_seconds))
            harness.pin_this_thread(harness.other_cpus(args.cpu))
            rounds.append(harness.closed_loop(server, args.threads, make_job=login_job,
                                              duration=args.seconds / args.rounds))
        harness.pin_this_thread({args.cpu})
        raws.append(raw_argon2_rate(stored, tenant, args.raw_seconds))
        rss_end, rss_peak = server.worker_memory_mib()

    print(f"raw argon2id verify, 1 thread on CPU {args.cpu}, between the rounds: "
          + ", ".join(f"{wall:.1f}/s ({cpu:.1f} per CPU-s)" for wall, cpu in raws))
    wall_ratios, cpu_ratios = [], []
    for index, part in enumerate(rounds):
        # Each round against the raw rate measured right before and right after it: this
        # machine's speed drifts by more than the effect we measure.
        raw_wall = (raws[index][0] + raws[index + 1][0]) / 2
        raw_cpu = (raws[index][1] + raws[index + 1][1]) / 2
        wall_ratios.append(part.rate / raw_wall)
        cpu_ratios.append(part.rate_per_cpu_second / raw_cpu)
        print(f"round {index + 1}: HTTP password logins, 1 worker on CPU {args.cpu}, "
              f"{args.threads} client threads: {part.summary()}; ratio wall "
              f"{wall_ratios[-1]:.3f}, per CPU-second {cpu_ratios[-1]:.3f}")
    run = harness.LoadResult()
    for part in rounds:
        harness.add_round(run, part)
    print(f"all rounds: {run.summary()}")
    print(f"ratio logins/s : argon2 verifies/s (wall, pinned core), median of the rounds = "
          f"{statistics.median(wall_ratios):.3f}")
    print(f"ratio per CPU-second of the worker, median of the rounds = "
          f"{statistics.median(cpu_ratios):.3f}  (target >= 0.9)")
    print(f"worker RSS: {rss_warm:.0f} MiB after warm-up, {rss_end:.0f} MiB after the run, "
          f"peak {rss_peak:.0f} MiB  (target <= 150 MB)")
    print(f"machine after: {harness.machine()}")


if __name__ == "__main__":
    main()
