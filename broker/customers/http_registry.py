"""A tenant's live customer system over HTTP, instead of the imported SQL register.

A utility's own system cannot look customers up by the broker's keyed digests, so it checks the
proofs itself. The broker keeps a local copy of each account it binds (a ``customer_accounts``
row with number, kind, name, address, email and phone, never a proof digest), and bindings,
claims and delegation go on working on the broker's tables.

The JSON API a utility implements (``binding.registry.url`` below as ``{url}``)
-----------------------------------------------------------------------------------
Every call is ``POST`` with a JSON body and ``Authorization: Bearer <binding.registry.token>``,
over TLS. A customer object is ``{"number", "kind": "private"|"company", "name", "address",
"email", "phone"}`` (email and phone may be null).

``POST {url}/proofs/verify``  ``{"customer_number", "kind": "pin"|"bill_code"|"invoice",
"value"}``  ->  200 ``{"ok": true, "customer": {...}}`` when the value proves the account,
200 ``{"ok": false}`` otherwise (also for an unknown number). Values arrive as typed, minus
spaces and dashes, upper-cased. The PIN is never stored or logged by the broker.

``POST {url}/customers/by-national-id``  ``{"national_id", "country"}``  ->  200
``{"customers": [...]}`` (possibly empty). The national id comes from a MitID or FTN login,
normalised for the country (CPR digits only, hetu upper-cased). The utility's system already
holds it; the broker sends it over TLS for this match and never stores it.

``POST {url}/contact/send-reminder``  ``{"channel": "email"|"sms", "email" | "phone",
"customer_number"?}``  ->  202. When the contact is on record (and the number, if given, is
theirs) the utility's system sends the customer number(s) and a PIN itself, so the broker never
sees a PIN. It answers 202 whether or not anything matched. Emails are lower-case, phones E.164.

What the broker does with the answers
-------------------------------------
- Attempt limits per customer number (``broker.attempts``) are taken *before* the proof goes
  to the utility, and a try stays counted whatever happens next: a timeout or a 5xx is never a
  free guess. The user then reads "customer system unavailable, try later"; nothing is bound.
- Timeouts: ``binding.registry.timeout_seconds`` per call, counted from the start of the call
  to the last byte of the body, not per socket read: an answer that trickles in is cut off when
  the time is up. Answers are read uncompressed (``Accept-Encoding: identity``) and at most
  :data:`MAX_ANSWER_BYTES` long; a slower or longer one is unavailable, as a timeout is. Only
  the national-id lookup, which changes nothing at the utility, is retried (once). A proof
  check is not retried (the utility may count tries too) and neither is a reminder (it could
  go out twice).
- 5xx, timeouts, connection errors, 4xx (a wrong token is a configuration error) and answers
  that do not follow this contract all mean :class:`CustomerSystemUnavailable`; the log says
  which, without any personal value.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import requests
from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session
from urllib3.exceptions import HTTPError as TransportError

from broker.config import RegistryConfig, TenantConfig
from broker.customers.contact import InvalidPhone, normalise_email, normalise_phone
from broker.customers.registry import CustomerRecord, CustomerSystemUnavailable
from broker.models import CustomerAccount, utcnow
from policies.binding import normalise_customer_number, normalise_national_id

log = logging.getLogger("broker.customers")

ACCOUNT_KINDS = ("private", "company")
LOOKUP_RETRIES = 1
MAX_NUMBER_LENGTH = 64
# A contract answer is a handful of customers; anything near this is a fault or an attack.
MAX_ANSWER_BYTES = 256 * 1024
READ_BYTES = 16 * 1024


class AnswerOverLimit(Exception):
    """The answer outran the call's deadline or size cap: unavailable, as a timeout is."""


@dataclass(frozen=True)
class RemoteCustomer:
    """One customer as the utility's system describes it, checked against the contract."""

    number: str
    kind: str
    name: str
    address: str
    email: str | None
    phone: str | None


