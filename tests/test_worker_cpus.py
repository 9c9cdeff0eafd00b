"""``broker serve --pin-workers``: each worker on a CPU of its own, also after a worker dies."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from broker import passwords, worker_cpus
from broker.argon2_verify import holding_verifier

from .test_lockout_processes import CONFIG, ROOT, SLUG, _free_port, _stop_all, _wait_until_up
from .test_passwords import cheap_tenant


def arbiter_with(*cpus: int | None) -> SimpleNamespace:
    workers = {}
    for pid, cpu in enumerate(cpus, start=100):
        worker = SimpleNamespace()
        if cpu is not None:
            setattr(worker, worker_cpus.CPU_ATTRIBUTE, cpu)
        workers[pid] = worker
    return SimpleNamespace(WORKERS=workers)


def picked(arbiter: SimpleNamespace) -> int:
    worker = SimpleNamespace()
    worker_cpus.pick_cpu_before_fork(arbiter, worker)
    return int(getattr(worker, worker_cpus.CPU_ATTRIBUTE))


def test_the_master_gives_each_new_worker_the_cpu_its_live_workers_use_least(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {4, 5, 6})
    assert picked(arbiter_with()) == 4
    assert picked(arbiter_with(4)) == 5
    assert picked(arbiter_with(4, 5)) == 6
    assert picked(arbiter_with(4, 5, 6)) == 4  # more workers than CPUs: spread evenly
    assert picked(arbiter_with(4, 5, 6, 4)) == 5
    assert picked(arbiter_with(4, 6)) == 5  # the worker on 5 died: its successor takes 5
    assert picked(arbiter_with(None, 4)) == 5  # a worker without a CPU holds none


def cpus_of(pid: int) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Cpus_allowed_list:"):
            return line.split()[1]
    raise AssertionError(f"no Cpus_allowed_list for {pid}")


def pinned_cpu(pid: int, allowed: set[str]) -> str:
    """The one CPU ``pid`` runs on, once its ``post_fork`` has pinned it."""
    deadline = time.monotonic() + 30
    while (cpus := cpus_of(pid)) not in allowed and time.monotonic() < deadline:
        time.sleep(0.05)
    return cpus


def workers_of(master: int) -> list[int]:
    return [int(pid) for pid in
            Path(f"/proc/{master}/task/{master}/children").read_text().split()]


def test_a_pinned_worker_verifies_keeping_the_gil_even_with_a_pool_made_before(monkeypatch):
    tenant = cheap_tenant()
    stored = passwords.hash_password(tenant, "Correct-Horse-42")
    kept: list[str] = []
    real = holding_verifier()
    assert real is not None
    monkeypatch.setattr(passwords, "holding_verifier",
                        lambda: lambda *args: kept.append("kept") or real(*args))
    monkeypatch.setattr(passwords, "hashing_threads", lambda: 1)  # what the pin gives
    monkeypatch.setattr(passwords, "_keep_gil", False)
    monkeypatch.setattr(passwords, "_pool", None)
    assert passwords.verify_password(tenant, stored, "Correct-Horse-42")
    assert kept == []  # not pinned yet: argon2-cffi, GIL released

    pinned: list[set[int]] = []
    monkeypatch.setattr(os, "sched_setaffinity", lambda _pid, cpus: pinned.append(cpus))
    log = SimpleNamespace(info=lambda *args: None)
    worker_cpus.pin_after_fork(None, SimpleNamespace(pid=1, log=log,
                                                     **{worker_cpus.CPU_ATTRIBUTE: 3}))
    assert pinned == [{3}] and passwords._keep_gil
    assert passwords.verify_password(tenant, stored, "Correct-Horse-42")
    assert kept == ["kept"]


def test_a_worker_whose_cpu_is_gone_runs_unpinned_rather_than_fail(monkeypatch):
    def refuse(_pid: int, _cpus: set[int]) -> None:
        raise OSError(22, "Invalid argument")

    warnings: list[str] = []
    log = SimpleNamespace(warning=lambda message, *args: warnings.append(message % args),
                          info=lambda *args: None)
    worker = SimpleNamespace(pid=4242, log=log, **{worker_cpus.CPU_ATTRIBUTE: 7})
    monkeypatch.setattr(os, "sched_setaffinity", refuse)
    monkeypatch.setattr(passwords, "_keep_gil", False)
    worker_cpus.pin_after_fork(None, worker)
    assert warnings == ["worker 4242 not pinned to CPU 7: [Errno 22] Invalid argument"]
    assert not passwords._keep_gil  # unpinned: it may share its CPU, so it releases the GIL


def settings_of_serve(monkeypatch, *arguments: str) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """What ``broker serve`` hands gunicorn, without starting it."""
    from click.testing import CliRunner
    from gunicorn.app.base import BaseApplication

    from broker.cli import main

    seen: dict[str, object] = {}

    def run(self):  # type: ignore[no-untyped-def]
        seen.update(workers=self.cfg.workers, pre_fork=self.cfg.pre_fork,
                    post_fork=self.cfg.post_fork)

    monkeypatch.setattr(BaseApplication, "run", run)
    monkeypatch.setattr(worker_cpus, "usable_cpus", lambda: 6)
    with tempfile.TemporaryDirectory() as folder:  # the example, with keys of its own
        config = Path(folder) / "broker.toml"
        config.write_text((ROOT / "config.example.toml").read_text().replace(
            "CHANGE-ME", secrets.token_urlsafe(24)), encoding="utf-8")
        result = CliRunner().invoke(main, ["serve", "--config", str(config), *arguments])
    assert result.exit_code == 0, result.output
    seen["output"] = result.output
    return seen


def test_pinned_workers_default_to_one_per_cpu_and_fewer_are_pointed_out(monkeypatch):
    pinned = settings_of_serve(monkeypatch, "--pin-workers")
    assert pinned["workers"] == 6
    assert pinned["pre_fork"] is worker_cpus.pick_cpu_before_fork
    assert pinned["post_fork"] is worker_cpus.pin_after_fork
    fewer = settings_of_serve(monkeypatch, "--pin-workers", "--workers", "2")
    assert fewer["workers"] == 2 and "leave 4 of 6 CPUs unused" in str(fewer["output"])
    unpinned = settings_of_serve(monkeypatch)
    assert unpinned["workers"] == 2
    assert unpinned["pre_fork"] is not worker_cpus.pick_cpu_before_fork


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to pin to")
@pytest.mark.skipif(not Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").exists(),
                    reason="this kernel lists no children in /proc (CONFIG_PROC_CHILDREN)")
def test_two_pinned_workers_run_on_two_cpus_and_a_replacement_takes_the_freed_one(
    sqlite_url: str, tmp_path: Path
):
    config_path = tmp_path / "broker.toml"
    config_path.write_text(CONFIG.format(database_url=sqlite_url, slug=SLUG, max_attempts=3),
                           encoding="utf-8")
    port = _free_port()
    with (tmp_path / "serve.log").open("wb") as log:
        master = subprocess.Popen(
            [sys.executable, "-c", "from broker.cli import main; main()", "serve",
             "--config", str(config_path), "--bind", f"127.0.0.1:{port}", "--workers", "2",
             "--pin-workers"],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            _wait_until_up(f"http://127.0.0.1:{port}", master, time.monotonic() + 30)
            deadline = time.monotonic() + 30
            while len(workers_of(master.pid)) < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
            first, second = workers_of(master.pid)
            allowed = {str(cpu) for cpu in os.sched_getaffinity(0)}
            pinned = {first: pinned_cpu(first, allowed), second: pinned_cpu(second, allowed)}
            assert set(pinned.values()) <= allowed and len(set(pinned.values())) == 2

            os.kill(first, signal.SIGKILL)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                successors = [pid for pid in workers_of(master.pid) if pid not in pinned]
                if successors:
                    break
                time.sleep(0.1)
            assert successors, "gunicorn started no worker in place of the killed one"
            assert pinned_cpu(successors[0], allowed) == pinned[first]
            assert cpus_of(second) == pinned[second]
        finally:
            _stop_all([master])
    assert "runs on CPU" in (tmp_path / "serve.log").read_text()
