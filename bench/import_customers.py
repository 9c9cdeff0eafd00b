"""Benchmark: import N generated customers (default 1,000,000) into SQLite and PostgreSQL.

    .venv/bin/python bench/import_customers.py [--rows N] [--backend sqlite|postgresql|both]

Each import runs in a child process so its peak RSS is its own; the report prints rows/s and
peak RSS per backend, then re-imports the same file to time the "unchanged" path. PostgreSQL
runs when BROKER_TEST_POSTGRES_URL (or 127.0.0.1:5432) answers; a scratch database is made and
dropped.

Besides wall-clock rows/s each import prints the CPU seconds it used: the child process's own
(the importer's two threads) and, on PostgreSQL, those of the server backends it talked to
(from /proc). On a shared machine the wall clock mostly measures the other load; "rows per
CPU-second" (client + server) is what the code costs.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import multiprocessing
import os
import resource
import secrets
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, event, text  # noqa: E402

from broker import db as database  # noqa: E402
from broker.config import parse_config  # noqa: E402
from broker.customers.importer import COLUMNS, import_file  # noqa: E402

POSTGRES_ADMIN_URL = os.environ.get(
    "BROKER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
TENANT = {"name": "Fjordvarme AS", "country": "NO"}
HMAC_KEY = "bench-hmac-key-0123456789abcdefghijklmn"


def generate(path: Path, rows: int) -> None:
    """Write ``rows`` customers as CSV, streaming (the file, not memory, grows)."""
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(COLUMNS)
        for i in range(rows):
            writer.writerow([
                str(10_000_000 + i),
                "company" if i % 20 == 0 else "private",
                f"Kunde {i}",
                f"Fjordveien {i % 500}, {2000 + i % 900} Lillestrøm",
                f"kunde{i}@example.no",
                f"+479{i % 10_000_000:07d}",
                f"{i % 1_000_000:06d}{i % 100_000:05d}",
                f"{(i * 7919) % 1_000_000:06d}",
                f"BC{i:08d}",
                f"F{i}01;F{i}02;F{i}03",
            ])


def _config(url: str):  # type: ignore[no-untyped-def]
    return parse_config({
        "database_url": url,
        "secret_key": "bench-secret-key-0123456789abcdefghijk",
        "hmac_key": HMAC_KEY,
        "tenants": {"fjordvarme": TENANT},
    }, "bench config")


def machine() -> str:
    """When and where, with the load average: every figure is read next to it."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"{now}, {os.cpu_count()} CPUs, load average {load}"


def _cpu_seconds(pid: int | str = "self") -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _child(url: str, csv_path: str, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    config = _config(url)
    engine = database.make_engine(url)
    backends: list[int] = []
    if engine.dialect.name == "postgresql":
        @event.listens_for(engine, "connect")
        def _remember_backend(dbapi_connection, _record):  # type: ignore[no-untyped-def]
            backends.append(dbapi_connection.info.backend_pid)
    started, cpu_before = time.perf_counter(), _cpu_seconds()
    report = import_file(engine, config.tenants["fjordvarme"], HMAC_KEY, csv_path, "csv")
    seconds, client_cpu = time.perf_counter() - started, _cpu_seconds() - cpu_before
    server_cpu = sum(_cpu_seconds(pid) for pid in backends)  # backends started with the import
    engine.dispose()
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    queue.put((report.added, report.changed, report.unchanged, report.refused, seconds, peak_kib,
               client_cpu, server_cpu))


def run_import(url: str, csv_path: Path, label: str) -> None:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_child, args=(url, str(csv_path), queue))
    child.start()
    added, changed, unchanged, refused, seconds, peak_kib, client_cpu, server_cpu = queue.get()
    child.join()
    rows = added + changed + unchanged + refused
    cpu = client_cpu + server_cpu
    print(
        f"{label:<28} {rows:>9} rows  {seconds:8.1f} s  {rows / seconds:9.0f} rows/s  "
        f"peak RSS {peak_kib / 1024:6.0f} MiB  (added {added}, unchanged {unchanged}, "
        f"refused {refused})\n{'':<28} CPU {client_cpu:.1f} s importer + {server_cpu:.1f} s "
        f"server = {rows / max(cpu, 0.01):.0f} rows per CPU-second",
        flush=True,
    )


def bench_sqlite(csv_path: Path, folder: Path) -> None:
    url = f"sqlite:///{folder / 'bench.db'}"
    database.upgrade(url)
    run_import(url, csv_path, "sqlite first import")
    run_import(url, csv_path, "sqlite re-import (same)")


def bench_postgresql(csv_path: Path) -> None:
    try:
        admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as error:  # noqa: BLE001 - report and go on with SQLite's numbers
        print(f"postgresql: not reachable ({type(error).__name__}); skipped")
        return
    name = f"broker_bench_{secrets.token_hex(4)}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        database.upgrade(url)
        run_import(url, csv_path, "postgresql first import")
        run_import(url, csv_path, "postgresql re-import (same)")
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    args = parser.parse_args()
    print(f"start: {machine()}", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        csv_path = folder / "customers.csv"
        started = time.perf_counter()
        generate(csv_path, args.rows)
        size = csv_path.stat().st_size / 1024 / 1024
        print(f"generated {args.rows} rows ({size:.0f} MiB) in "
              f"{time.perf_counter() - started:.1f} s", flush=True)
        if args.backend in ("sqlite", "both"):
            bench_sqlite(csv_path, folder)
        if args.backend in ("postgresql", "both"):
            bench_postgresql(csv_path)
    print(f"end: {machine()}", flush=True)


if __name__ == "__main__":
    main()
