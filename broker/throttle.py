"""Throttles in front of every form where a secret or a target can be guessed (``limits``).

The attempt counters in ``broker.attempts`` are exact and lock one secret after N wrong guesses.
Throttles sit before them and bound the *rate*: per source address (one address spraying many
accounts) and per target (many addresses at one email, customer number or phone). A view opts
in with one line under its route::

    @blueprint.post("/login")
    @throttled("login", target=EMAIL)
    def login_submit(tenant): ...

``init_app`` builds one ``Throttle`` per app from ``config.throttle`` and wraps the marked views
with its limits; counters (``broker.rate_counters``) are in memory per process, or in Redis
shared by every process when ``config.redis_url`` is set (if Redis stops answering, each
process falls back to memory rather than refusing logins). Keys are keyed HMACs, so Redis
never holds an email, a phone number or an address. A throttled request gets a calm 429 page
that is the same for registered and unknown targets, a ``Retry-After`` header, and one
``throttled`` audit record per key and minute (so a flood cannot turn into a flood of audit
rows).
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import Flask, current_app, jsonify, render_template, request
from limits import RateLimitItem, RateLimitItemPerMinute, parse_many

from . import audit
from . import db as database
from .config import BrokerConfig, ThrottleConfig
from .customers.contact import InvalidPhone, normalise_email, normalise_phone
from .messaging.compose import InvalidEmailAddress, stored_address
from .rate_counters import RateCounters
from .security import keyed_hmac
from .state import current

log = logging.getLogger(__name__)

View = TypeVar("View", bound=Callable[..., Any])
MARK = "_broker_throttle"
EXTENSION = "broker_throttle"

# What a per-target limit counts: the form field it reads, normalised as the flows store it.
EMAIL = "email"
# An address the form will write to, as the flow reads it (quotes, comments and spaces out):
# every spelling that reaches one mailbox shares one budget (registration, resend).
ADDRESS_TO_WRITE_TO = "address_to_write_to"
CUSTOMER_NUMBER = "customer_number"
CONTACT = "contact"  # forgot PIN: the phone (channel "sms") or email the PINs are sent to
CLIENT = "client"  # the OIDC client of a token, revocation or introspection call
TARGETS = (EMAIL, ADDRESS_TO_WRITE_TO, CUSTOMER_NUMBER, CONTACT, CLIENT)

AUDIT_ONCE_PER = RateLimitItemPerMinute(1)


@dataclass(frozen=True)
class ThrottleSpec:
    """Which section of ``config.throttle`` limits a view, what it counts, on which methods."""

    form: str
    target: str | None
    methods: tuple[str, ...]


def throttled(form: str, *, target: str | None = None,
              methods: tuple[str, ...] = ("POST",)) -> Callable[[View], View]:
    """Mark a view for the limits of ``config.throttle.<form>``; ``init_app`` applies them."""
    if target is not None and target not in TARGETS:
        raise ValueError(f"unknown throttle target {target!r}")
    if form != "oidc" and form not in ThrottleConfig.model_fields:
        raise ValueError(f"no throttle section {form!r}")

    def mark(view: View) -> View:
        setattr(view, MARK, ThrottleSpec(form, target, tuple(m.upper() for m in methods)))
        return view

    return mark


# --- Keys -----------------------------------------------------------------------------------


def _digest(value: str) -> str:
    """Keyed, so a Redis dump or an audit record reveals no email, phone or address."""
    return keyed_hmac(current().config.hmac_key, value, purpose="throttle")[:32]


@functools.lru_cache(maxsize=4096)
def network_of(address: str | None) -> str:
    """The unit one party controls: an IPv4 address, or an IPv6 /64 (handed out whole).

    An IPv4 client of a dual-stack listener arrives as ``::ffff:a.b.c.d``: it is that IPv4
    address, not one /64 for every IPv4 client. A proxy may write ``ip:port``: the port is
    not the party. What does not parse at all shares one budget (``unparsed``), so that junk
    cannot buy a fresh one per spelling. Cached: the same few addresses come again and again."""
    if not address:
        return "unknown"
    ip = _ip_of(address.strip())
    if ip is None:
        return "unparsed"
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def _ip_of(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address in ``text``, also as ``a.b.c.d:port`` or ``[v6]:port``."""
    if text.startswith("[") and "]" in text:
        text = text[1:text.index("]")]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def address_key() -> str:
    return "addr:" + _digest(network_of(request.remote_addr))


