"""Benchmark: import N customers (default 1,000,000), then time binding lookups at that size.

    .venv/bin/python bench/customers_at_scale.py [--rows N] [--lookups K] [--backend ...]

Per backend (SQLite file, and a scratch PostgreSQL database when one answers):

1. the import, in a child process (rows/s and that process's peak RSS), reusing
   ``bench/import_customers.py``;
2. ``K`` lookups of random customer numbers through the register the binding flow uses
   (``SqlRegistry.find_by_number``): p50 / p99 / max;
3. ``K`` full binding transactions (``flows.binding.bind_with_proof`` with the right PIN for a
   distinct random account, committed): p50 / p99 / max. This is the server-side cost of the
   binding step's POST at that register size, without HTTP.
"""

from __future__ import annotations

import argparse
import random
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import import_customers  # noqa: E402
from sqlalchemy import create_engine, func, select, text  # noqa: E402

from broker import db as database  # noqa: E402
from broker.customers.registry import SqlRegistry  # noqa: E402
from broker.models import Binding, CustomerAccount, User  # noqa: E402
from flows.binding import bind_with_proof  # noqa: E402

FIRST_NUMBER = 10_000_000


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def describe(label: str, samples_ms: list[float]) -> str:
    return (
        f"{label:<40} n={len(samples_ms):>5}  p50 {percentile(samples_ms, 0.5):6.2f} ms  "
        f"p99 {percentile(samples_ms, 0.99):6.2f} ms  max {max(samples_ms):6.2f} ms  "
        f"mean {statistics.fmean(samples_ms):6.2f} ms"
    )


def measure_lookups(url: str, rows: int, lookups: int, label: str) -> None:
    config = import_customers._config(url)
    tenant = config.tenants["fjordvarme"]
    engine = database.make_engine(url)
    sessions = database.make_sessionmaker(engine)
    with sessions() as db:
        count = db.scalar(select(func.count()).select_from(CustomerAccount))
    print(f"{label}: {count} customer accounts in the register", flush=True)
    chooser = random.Random(1)
    indexes = chooser.sample(range(rows), lookups)

    registry_ms = []
    with sessions() as db:
        registry = SqlRegistry(db, "fjordvarme")
        for i in indexes:
            started = time.perf_counter()
            record = registry.find_by_number(str(FIRST_NUMBER + i))
            registry_ms.append((time.perf_counter() - started) * 1000)
            assert record is not None
    print(describe(f"{label} register lookup", registry_ms), flush=True)

    with database.transaction(sessions) as db:
        user = User(tenant="fjordvarme", subject=secrets.token_hex(16),
                    email=f"bench-{secrets.token_hex(4)}@example.no", status="active")
        db.add(user)
    bind_ms = []
    bound = 0
    for i in indexes:
        pin = f"{(i * 7919) % 1_000_000:06d}"
        started = time.perf_counter()
        with database.transaction(sessions) as db:
            result = bind_with_proof(
                db, tenant, import_customers.HMAC_KEY, db.get(User, user.id),
                str(FIRST_NUMBER + i), "pin", pin, "127.0.0.1",
            )
        bind_ms.append((time.perf_counter() - started) * 1000)
        # The account-kind rule decides whether a private user may bind a company account.
        bound += result.ok
    with sessions() as db:
        stored = db.scalar(select(func.count()).select_from(Binding))
    print(describe(f"{label} bind_with_proof (commit)", bind_ms)
          + f"  bound {bound}, rows {stored}", flush=True)
    engine.dispose()


def bench_sqlite(csv_path: Path, folder: Path, rows: int, lookups: int) -> None:
    url = f"sqlite:///{folder / 'bench.db'}"
    database.upgrade(url)
    import_customers.run_import(url, csv_path, "sqlite first import")
    measure_lookups(url, rows, lookups, "sqlite")


def bench_postgresql(csv_path: Path, rows: int, lookups: int) -> None:
    admin = create_engine(import_customers.POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as error:  # noqa: BLE001 - report and go on with SQLite's numbers
        print(f"postgresql: not reachable ({type(error).__name__}); skipped")
        return
    name = f"broker_bench_{secrets.token_hex(4)}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = import_customers.POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        database.upgrade(url)
        import_customers.run_import(url, csv_path, "postgresql first import")
        with create_engine(url, isolation_level="AUTOCOMMIT").connect() as connection:
            connection.execute(text("ANALYZE"))
        measure_lookups(url, rows, lookups, "postgresql")
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--lookups", type=int, default=2000)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    args = parser.parse_args()
    lookups = min(args.lookups, args.rows)
    print(f"start: {import_customers.machine()}", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        csv_path = folder / "customers.csv"
        started = time.perf_counter()
        import_customers.generate(csv_path, args.rows)
        size = csv_path.stat().st_size / 1024 / 1024
        print(f"generated {args.rows} rows ({size:.0f} MiB) in "
              f"{time.perf_counter() - started:.1f} s", flush=True)
        if args.backend in ("sqlite", "both"):
            bench_sqlite(csv_path, folder, args.rows, lookups)
        if args.backend in ("postgresql", "both"):
            bench_postgresql(csv_path, args.rows, lookups)
    print(f"end: {import_customers.machine()}", flush=True)


if __name__ == "__main__":
    main()