class HttpCustomerSystem:
    """The three calls of the contract: auth, timeouts, the retry rule, answers checked."""

    def __init__(self, settings: RegistryConfig, *, country: str) -> None:
        if not settings.url:
            raise ValueError("an http registry needs a url")
        self.url = settings.url.rstrip("/")
        self.token = settings.token
        self.timeout_seconds = settings.timeout_seconds
        self.country = country

    def verify_proof(self, customer_number: str, kind: str, value: str) -> RemoteCustomer | None:
        """The customer when ``value`` proves ``customer_number``; None when it does not."""
        answer = self._post(
            "/proofs/verify", {"customer_number": customer_number, "kind": kind, "value": value},
            retries=0,
        )
        ok = answer.get("ok")
        if ok is False:
            return None
        if ok is not True:
            raise _malformed("/proofs/verify", "ok is not a boolean")
        customer = self._customer(answer.get("customer"), "/proofs/verify")
        if customer.number != customer_number:
            raise _malformed("/proofs/verify", "customer is another number")
        return customer

    def customers_by_national_id(self, national_id: str, country: str) -> list[RemoteCustomer]:
        answer = self._post(
            "/customers/by-national-id", {"national_id": national_id, "country": country},
            retries=LOOKUP_RETRIES,
        )
        customers = answer.get("customers")
        if not isinstance(customers, list):
            raise _malformed("/customers/by-national-id", "customers is not a list")
        return [self._customer(item, "/customers/by-national-id") for item in customers]

    def send_reminder(
        self, channel: str, *, email: str | None, phone: str | None,
        customer_number: str | None,
    ) -> None:
        payload: dict[str, Any] = {"channel": channel}
        if channel == "email":
            payload["email"] = email
        else:
            payload["phone"] = phone
        if customer_number:
            payload["customer_number"] = customer_number
        self._post("/contact/send-reminder", payload, retries=0, expect_body=False)

    def _post(
        self, path: str, payload: dict[str, Any], *, retries: int, expect_body: bool = True
    ) -> dict[str, Any]:
        problem = ""
        for _ in range(retries + 1):
            try:
                status, content = self._exchange(path, payload, read_body=expect_body)
            except AnswerOverLimit as error:
                problem = str(error)
                continue
            except (requests.RequestException, TransportError) as error:
                problem = type(error).__name__
                continue
            if status >= 500:
                problem = f"answered {status}"
                continue
            if not 200 <= status < 300:
                # 4xx: our request or token is wrong; trying again would not help.
                problem = f"answered {status}"
                break
            return _json_object(path, content) if expect_body else {}
        log.warning("customer system unavailable", extra={"call": path, "problem": problem})
        raise CustomerSystemUnavailable(f"{path}: {problem}")

    def _exchange(
        self, path: str, payload: dict[str, Any], *, read_body: bool
    ) -> tuple[int, bytes]:
        """One POST whose body is cut off ``timeout_seconds`` after the call began: requests'
        own timeout holds per socket read, so an answer dripping a byte at a time would hold a
        worker for ever. (Connecting, and each read of the status line and headers, still wait
        at most the timeout as requests has them.)"""
        deadline = time.monotonic() + self.timeout_seconds
        response = requests.post(
            self.url + path, json=payload, headers=self._headers(),
            timeout=self.timeout_seconds, allow_redirects=False, stream=True,
        )
        try:
            if not (read_body and 200 <= response.status_code < 300):
                return response.status_code, b""
            if response.headers.get("Content-Encoding", "identity").lower() != "identity":
                raise _malformed(path, "body is compressed")
            return response.status_code, _read_body(response, deadline)
        finally:
            response.close()

    def _headers(self) -> dict[str, str]:
        """Uncompressed answers only, so that the size cap counts what we parse."""
        headers = {"Accept": "application/json", "Accept-Encoding": "identity"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def _customer(self, item: Any, path: str) -> RemoteCustomer:
        if not isinstance(item, dict):
            raise _malformed(path, "customer is not an object")
        number = normalise_customer_number(str(item.get("number") or ""))
        kind = item.get("kind")
        if not number or len(number) > MAX_NUMBER_LENGTH or kind not in ACCOUNT_KINDS:
            raise _malformed(path, "customer number or kind missing")
        return RemoteCustomer(
            number=number,
            kind=kind,
            name=_text(item.get("name"), 200),
            address=_text(item.get("address"), 300),
            email=normalise_email(_text(item.get("email"), 320)) or None,
            phone=self._phone(item.get("phone")),
        )

    def _phone(self, value: Any) -> str | None:
        """Phones are kept in E.164 like the SQL register's; one we cannot parse is left out."""
        if not isinstance(value, str) or not value.strip():
            return None
        try:
            return normalise_phone(value, self.country)
        except InvalidPhone:
            return None


class HttpRegistry:
    """The :class:`~broker.customers.registry.ProofVerifyingRegistry` of an http tenant: the
    utility's answers, recorded as local copies so that the flows can bind to them."""

    def __init__(
        self, db: Session, tenant: TenantConfig, system: HttpCustomerSystem | None = None
    ) -> None:
        self.db = db
        self.tenant = tenant
        self.system = system or HttpCustomerSystem(tenant.binding.registry, country=tenant.country)

    def verify_proof(
        self, customer_number: str, proof_kind: str, proof_value: str
    ) -> CustomerRecord | None:
        customer = self.system.verify_proof(customer_number, proof_kind, proof_value)
        return self._local_copy(customer) if customer else None

    def find_by_national_id(self, national_id: str, country: str) -> list[CustomerRecord]:
        customers = self.system.customers_by_national_id(
            normalise_national_id(national_id, country), country
        )
        unique = {customer.number: customer for customer in customers}
        return [self._local_copy(unique[number]) for number in sorted(unique)]

    def send_reminder(
        self, channel: str, *, email: str | None = None, phone: str | None = None,
        customer_number: str | None = None,
    ) -> None:
        self.system.send_reminder(
            channel, email=email, phone=phone, customer_number=customer_number
        )

    def _local_copy(self, customer: RemoteCustomer) -> CustomerRecord:
        """Insert or refresh the account's row; two requests binding it at once share one row."""
        now = utcnow()
        details = {
            "kind": customer.kind, "name": customer.name, "address_label": customer.address,
            "email": customer.email, "phone": customer.phone,
        }
        table = CustomerAccount.__table__
        insert = postgresql_insert if self.db.get_bind().dialect.name == "postgresql" else (
            sqlite_insert
        )
        self.db.execute(
            insert(table)
            .values(tenant=self.tenant.slug, number=customer.number, created_at=now,
                    updated_at=now, **details)
            .on_conflict_do_nothing(index_elements=["tenant", "number"])
        )
        self.db.execute(
            update(table)
            .where(table.c.tenant == self.tenant.slug, table.c.number == customer.number)
            .values(updated_at=now, **details)
        )
        account_id = self.db.scalar(
            select(CustomerAccount.id).where(
                CustomerAccount.tenant == self.tenant.slug,
                CustomerAccount.number == customer.number,
            )
        )
        assert account_id is not None  # inserted or already there just above
        return CustomerRecord(
            account_id=account_id, number=customer.number, kind=customer.kind,
            name=customer.name, address_label=customer.address, email=customer.email,
            phone=customer.phone,
        )


def _read_body(response: requests.Response, deadline: float) -> bytes:
    """The body, cut off at the call's deadline: a watchdog shuts the socket then, waking a
    read that requests' per-read timeout would let a trickling answer extend for ever."""
    _raise_if_too_slow(deadline)
    cut_off = threading.Timer(deadline - time.monotonic(), _shut_down, (response,))
    cut_off.start()
    try:
        body = _read_capped(response)
    except TransportError:
        _raise_if_too_slow(deadline)  # the cut-off, not the connection, ended the read
        raise
    finally:
        cut_off.cancel()
        cut_off.join()  # so that it cannot touch the socket once the response is closed
    _raise_if_too_slow(deadline)  # an answer without a length ends quietly when cut off
    return body


def _read_capped(response: requests.Response) -> bytes:
    """The raw body, refused as soon as it outgrows :data:`MAX_ANSWER_BYTES`."""
    body = bytearray()
    for chunk in response.raw.stream(READ_BYTES, decode_content=False):
        body += chunk
        if len(body) > MAX_ANSWER_BYTES:
            raise AnswerOverLimit("answer too large")
    return bytes(body)


def _raise_if_too_slow(deadline: float) -> None:
    if time.monotonic() >= deadline:
        raise AnswerOverLimit("answer too slow")


def _shut_down(response: requests.Response) -> None:
    """Wake a read blocked on the answer's socket; the read may just have finished."""
    with contextlib.suppress(ValueError, RuntimeError, OSError):
        response.raw.shutdown()


def _json_object(path: str, content: bytes) -> dict[str, Any]:
    """The answer as a JSON object. Anything else, also JSON nested deeper than the parser's
    recursion limit, is outside the contract and so unavailable, never a crash."""
    try:
        body = json.loads(content)
    except (ValueError, RecursionError):
        raise _malformed(path, "body is not JSON") from None
    if not isinstance(body, dict):
        raise _malformed(path, "body is not an object")
    return body


def _text(value: Any, limit: int) -> str:
    return value.strip()[:limit] if isinstance(value, str) else ""


def _malformed(path: str, problem: str) -> CustomerSystemUnavailable:
    log.warning("customer system answered outside the contract",
                extra={"call": path, "problem": problem})
    return CustomerSystemUnavailable(f"{path}: {problem}")
