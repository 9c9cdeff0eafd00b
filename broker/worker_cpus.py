"""``broker serve --pin-workers``: each gunicorn worker on a CPU of its own.

A worker confined to one CPU verifies passwords keeping the interpreter lock
(``broker.passwords``), so that a login's other work runs between verifies instead of cutting
into them; this is also the set-up ``bench/login_throughput.py`` measures. The master picks the
CPU before it forks (it alone knows which CPUs its live workers hold), the new worker pins
itself after the fork, and a worker that replaces one that died takes the CPU left free.
"""

from __future__ import annotations

import os
from typing import Any

CPU_ATTRIBUTE = "broker_cpu"


def pick_cpu_before_fork(arbiter: Any, worker: Any) -> None:
    """gunicorn's ``pre_fork`` hook, in the master: the CPU its live workers use least."""
    cpus = sorted(os.sched_getaffinity(0))
    holders = [getattr(live, CPU_ATTRIBUTE, None) for live in arbiter.WORKERS.values()]
    setattr(worker, CPU_ATTRIBUTE, min(cpus, key=lambda cpu: (holders.count(cpu), cpu)))


def pin_after_fork(arbiter: Any, worker: Any) -> None:
    """gunicorn's ``post_fork`` hook, in the new worker: run on the CPU picked for it."""
    cpu = getattr(worker, CPU_ATTRIBUTE)
    os.sched_setaffinity(0, {cpu})
    worker.log.info("worker %s runs on CPU %s", worker.pid, cpu)
