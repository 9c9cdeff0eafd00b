"""Looking up a tenant's customers: the adapter interface and the SQL register (the default).

Flows ask a :class:`CustomerRegistry` for :class:`CustomerRecord` values and never query the
customer tables themselves, so a tenant can later answer from a live customer system instead
of the imported register. Records carry digests only; no plain PIN or national id passes here.

A live customer system cannot look customers up by our digests, so it answers a different
contract, :class:`ProofVerifyingRegistry`: it checks a typed proof itself, matches a national id
it already holds, and sends forgot-PIN reminders itself (``broker/customers/http_registry.py``).
The flows ask which of the two contracts a registry speaks with ``isinstance``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from broker.models import CustomerAccount, CustomerInvoice

if TYPE_CHECKING:
    from broker.config import TenantConfig


class CustomerSystemUnavailable(Exception):
    """A live customer system did not answer usably (timeout, 5xx, refused, malformed): the
    user is told to try again later, and nothing is bound or sent."""


@dataclass(frozen=True)
class CustomerRecord:
    """One customer relation as the register knows it."""

    account_id: int
    number: str
    kind: str
    name: str
    address_label: str
    email: str | None
    phone: str | None
    national_id_hmac: str | None = None
    pin_hmac: str | None = None
    pin_expires_at: datetime | None = None
    bill_code_hmac: str | None = None
    invoice_hmacs: tuple[str, ...] = field(default_factory=tuple)

    def proof_digests(self, proof_kind: str) -> list[str | None]:
        """The stored digests a typed proof of ``proof_kind`` is checked against."""
        if proof_kind == "pin":
            return [self.pin_hmac]
        if proof_kind == "bill_code":
            return [self.bill_code_hmac]
        if proof_kind == "invoice":
            return list(self.invoice_hmacs) or [None]
        return [None]


class CustomerRegistry(Protocol):
    """What the binding and forgot-PIN flows need from a customer system."""

    def find_by_number(self, number: str) -> CustomerRecord | None: ...

    def find_by_national_id_hmac(self, national_id_hmac: str) -> list[CustomerRecord]: ...

    def find_by_contact(
        self, *, email: str | None = None, phone: str | None = None
    ) -> list[CustomerRecord]: ...


@runtime_checkable
class ProofVerifyingRegistry(Protocol):
    """A customer system that checks proofs itself and never sees our digests.

    Each method returns :class:`CustomerRecord` values of the broker's local copy of the account
    (a ``customer_accounts`` row without proof digests), so bindings, claims and delegation work
    on the broker's own tables. Each raises :class:`CustomerSystemUnavailable` when the system
    cannot answer.
    """

    def verify_proof(
        self, customer_number: str, proof_kind: str, proof_value: str
    ) -> CustomerRecord | None: ...

    def find_by_national_id(self, national_id: str, country: str) -> list[CustomerRecord]: ...

    def send_reminder(
        self, channel: str, *, email: str | None = None, phone: str | None = None,
        customer_number: str | None = None,
    ) -> None: ...


class SqlRegistry:
    """The imported register in the broker's own database (``customer_accounts``)."""

    def __init__(self, db: Session, tenant: str) -> None:
        self.db = db
        self.tenant = tenant

    def find_by_number(self, number: str) -> CustomerRecord | None:
        account = self.db.scalar(
            select(CustomerAccount).where(
                CustomerAccount.tenant == self.tenant, CustomerAccount.number == number
            )
        )
        if account is None:
            return None
        return self._records([account])[0]

    def find_by_national_id_hmac(self, national_id_hmac: str) -> list[CustomerRecord]:
        accounts = self.db.scalars(
            select(CustomerAccount)
            .where(
                CustomerAccount.tenant == self.tenant,
                CustomerAccount.national_id_hmac == national_id_hmac,
            )
            .order_by(CustomerAccount.number)
        ).all()
        return self._records(accounts)

    def find_by_contact(
        self, *, email: str | None = None, phone: str | None = None
    ) -> list[CustomerRecord]:
        """Accounts whose email (already lower-case) or E.164 phone on record is the one given."""
        conditions = []
        if email:
            conditions.append(CustomerAccount.email == email)
        if phone:
            conditions.append(CustomerAccount.phone == phone)
        if not conditions:
            return []
        accounts = self.db.scalars(
            select(CustomerAccount)
            .where(CustomerAccount.tenant == self.tenant, or_(*conditions))
            .order_by(CustomerAccount.number)
        ).all()
        return self._records(accounts)

    def _records(self, accounts: list[CustomerAccount] | tuple[CustomerAccount, ...]) -> list[
        CustomerRecord
    ]:
        ids = [a.id for a in accounts]
        invoices: dict[int, list[str]] = {i: [] for i in ids}
        if ids:
            for account_id, digest in self.db.execute(
                select(CustomerInvoice.customer_account_id, CustomerInvoice.invoice_hmac).where(
                    CustomerInvoice.customer_account_id.in_(ids)
                )
            ):
                invoices[account_id].append(digest)
        return [
            CustomerRecord(
                account_id=a.id,
                number=a.number,
                kind=a.kind,
                name=a.name,
                address_label=a.address_label,
                email=a.email,
                phone=a.phone,
                national_id_hmac=a.national_id_hmac,
                pin_hmac=a.pin_hmac,
                pin_expires_at=a.pin_expires_at,
                bill_code_hmac=a.bill_code_hmac,
                invoice_hmacs=tuple(invoices[a.id]),
            )
            for a in accounts
        ]


def registry_for(
    db: Session, tenant: TenantConfig | str
) -> CustomerRegistry | ProofVerifyingRegistry:
    """The registry a tenant's ``binding.registry`` names: the SQL register unless it says http.

    A bare slug means the SQL register (callers that know no configuration, e.g. the bench).
    """
    if isinstance(tenant, str):
        return SqlRegistry(db, tenant)
    if tenant.binding.registry.kind == "http":
        from broker.customers.http_registry import HttpRegistry

        return HttpRegistry(db, tenant)
    return SqlRegistry(db, tenant.slug)
