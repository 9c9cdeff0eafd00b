"""Looking up a tenant's customers: the adapter interface and the SQL register (the default).

Flows ask a :class:`CustomerRegistry` for :class:`CustomerRecord` values and never query the
customer tables themselves, so a tenant can later answer from a live customer system instead
of the imported register. Records carry digests only; no plain PIN or national id passes here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from broker.models import CustomerAccount, CustomerInvoice


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


def registry_for(db: Session, tenant: str) -> CustomerRegistry:
    """The registry a tenant uses. Only the SQL register exists today."""
    return SqlRegistry(db, tenant)
