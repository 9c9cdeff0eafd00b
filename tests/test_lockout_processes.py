"""The lockout is exact over HTTP with two broker processes on one PostgreSQL.

Two ``broker serve`` processes (gunicorn) run from one TOML file against the test database.
Fifty wrong passwords for one account arrive at once, spread over both. The attempt counter is
reserved in the database before the hash is checked, so exactly ``max_attempts`` guesses reach
argon2: each of those leaves a ``login_failed`` record with the reason "wrong password", which is
only written after a hash check; every other guess is refused as "account locked" unchecked.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from sqlalchemy import func, select

from broker import db as database
from broker.config import load_config
from broker.models import AuditEvent, OutboxMessage, Tenant, User
from broker.passwords import hash_password

from .conftest import _empty_postgres

SLUG = "fjordvarme"
EMAIL = "kari.nordmann@example.no"
RIGHT = "fjord-varme-hus"
MAX_ATTEMPTS = 3
GUESSES = 50
ROOT = Path(__file__).resolve().parent.parent

CONFIG = """\
public_url = "http://127.0.0.1"
database_url = "{database_url}"
secret_key = "process-test-secret-key-0123456789abcdef"
hmac_key = "process-test-hmac-key-0123456789abcdefgh"
csrf_protection = false
log_level = "WARNING"

[throttle.login]   # the lockout is the subject here, not the throttle in front of it
per_address = "1000/minute"
per_target = "1000/minute"

[tenants.{slug}]
name = "Fjordvarme AS"
country = "NO"
default_locale = "nb"
locales = ["nb", "en"]
support_phone = "+47 63 82 33 50"
login_methods = ["password"]
argon2_time_cost = 1
argon2_memory_kib = 8192

[tenants.{slug}.lockout]
max_attempts = {max_attempts}
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_until_up(url: str, process: subprocess.Popen, deadline: float) -> None:
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"broker at {url} exited with {process.returncode}")
        try:
            if requests.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass  # not listening yet, or busy starting
        time.sleep(0.1)
    raise RuntimeError(f"broker at {url} did not answer /healthz in time")


def _stop_all(processes: list[subprocess.Popen]) -> None:
    """Stop each gunicorn with its worker: the process groups this test started. SIGINT is
    gunicorn's quick shutdown; whatever still runs after three seconds is killed."""
    running = [process for process in processes if process.poll() is None]
    for process in running:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGINT)
    deadline = time.monotonic() + 3
    for process in running:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)


@pytest.fixture
def config_path(postgres_url: str, tmp_path: Path) -> Path:
    _empty_postgres(postgres_url)
    path = tmp_path / "broker.toml"
    path.write_text(CONFIG.format(database_url=postgres_url, slug=SLUG,
                                  max_attempts=MAX_ATTEMPTS), encoding="utf-8")
    return path


@pytest.fixture
def brokers(
    config_path: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[list[str]]:
    """Two broker processes (gunicorn, one worker each) on one database; always stopped."""
    processes: list[subprocess.Popen] = []
    request.addfinalizer(lambda: _stop_all(processes))
    urls = []
    for number in range(2):
        port = _free_port()
        log = open(tmp_path / f"broker{number}.log", "wb")  # noqa: SIM115 - closed below
        request.addfinalizer(log.close)
        processes.append(subprocess.Popen(
            [sys.executable, "-c", "from broker.cli import main; main()", "serve",
             "--config", str(config_path), "--bind", f"127.0.0.1:{port}", "--workers", "1"],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        ))
        urls.append(f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + 30  # generous: a loaded CI machine starts gunicorn slowly
    for url, process in zip(urls, processes, strict=True):
        _wait_until_up(url, process, deadline)
    yield urls


def _add_user(config_path: Path) -> int:
    config = load_config(config_path)
    engine = database.make_engine(config.database_url)
    try:
        with database.transaction(database.make_sessionmaker(engine)) as db:
            if db.get(Tenant, SLUG) is None:
                db.add(Tenant(slug=SLUG, name="Fjordvarme AS"))
            user = User(tenant=SLUG, subject="sub-kari", email=EMAIL, status="active",
                        password_hash=hash_password(config.tenants[SLUG], RIGHT))
            db.add(user)
            db.flush()
            return user.id
    finally:
        engine.dispose()


def test_fifty_concurrent_wrong_passwords_over_two_processes_reach_the_hash_exactly_n_times(
    brokers: list[str], config_path: Path
):
    user_id = _add_user(config_path)
    all_sent = threading.Barrier(GUESSES)

    def guess(number: int) -> int:
        url = f"{brokers[number % 2]}/t/{SLUG}/login"
        with requests.Session() as browser:
            all_sent.wait(timeout=10)
            answer = browser.post(url, data={"email": EMAIL, "password": f"wrong-{number}"},
                                  allow_redirects=False, timeout=15)
        return answer.status_code

    with ThreadPoolExecutor(max_workers=GUESSES) as pool:
        statuses = Counter(pool.map(guess, range(GUESSES)))

    # "invalid" (401) or "locked" (403) only. A checked guess that finishes after another one
    # took the last try already hears "locked", so at most N - 1 hear "invalid".
    assert set(statuses) <= {401, 403} and sum(statuses.values()) == GUESSES
    assert statuses[401] <= MAX_ATTEMPTS - 1

    right = requests.post(f"{brokers[1]}/t/{SLUG}/login",
                          data={"email": EMAIL, "password": RIGHT}, allow_redirects=False,
                          timeout=15)
    assert right.status_code == 403 and "bsid_" not in right.headers.get("Set-Cookie", "")

    config = load_config(config_path)
    engine = database.make_engine(config.database_url)
    try:
        with database.make_sessionmaker(engine)() as db:
            reasons = Counter(db.scalars(
                select(AuditEvent.reason).where(AuditEvent.event == "login_failed")
            ))
            assert reasons == {"wrong password": MAX_ATTEMPTS,
                               "account locked": GUESSES - MAX_ATTEMPTS + 1}
            user = db.get(User, user_id)
            assert (user.failed_logins, user.lock_count) == (MAX_ATTEMPTS, 1)
            locks = db.scalar(select(func.count()).select_from(AuditEvent)
                              .where(AuditEvent.event == "account_locked"))
            assert locks == 1
            assert db.scalar(select(func.count()).select_from(OutboxMessage)) == 1
    finally:
        engine.dispose()

