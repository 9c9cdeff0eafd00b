"""What the HTTP benchmarks share: a scratch PostgreSQL database, a config file, a real
``broker serve --pin-workers`` (gunicorn, one worker) on one CPU, and the figures read from /proc.

One worker pinned to one CPU makes every rate a rate *per core*. The worker's CPU seconds
(utime + stime from /proc) are read before and after each measured phase, so a rate can also
be given per CPU-second of the worker, which other load on the machine does not distort.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import requests
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from broker.config import BrokerConfig  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BROKER = str(Path(sys.executable).with_name("broker"))
POSTGRES_ADMIN_URL = os.environ.get(
    "BROKER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
TENANT = "bench-vand"
CLIENT_ID = "bench-portal"
CLIENT_SECRET = "bench-portal-secret-0123456789abcdefghijkl"
REDIRECT_URI = "http://portal.bench/callback"


def machine() -> str:
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{os.cpu_count()} CPUs ({model}); load average {load}"


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


@contextmanager
def scratch_postgres(prefix: str) -> Iterator[str]:
    """A new database on the benchmark's PostgreSQL, dropped afterwards."""
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"{prefix}_{secrets.token_hex(4)}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def throttle_section() -> str:
    """The login throttle stays on (its cost is part of the path) but with limits this load
    from one address never reaches: a benchmark measures capacity, not the per-address limit."""
    if "throttle" not in BrokerConfig.model_fields:
        return ""
    high = '"1000000/minute"'
    return (
        f"[throttle.login]\nper_address = {high}\nper_target = {high}\n"
    )  # the token endpoint has no per-client throttle by default (config.py explains why)


def write_config(path: Path, database_url: str, public_url: str) -> None:
    """One tenant with the defaults (argon2 parameters included), one confidential portal,
    CSRF off so that a client can post the login form without first fetching it."""
    path.write_text(
        f'public_url = "{public_url}"\n'
        f'database_url = "{database_url}"\n'
        f'secret_key = "{secrets.token_urlsafe(32)}"\n'
        f'hmac_key = "{secrets.token_urlsafe(32)}"\n'
        "csrf_protection = false\n"
        f"[tenants.{TENANT}]\n"
        'name = "Bench Vand"\n'
        'country = "DK"\n'
        'login_methods = ["password"]\n'
        f"[[tenants.{TENANT}.clients]]\n"
        f'client_id = "{CLIENT_ID}"\n'
        f'client_secret = "{CLIENT_SECRET}"\n'
        f'redirect_uris = ["{REDIRECT_URI}"]\n'
        + throttle_section(),
        encoding="utf-8",
    )


def proc_cpu_seconds(pid: int) -> float:
    return proc_cpu_seconds_of(Path(f"/proc/{pid}/stat"))


def thread_cpu_seconds(pid: int) -> dict[int, float]:
    """CPU seconds (utime + stime) of each thread of a process, by thread id."""
    seconds = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            seconds[int(task.name)] = proc_cpu_seconds_of(task / "stat")
    return seconds


def proc_cpu_seconds_of(stat_file: Path) -> float:
    fields = stat_file.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def context_switches(pid: int) -> tuple[int, int]:
    """(voluntary, involuntary) context switches of all of ``pid``'s threads so far."""
    voluntary = involuntary = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            status = (task / "status").read_text()
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        for line in status.splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                voluntary += int(line.split()[1])
            elif line.startswith("nonvoluntary_ctxt_switches:"):
                involuntary += int(line.split()[1])
    return voluntary, involuntary


def proc_memory_mib(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of a process in MiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


@dataclass
class BrokerServer:
    """A running ``broker serve --workers 1``; ``worker_pid`` is the one gunicorn worker."""

    url: str
    config_path: Path
    process: subprocess.Popen[bytes]
    cpu: int
    worker_pid: int = 0

    def issuer(self) -> str:
        return f"{self.url}/t/{TENANT}"

    def worker_cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.worker_pid)

    def worker_memory_mib(self) -> tuple[float, float]:
        return proc_memory_mib(self.worker_pid)


