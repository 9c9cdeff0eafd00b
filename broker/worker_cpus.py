"""``broker serve --pin-workers``: each gunicorn worker on a CPU of its own.

A pinned worker verifies passwords keeping the interpreter lock (``broker.passwords``), so
that a login's other work runs between verifies instead of cutting into them; this is also
the set-up ``bench/login_throughput.py`` measures. The master picks the
CPU before it forks (it alone knows which CPUs its live workers hold), the new worker pins
itself after the fork, and a worker that replaces one that died takes the CPU left free.
"""

from __future__ import annotations

import os
from typing import Any

from .passwords import hashing_threads, keep_gil_while_verifying

CPU_ATTRIBUTE = "broker_cpu"


def pick_cpu_before_fork(arbiter: Any, worker: Any) -> None:
    """gunicorn's ``pre_fork`` hook, in the master: the CPU its live workers use least."""
    cpus = sorted(os.sched_getaffinity(0))
    holders = [getattr(live, CPU_ATTRIBUTE, None) for live in arbiter.WORKERS.values()]
    setattr(worker, CPU_ATTRIBUTE, min(cpus, key=lambda cpu: (holders.count(cpu), cpu)))


def pin_after_fork(arbiter: Any, worker: Any) -> None:
    """gunicorn's ``post_fork`` hook, in the new worker: run on the CPU picked for it. Should
    the CPU have gone meanwhile (the cpuset changed), the worker runs unpinned rather than
    fail to boot, which would stop the whole server."""
    cpu = getattr(worker, CPU_ATTRIBUTE)
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError as error:
        worker.log.warning("worker %s not pinned to CPU %s: %s", worker.pid, cpu, error)
        return
    keep_gil_while_verifying()
    worker.log.info("worker %s runs on CPU %s", worker.pid, cpu)


def usable_cpus() -> int:
    """How many CPUs this process may use: the default number of pinned workers."""
    return hashing_threads()
