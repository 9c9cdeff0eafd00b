"""A utility's customer system that answers too slowly, too much or too deeply.

requests applies its timeout to each socket read, so an answer trickling in a byte at a time
could hold a worker long past ``timeout_seconds``, and an answer's size had no cap. A fake
system on a loopback port misbehaves in those ways; the broker must give up within the
timeout (plus a small margin), refuse an over-size answer, and treat JSON nested past the
parser's limit as any other answer outside the contract: "customer system unavailable".
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import select
from werkzeug.wrappers import Response

from broker.config import RegistryConfig
from broker.customers.http_registry import MAX_ANSWER_BYTES, HttpCustomerSystem
from broker.customers.registry import CustomerSystemUnavailable
from broker.models import AttemptCounter, Binding
from flows.binding import bind_with_proof

from .customers_support import Broker
from .live import serve_wsgi

SLUG = "fjordvarme"
TOKEN = "utility-system-token-0123456789"
KARI_NUMBER = "7001234"
KARI_PIN = "482913"
TIMEOUT_SECONDS = 0.5
MARGIN_SECONDS = 0.25
NESTING = 100_000  # far past the JSON parser's recursion limit, far below the size cap


@dataclass
class MisbehavingSystem:
    """Answers every call with the body that ``answer`` yields, chunk by chunk."""

    answer: Callable[[MisbehavingSystem], Iterable[bytes]] = lambda system: [b'{"ok": false}']
    length: int | None = None
    released: threading.Event = field(default_factory=threading.Event)

    def __call__(self, environ: Any, start_response: Any) -> Any:
        response = Response(self.answer(self), mimetype="application/json")
        if self.length is not None:
            response.headers["Content-Length"] = str(self.length)
        return response(environ, start_response)

    def pause(self, seconds: float) -> None:
        """Sleep, but end at once when the test is over so no server thread lingers."""
        self.released.wait(seconds)


@pytest.fixture
def utility() -> Iterator[tuple[MisbehavingSystem, str]]:
    system = MisbehavingSystem()
    with serve_wsgi(system) as url:
        yield system, f"{url}/api"
        system.released.set()


def _customer_system(url: str, timeout_seconds: float = TIMEOUT_SECONDS) -> HttpCustomerSystem:
    settings = RegistryConfig(kind="http", url=url, token=TOKEN, timeout_seconds=timeout_seconds)
    return HttpCustomerSystem(settings, country="NO")


def _seconds_until_unavailable(system: HttpCustomerSystem) -> float:
    started = time.monotonic()
    with pytest.raises(CustomerSystemUnavailable):
        system.verify_proof(KARI_NUMBER, "pin", KARI_PIN)
    return time.monotonic() - started


def _drip(body: bytes, every_seconds: float) -> Callable[[MisbehavingSystem], Iterator[bytes]]:
    def answer(system: MisbehavingSystem) -> Iterator[bytes]:
        for byte in body:
            system.pause(every_seconds)
            yield bytes([byte])

    return answer


def _nested_answer() -> bytes:
    return b'{"ok": ' + b"[" * NESTING + b"]" * NESTING + b"}"


def test_an_answer_dripping_in_a_byte_at_a_time_ends_the_call_at_the_timeout(utility):
    system, url = utility
    body = b'{"ok": false}' + b" " * 40  # 53 bytes at 0.05 s each: 2.65 s in all
    system.answer, system.length = _drip(body, 0.05), len(body)
    elapsed = _seconds_until_unavailable(_customer_system(url))
    assert elapsed < TIMEOUT_SECONDS + MARGIN_SECONDS


def test_a_stall_after_the_first_bytes_does_not_restart_the_timeout(utility):
    system, url = utility
    timeout_seconds = 1.0

    def stall(system: MisbehavingSystem) -> Iterator[bytes]:
        system.pause(0.8)
        yield b'{"ok": '
        system.pause(5)
        yield b"false}"

    system.answer, system.length = stall, len(b'{"ok": false}')
    elapsed = _seconds_until_unavailable(_customer_system(url, timeout_seconds))
    # A timeout per read would wait 0.8 s + another full second.
    assert elapsed < timeout_seconds + MARGIN_SECONDS


def test_an_answer_over_the_size_cap_is_unavailable(utility):
    system, url = utility
    padding = "x" * MAX_ANSWER_BYTES
    system.answer = lambda _: [json.dumps({"ok": False, "padding": padding}).encode()]
    elapsed = _seconds_until_unavailable(_customer_system(url))
    assert elapsed < TIMEOUT_SECONDS + MARGIN_SECONDS


def test_a_deeply_nested_answer_is_unavailable_not_a_crash(utility):
    system, url = utility
    answer = _nested_answer()
    assert len(answer) < MAX_ANSWER_BYTES
    system.answer = lambda _: [answer]
    _seconds_until_unavailable(_customer_system(url, timeout_seconds=2))


@pytest.fixture
def sqlite_broker(sqlite_url, utility):
    instance = Broker(sqlite_url)
    system, url = utility
    tenant = instance.tenant(SLUG)
    registry = RegistryConfig(kind="http", url=url, token=TOKEN, timeout_seconds=2)
    binding = tenant.binding.model_copy(update={"registry": registry})
    instance.tenant_config = tenant.model_copy(update={"binding": binding})
    instance.system = system
    yield instance
    instance.close()


def test_a_deeply_nested_answer_shows_the_calm_unavailable_answer_and_counts_the_try(
    sqlite_broker,
):
    broker = sqlite_broker
    answer = _nested_answer()
    broker.system.answer = lambda _: [answer]
    with broker.session() as db:
        user = broker.add_user(db, SLUG, "kari@example.no")
        result = bind_with_proof(
            db, broker.tenant_config, broker.hmac_key, user, KARI_NUMBER, "pin", KARI_PIN,
            "192.0.2.7",
        )
        db.commit()
        assert not result.ok and result.reason == "customer_system_unavailable"
        assert db.scalars(select(Binding)).all() == []
        assert db.get(AttemptCounter, f"bind:{SLUG}:{KARI_NUMBER}").failures == 1
