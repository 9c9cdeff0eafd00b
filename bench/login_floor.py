"""Benchmark: what a password login costs beyond its argon2 verify, in CPU of the worker.

    .venv/bin/python bench/login_floor.py [--seconds 20] [--rounds 4] [--against DIR]

``login_throughput.py`` sets logins against raw argon2 verifies; on this shared machine that
ratio moves by several hundredths between rounds, because the argon2 rate itself drifts. This
script takes argon2 out of the measurement: the broker runs with ``bench/no_argon2`` on its
PYTHONPATH, which makes verify a SHA-256 compare (a wrong password still fails), so the
worker's CPU per login is *the rest* of the request: HTTP, Flask, throttle, SQL, cookies.
With the rest ``r`` and one raw verify ``a`` (both CPU ms on the same core), the ratio
``login_throughput.py`` measures is at best ``a / (a + r)``: 0.9 needs ``r <= a / 9``.

The worker runs as ``login_throughput.py`` runs it (gunicorn, 1 worker, 4 threads, pinned to
``--cpu``, PostgreSQL, throttle on, CSRF off). ``--against DIR`` runs another checkout's broker
in the same rounds, turns alternating, and gives the per-round difference. Each thread of the
worker is reported with its CPU per login, from /proc/<worker>/task.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from login_throughput import PASSWORD, login_job_for, seed_users  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent / "no_argon2"))
from sitecustomize import floor_hash  # noqa: E402

NO_ARGON2 = Path(__file__).resolve().parent / "no_argon2"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=4)
    harness.add_against_argument(parser)
    harness.add_worker_arguments(parser)
    args = parser.parse_args()

    harness.print_run_header()
    versions = harness.versions_to_run(args)
    rounds: dict[str, list[harness.LoadResult]] = {name: [] for name in versions}
    with tempfile.TemporaryDirectory() as scratch, contextlib.ExitStack() as stack:
        servers, emails = {}, {}
        for name, root in versions.items():
            folder = Path(scratch) / name
            folder.mkdir()
            url = stack.enter_context(harness.scratch_postgres(f"broker_bench_floor_{name}"))
            env = {"PYTHONPATH": f"{root}:{NO_ARGON2}",
                   **harness.malloc_env(args.malloc_mmap_threshold)}
            servers[name] = stack.enter_context(harness.broker_serve(
                folder, url, cpu=args.cpu, code_root=root, extra_env=env))
        for name, server in servers.items():
            emails[name], _ = seed_users(server.config_path, args.threads, floor_hash(PASSWORD))
        harness.pin_this_thread(harness.other_cpus(args.cpu))
        for name, server in servers.items():
            harness.closed_loop(server, args.threads,
                                make_job=login_job_for(server, emails[name]), duration=3)
        for number in range(args.rounds):
            order = list(servers) if number % 2 == 0 else list(reversed(servers))
            for name in order:
                rounds[name].append(harness.closed_loop(
                    servers[name], args.threads,
                    make_job=login_job_for(servers[name], emails[name]),
                    duration=args.seconds / args.rounds))

    medians = {}
    for name, parts in rounds.items():
        costs = [1000 / part.rate_per_cpu_second for part in parts]
        medians[name] = costs
        for index, part in enumerate(parts):
            print(f"round {index + 1} ({name}): {part.summary()}; "
                  f"worker CPU per login {costs[index]:.2f} ms")
        print(f"worker CPU per login without argon2 ({name}), median of the rounds: "
              f"{statistics.median(costs):.2f} ms")
    if "against" in medians:
        differences = [this - against for this, against
                       in zip(medians["this"], medians["against"], strict=True)]
        print("this - against, CPU ms per login, per round: "
              + ", ".join(f"{d:+.2f}" for d in differences)
              + f"; median {statistics.median(differences):+.2f}")
    print(f"machine after: {harness.machine()}")


if __name__ == "__main__":
    main()