@contextmanager
def broker_serve(folder: Path, database_url: str, cpu: int = 0,
                 extra_env: dict[str, str] | None = None,
                 code_root: Path = ROOT) -> Iterator[BrokerServer]:
    """Migrate, then start ``broker serve`` with one worker pinned to ``cpu``. ``code_root``:
    the checkout whose code it runs (another one, e.g. a ``git worktree`` of an older commit,
    to compare two versions side by side)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    config_path = folder / "broker.toml"
    write_config(config_path, database_url, url)
    env = {**os.environ, "PYTHONPATH": str(code_root), **(extra_env or {})}
    subprocess.run([BROKER, "db", "upgrade", "--config", str(config_path)], check=True,
                   env=env, stdout=subprocess.DEVNULL)
    log = (folder / "broker.log").open("wb")
    # The master runs on ``cpu`` alone, so the one worker --pin-workers pins lands there too
    # (a checkout from before --pin-workers gets the same CPU by inheritance).
    pin = ["--pin-workers"] if "--pin-workers" in (code_root / "broker/cli.py").read_text() else []
    process = subprocess.Popen(  # noqa: S603 - our own CLI
        [BROKER, "serve", "--config", str(config_path), "--bind", f"127.0.0.1:{port}",
         "--workers", "1", "--threads", os.environ.get("BENCH_WORKER_THREADS", "4"), *pin],
        env=env, stdout=log, stderr=subprocess.STDOUT,
        preexec_fn=lambda: os.sched_setaffinity(0, {cpu}),
    )
    server = BrokerServer(url=url, config_path=config_path, process=process, cpu=cpu)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"broker serve did not start; see {folder / 'broker.log'}")
            time.sleep(0.2)
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
        server.worker_pid = int(children[0])
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def malloc_env(threshold: int | None) -> dict[str, str]:
    """glibc raises its mmap threshold after the first free of a big block, so argon2's
    19 MiB buffers then come from per-thread heaps that keep them; a fixed threshold makes
    every such buffer an mmap returned on free (see BENCHMARKS.md, memory)."""
    return {"MALLOC_MMAP_THRESHOLD_": str(threshold)} if threshold else {}


def pin_this_thread(cpus: set[int]) -> None:
    """Threads started afterwards inherit the affinity."""
    os.sched_setaffinity(0, cpus)


def other_cpus(cpu: int) -> set[int]:
    rest = set(os.sched_getaffinity(0) | set(range(os.cpu_count() or 1))) - {cpu}
    return rest or {cpu}


@dataclass
class LoadResult:
    """What a load run measured: every request's latency (or, from wrk, the count and two
    percentiles) and the wall time."""

    latencies_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)
    worker_cpu_seconds: float = 0.0
    counted: int | None = None  # set by wrk_load, which reports no single latencies
    p50_ms: float | None = None
    p99_ms: float | None = None
    busiest_thread_cpu_seconds: float = 0.0  # the worker's busiest thread: argon2's, in a login run

    @property
    def requests(self) -> int:
        return self.counted if self.counted is not None else len(self.latencies_ms)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def rate_per_cpu_second(self) -> float:
        cpu = self.worker_cpu_seconds
        return self.requests / cpu if cpu else 0.0

    def summary(self) -> str:
        if not self.requests:
            return f"no request succeeded; errors: {self.errors[:3]}"
        p50 = self.p50_ms if self.p50_ms is not None else percentile(self.latencies_ms, 0.5)
        p99 = self.p99_ms if self.p99_ms is not None else percentile(self.latencies_ms, 0.99)
        return (
            f"{self.requests} requests in {self.seconds:.1f} s = {self.rate:.1f}/s "
            f"(worker used {self.worker_cpu_seconds:.1f} CPU s: "
            f"{self.rate_per_cpu_second:.1f} per CPU-second); "
            f"p50 {p50:.1f} ms, p99 {p99:.1f} ms"
            + (f"; {len(self.errors)} errors, first: {self.errors[0]}" if self.errors else "")
        )


def add_round(total: LoadResult, part: LoadResult) -> None:
    """Add one round's figures to ``total``. wrk reports percentiles, not latencies: the
    total keeps the highest p50 and p99 of its rounds (the rounds are alike)."""
    total.latencies_ms += part.latencies_ms
    total.errors += part.errors
    total.seconds += part.seconds
    total.worker_cpu_seconds += part.worker_cpu_seconds
    total.busiest_thread_cpu_seconds += part.busiest_thread_cpu_seconds
    if part.counted is not None:
        total.counted = (total.counted or 0) + part.counted
        total.p50_ms = max(total.p50_ms or 0.0, part.p50_ms or 0.0)
        total.p99_ms = max(total.p99_ms or 0.0, part.p99_ms or 0.0)


WRK = shutil.which("wrk")
WRK_SCRIPT = Path(__file__).resolve().parent / "wrk_grants.lua"


def wrk_load(server: BrokerServer, url: str, mode: str, items: list[str], *,
             connections: int, seconds: float, headers: dict[str, str],
             redirect_uri: str = "") -> LoadResult:
    """Drive ``url`` with wrk (one thread, on the CPUs the worker does not use) and the grant
    script: mode "code" redeems each "code verifier" item once, "refresh" rotates one chain
    per item for ``seconds``, "get" sends GETs. wrk costs a few microseconds of CPU a request,
    so the client leaves the other core to PostgreSQL (a Python client used most of it)."""
    if WRK is None:
        raise RuntimeError("wrk is not installed (Debian: apt-get install wrk)")
    with tempfile.NamedTemporaryFile("w", suffix=".items", delete=False) as listing:
        listing.write("\n".join(items) + "\n")
    marker = Path(listing.name).with_suffix(".done")
    env = {**os.environ, "BENCH_MODE": mode, "BENCH_ITEMS": listing.name, "BENCH_THREADS": "1",
           "BENCH_REDIRECT_URI": redirect_uri, "BENCH_DONE": str(marker)}
    command = [WRK, "-t1", f"-c{connections}", f"-d{max(1, int(seconds))}s", "--timeout", "30s",
               "-s", str(WRK_SCRIPT)]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    cpus = other_cpus(server.cpu)
    cpu_before = server.worker_cpu_seconds()
    process = subprocess.Popen(  # noqa: S603 - wrk from the system
        [*command, url], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: os.sched_setaffinity(0, cpus),
    )
    try:
        while process.poll() is None and not marker.exists():
            time.sleep(0.005)
        if process.poll() is None:  # the script used its last item: stop wrk now (SIGINT)
            process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        os.unlink(listing.name)
        marker.unlink(missing_ok=True)
    cpu_used = server.worker_cpu_seconds() - cpu_before
    line = next((x for x in stdout.splitlines() if x.startswith("WRK ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result: {stdout} {stderr}")
    values = dict(part.split("=") for part in line.split()[1:])
    failures = int(values["failures"])
    return LoadResult(
        seconds=int(values["duration_us"]) / 1e6,
        errors=[f"{failures} answers were not 200"] if failures else [],
        worker_cpu_seconds=cpu_used,
        counted=int(values["requests"]) - failures,
        p50_ms=int(values["p50_us"]) / 1000,
        p99_ms=int(values["p99_us"]) / 1000,
    )


def closed_loop(
    server: BrokerServer,
    threads: int,
    jobs: list[Callable[[requests.Session], None]] | None = None,
    *,
    make_job: Callable[[int], Callable[[requests.Session], None] | None] | None = None,
    duration: float | None = None,
) -> LoadResult:
    """Run requests from ``threads`` client threads, each waiting for its answer before the
    next (closed loop). Either a fixed list of ``jobs`` or ``make_job(thread)`` until
    ``duration`` seconds pass (or it returns None). A job raises to report a failure."""
    result = LoadResult()
    lock = threading.Lock()
    queue = list(reversed(jobs or []))
    stop_at: list[float] = []

    def next_job(index: int) -> Callable[[requests.Session], None] | None:
        if make_job is not None:
            if stop_at and time.perf_counter() >= stop_at[0]:
                return None
            return make_job(index)
        with lock:
            return queue.pop() if queue else None

    def client(index: int) -> None:
        with requests.Session() as browser:
            while (job := next_job(index)) is not None:
                started = time.perf_counter()
                try:
                    job(browser)
                except Exception as error:  # noqa: BLE001 - counted and reported
                    with lock:
                        result.errors.append(f"{type(error).__name__}: {error}"[:200])
                    continue
                elapsed = (time.perf_counter() - started) * 1000
                with lock:
                    result.latencies_ms.append(elapsed)

    cpu_before = server.worker_cpu_seconds()
    threads_before = thread_cpu_seconds(server.worker_pid)
    started = time.perf_counter()
    if duration is not None:
        stop_at.append(started + duration)
    workers = [threading.Thread(target=client, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    result.seconds = time.perf_counter() - started
    result.worker_cpu_seconds = server.worker_cpu_seconds() - cpu_before
    threads_after = thread_cpu_seconds(server.worker_pid)
    result.busiest_thread_cpu_seconds = max(
        (after - threads_before.get(tid, 0.0) for tid, after in threads_after.items()), default=0.0)
    if not result.requests:  # every figure would be a division by zero, or a lie
        log = server.config_path.parent / "broker.log"
        raise RuntimeError(f"{result.summary()} (broker log: {log})")
    return result


def add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every HTTP benchmark takes for the broker worker it starts."""
    parser.add_argument("--cpu", type=int, default=0, help="CPU the broker worker runs on")
    parser.add_argument("--malloc-mmap-threshold", type=int, default=None, metavar="BYTES",
                        help="run the broker with MALLOC_MMAP_THRESHOLD_=BYTES (e.g. 1048576)")


def add_against_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--against", type=Path, default=None, metavar="DIR",
                        help="also run the broker of another checkout, round by round")


def versions_to_run(args: argparse.Namespace) -> dict[str, Path]:
    """``this`` checkout, and the one ``--against`` names: run side by side, round by round."""
    versions = {"this": ROOT}
    if args.against is not None:
        versions["against"] = args.against.resolve()
    return versions


def print_run_header() -> None:
    """Date, machine and command first: every figure is read with them (BENCHMARKS.md)."""
    import datetime

    print(f"date: {datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')}")
    print(f"machine: {machine()}")
    print(f"command: {' '.join(sys.argv)}")