def _tenant_slug() -> str:
    return str((request.view_args or {}).get("tenant", ""))


def target_value(target: str, tenant_slug: str) -> str:
    """The target of this request as the flows store it, so spellings share one counter."""
    from policies.binding import normalise_customer_number

    if target == EMAIL:
        return normalise_email(request.form.get("email", ""))
    if target == ADDRESS_TO_WRITE_TO:
        return canonical_address(request.form.get("email", ""))
    if target == CUSTOMER_NUMBER:
        return normalise_customer_number(request.form.get("customer_number", ""))
    if target == CONTACT:
        if request.form.get("channel") != "sms":
            return "email:" + normalise_email(request.form.get("email", ""))
        typed = request.form.get("phone", "")
        tenant = current().tenant(tenant_slug)
        try:
            return "phone:" + normalise_phone(typed, tenant.country if tenant else "")
        except InvalidPhone:
            return "phone:" + typed.strip()
    return _client_id(tenant_slug)


def canonical_address(typed: str) -> str:
    """``typed`` as registration stores it (``flows.registration``), or, when it is no address
    at all, as typed (lower-case, trimmed)."""
    try:
        return stored_address(typed)
    except InvalidEmailAddress:
        return normalise_email(typed)


def _client_id(tenant_slug: str) -> str:
    """A registered client of this tenant counts under its id; anything else per address."""
    auth = request.authorization
    client_id = (auth.username if auth and auth.username else None) or request.form.get(
        "client_id", ""
    )
    tenant = current().tenant(tenant_slug)
    if client_id and tenant is not None and tenant.client(client_id) is not None:
        return f"client:{client_id}"
    return f"unknown-client:{network_of(request.remote_addr)}"


def target_key_for(target: str) -> Callable[[], str]:
    def key() -> str:
        tenant = _tenant_slug()
        return f"{target}:" + _digest(f"{tenant}\x00{target_value(target, tenant)}")

    return key


# --- The throttled answer ---------------------------------------------------------------------


@dataclass(frozen=True)
class Limit:
    """One limit on one view: what it allows, what it counts, and how to name the counter."""

    item: RateLimitItem
    counted: str
    key: Callable[[], str]
    scope: str  # "<endpoint>:<counted>", the counter's last name part

    def identifiers(self, prefix: str) -> tuple[str, str, str]:
        return prefix, self.key(), self.scope


