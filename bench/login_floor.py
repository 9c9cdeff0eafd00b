"""Benchmark: what a password login costs beyond its argon2 verify, in CPU of the worker.

    .venv/bin/python bench/login_floor.py [--seconds 20] [--rounds 4] [--against DIR]

``login_throughput.py`` sets logins against raw argon2 verifies; on this shared machine that
ratio moves by several hundredths between rounds, because the argon2 rate itself drifts. This
script takes argon2 out of the measurement: the broker runs with ``bench/no_argon2`` on its
PYTHONPATH, which makes verify a SHA-256 compare (a wrong password still fails), so the
worker's CPU per login is *the rest* of the request: HTTP, Flask, throttle, SQL, cookies.
With the rest ``r`` and one raw verify ``a`` (both CPU ms on the same core), the ratio
``login_throughput.py`` measures is at best ``a / (a + r)``: 0.9 needs ``r <= a / 9``.

``--hold-ms MS`` makes each stand-in verify also wait MS milliseconds (a raw verify's time)
without using the CPU, so that a login is in flight as long as with argon2: its parts then run
one by one between pauses instead of back to back. ``--fill-idle`` keeps the worker's CPU busy
in those pauses with a spinner at the lowest priority (SCHED_IDLE, which yields at once to
anything else), as argon2 keeps it busy in a real run, so that the CPU never sleeps. Both
together give the rest of a login as it costs in a real run, without argon2's own memory
traffic; the worker's context switches per login are printed with each round.

The worker runs as ``login_throughput.py`` runs it (gunicorn, 1 worker, 4 threads, pinned to
``--cpu``, PostgreSQL, throttle on, CSRF off). ``--against DIR`` runs another checkout's broker
in the same rounds, turns alternating, and gives the per-round difference. Each thread of the
worker is reported with its CPU per login, from /proc/<worker>/task.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from login_throughput import PASSWORD, login_job_for, seed_users  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent / "no_argon2"))
from sitecustomize import floor_hash  # noqa: E402

NO_ARGON2 = Path(__file__).resolve().parent / "no_argon2"


@contextlib.contextmanager
def idle_spinner(cpu: int):  # type: ignore[no-untyped-def]
    """A shell loop on ``cpu`` at SCHED_IDLE: it runs only when nothing else wants the CPU."""
    def lowest_priority() -> None:
        os.sched_setaffinity(0, {cpu})
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    spinner = subprocess.Popen(["/bin/sh", "-c", "while :; do :; done"],  # noqa: S603
                               preexec_fn=lowest_priority)
    try:
        yield
    finally:
        spinner.kill()
        spinner.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=4)
    harness.add_against_argument(parser)
    harness.add_worker_arguments(parser)
    parser.add_argument("--hold-ms", type=float, default=0.0,
                        help="each verify also waits this long (e.g. one raw verify's time)")
    parser.add_argument("--fill-idle", action="store_true",
                        help="a SCHED_IDLE spinner keeps the worker's CPU from sleeping")
    args = parser.parse_args()

    harness.print_run_header()
    print(f"stand-in verify: SHA-256, then a pause of {args.hold_ms:g} ms; "
          f"idle CPU {'filled by a SCHED_IDLE spinner' if args.fill_idle else 'left idle'}")
    versions = harness.versions_to_run(args)
    rounds: dict[str, list[harness.LoadResult]] = {name: [] for name in versions}
    switches: dict[str, list[tuple[float, float]]] = {name: [] for name in versions}
    with tempfile.TemporaryDirectory() as scratch, contextlib.ExitStack() as stack:
        servers, emails = {}, {}
        for name, root in versions.items():
            folder = Path(scratch) / name
            folder.mkdir()
            url = stack.enter_context(harness.scratch_postgres(f"broker_bench_floor_{name}"))
            env = {"PYTHONPATH": f"{root}:{NO_ARGON2}", "BENCH_FLOOR_HOLD_MS": str(args.hold_ms),
                   **harness.malloc_env(args.malloc_mmap_threshold)}
            servers[name] = stack.enter_context(harness.broker_serve(
                folder, url, cpu=args.cpu, code_root=root, extra_env=env))
        for name, server in servers.items():
            emails[name], _ = seed_users(server.config_path, args.threads, floor_hash(PASSWORD))
        harness.pin_this_thread(harness.other_cpus(args.cpu))
        for name, server in servers.items():
            harness.closed_loop(server, args.threads,
                                make_job=login_job_for(server, emails[name]), duration=3)
        if args.fill_idle:
            stack.enter_context(idle_spinner(args.cpu))
        for number in range(args.rounds):
            order = list(servers) if number % 2 == 0 else list(reversed(servers))
            for name in order:
                before = harness.context_switches(servers[name].worker_pid)
                part = harness.closed_loop(
                    servers[name], args.threads,
                    make_job=login_job_for(servers[name], emails[name]),
                    duration=args.seconds / args.rounds)
                after = harness.context_switches(servers[name].worker_pid)
                switches[name].append(tuple(  # type: ignore[arg-type]
                    (a - b) / max(part.requests, 1) for a, b in zip(after, before, strict=True)))
                rounds[name].append(part)

    medians = {}
    for name, parts in rounds.items():
        costs = [1000 / part.rate_per_cpu_second for part in parts]
        medians[name] = costs
        for index, part in enumerate(parts):
            voluntary, involuntary = switches[name][index]
            print(f"round {index + 1} ({name}): {part.summary()}; "
                  f"worker CPU per login {costs[index]:.2f} ms; context switches per login "
                  f"{voluntary:.1f} voluntary, {involuntary:.1f} involuntary")
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
