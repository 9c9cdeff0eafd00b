"""Upstream discovery documents and JWK sets, fetched over HTTPS and cached per process.

Providers are built per request, so the cache lives outside them. A JWK set is fetched again
when a token names a key id we do not know: that is how upstreams rotate keys.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import requests

from .identity import UpstreamError

DEFAULT_TTL_SECONDS = 3600.0
HTTP_TIMEOUT_SECONDS = 10.0


@dataclass
class _Entry:
    document: dict[str, Any]
    fetched_at: float


class DocumentCache:
    """JSON documents by URL, kept for ``ttl_seconds``; thread-safe."""

    def __init__(self, ttl_seconds: float = DEFAULT_TTL_SECONDS) -> None:
        self.ttl_seconds = ttl_seconds
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    def get(self, url: str, *, refresh: bool = False, error_code: str = "discovery_failed"
            ) -> dict[str, Any]:
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(url)
        if entry and not refresh and now - entry.fetched_at < self.ttl_seconds:
            return entry.document
        document = fetch_json(url, error_code=error_code)
        with self._lock:
            self._entries[url] = _Entry(document, now)
        return document

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def fetch_json(url: str, *, error_code: str) -> dict[str, Any]:
    try:
        response = requests.get(url, timeout=HTTP_TIMEOUT_SECONDS)
        response.raise_for_status()
        document = response.json()
    except (requests.RequestException, ValueError) as error:
        raise UpstreamError(error_code, f"cannot fetch {url}: {type(error).__name__}") from None
    if not isinstance(document, dict):
        raise UpstreamError(error_code, f"{url} did not return a JSON object")
    return document


shared_cache = DocumentCache()