class Throttle:
    """This app's limits per view, counted in ``RateCounters``."""

    def __init__(self, settings: ThrottleConfig, redis_url: str | None) -> None:
        self.prefix = settings.key_prefix
        self.counters = RateCounters(redis_url or "memory://", settings.strategy,
                                     fall_back_to_memory=bool(redis_url))

    def guard(self, view: Callable[..., Any], spec: ThrottleSpec,
              limits: list[Limit]) -> Callable[..., Any]:
        """``view`` behind ``limits``: the first limit a request breaks answers it (429)."""

        @functools.wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            # Flask answers HEAD with the GET view: counted as the GET it is.
            method = "GET" if request.method == "HEAD" else request.method
            if method in spec.methods:
                for limit in limits:
                    identifiers = limit.identifiers(self.prefix)
                    if not self.counters.hit(limit.item, *identifiers):
                        return self._refuse(spec, limit, identifiers)
            return view(*args, **kwargs)

        guarded.throttle_limits = tuple(limits)  # type: ignore[attr-defined] # for inspection
        return guarded

    def _refuse(self, spec: ThrottleSpec, limit: Limit, identifiers: tuple[str, ...]) -> Any:
        log.info("throttled: %s per %s over %s", spec.form, limit.counted, limit.item)
        retry_after = self._retry_after(limit, identifiers)
        self._audit_once(spec, limit, identifiers[1])
        if spec.form == "oidc":
            response = jsonify(error="temporarily_unavailable",
                               error_description="Too many requests; retry later.")
            response.headers["Cache-Control"] = "no-store"
        else:
            tenant = current().tenant(_tenant_slug())
            response = current_app.make_response(
                render_template("throttled.html", tenant=tenant,
                                minutes=max(1, math.ceil(retry_after / 60)))
            )
        response.status_code = 429
        response.headers["Retry-After"] = str(retry_after)
        return response

    def _retry_after(self, limit: Limit, identifiers: tuple[str, ...]) -> int:
        """Seconds until the limit lets this key in again: never more than its window (the
        moving-window strategy reports whole seconds and could say 61 for a minute)."""
        try:
            wait = math.ceil(self.counters.reset_at(limit.item, *identifiers) - time.time())
            return max(1, min(wait, limit.item.get_expiry()))
        except Exception:  # noqa: BLE001 - the storage went away between hit and answer
            return 60

    def _audit_once(self, spec: ThrottleSpec, limit: Limit, key: str) -> None:
        """One ``throttled`` record per key, form and minute; never fails the answer."""
        try:
            if not self.counters.hit(AUDIT_ONCE_PER, self.prefix, "audited", key, spec.form):
                return
            tenant_slug = _tenant_slug()
            with database.transaction(current().sessions) as db:
                audit.record(
                    db, "throttled",
                    tenant=tenant_slug if current().tenant(tenant_slug) else None,
                    actor_type="anonymous",
                    source_address=request.remote_addr,
                    reason=f"{spec.form} per {limit.counted}",
                    outcome="refused",
                    form=spec.form, counted=limit.counted, limit=str(limit.item), key=key,
                    endpoint=request.endpoint,
                )
        except Exception:  # noqa: BLE001 - the 429 matters more than its audit record
            log.exception("throttled request not audited")


# --- Setting up ------------------------------------------------------------------------------


def _limits_for(endpoint: str, spec: ThrottleSpec, config: ThrottleConfig) -> list[Limit]:
    """The limits the config turns on for a view (each item of a "5/hour;20/day" string
    apart), shortest window first."""
    if spec.form == "oidc":
        per_client = config.oidc.per_client
        wanted = [(per_client, CLIENT, target_key_for(CLIENT))] if per_client else []
    else:
        section = getattr(config, spec.form)
        wanted = []
        if section.per_address:
            wanted.append((section.per_address, "address", address_key))
        if section.per_target and spec.target:
            wanted.append((section.per_target, spec.target, target_key_for(spec.target)))
    limits = [Limit(item, counted, key, f"{endpoint}:{counted}")
              for text, counted, key in wanted for item in parse_many(text)]
    # Shortest window first, as Flask-Limiter checked them: a request the per-minute limit
    # refuses then spends nothing of a per-day allowance.
    return sorted(limits, key=lambda limit: limit.item.get_expiry())


def init_app(app: Flask, config: BrokerConfig) -> Throttle | None:
    """Build this app's throttle and wrap every view marked with ``throttled``."""
    settings = config.throttle
    if not settings.enabled:
        return None
    throttle = Throttle(settings, config.redis_url)
    for endpoint, view in list(app.view_functions.items()):
        spec: ThrottleSpec | None = getattr(view, MARK, None)
        if spec is not None:
            limits = _limits_for(endpoint, spec, settings)
            if limits:
                app.view_functions[endpoint] = throttle.guard(view, spec, limits)
    app.extensions[EXTENSION] = throttle
    return throttle
