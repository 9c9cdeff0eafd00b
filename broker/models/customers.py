"""The utility's customer register and who may act for which customer account."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, utcnow


class CustomerAccount(Base):
    """A customer relation at the utility (kundenummer). Proofs are keyed HMACs, never plain."""

    __tablename__ = "customer_accounts"
    __table_args__ = (UniqueConstraint("tenant", "number", name="uq_customer_accounts_number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant: Mapped[str] = mapped_column(ForeignKey("tenants.slug"))
    number: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16), default="private")
    name: Mapped[str] = mapped_column(String(200), default="")
    address_label: Mapped[str] = mapped_column(String(300), default="")
    email: Mapped[str | None] = mapped_column(String(320), index=True)
    phone: Mapped[str | None] = mapped_column(String(32), index=True)
    national_id_hmac: Mapped[str | None] = mapped_column(String(64), index=True)
    pin_hmac: Mapped[str | None] = mapped_column(String(64))
    pin_expires_at: Mapped[datetime | None]
    bill_code_hmac: Mapped[str | None] = mapped_column(String(64))
    source_digest: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class CustomerInvoice(Base):
    """A recent invoice number of a customer account: a binding proof (seed 004)."""

    __tablename__ = "customer_invoices"
    __table_args__ = (
        UniqueConstraint("customer_account_id", "invoice_hmac", name="uq_customer_invoice"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_account_id: Mapped[int] = mapped_column(
        ForeignKey("customer_accounts.id", ondelete="CASCADE"), index=True
    )
    invoice_hmac: Mapped[str] = mapped_column(String(64))
    issued_on: Mapped[datetime | None]


class Binding(Base):
    """A user may act for a customer account, as ``owner`` or ``delegate``."""

    __tablename__ = "bindings"
    __table_args__ = (UniqueConstraint("user_id", "customer_account_id", name="uq_binding"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    customer_account_id: Mapped[int] = mapped_column(
        ForeignKey("customer_accounts.id", ondelete="CASCADE"), index=True
    )
    role: Mapped[str] = mapped_column(String(16), default="owner")
    proof: Mapped[str] = mapped_column(String(16))
    granted_by_user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Invitation(Base):
    """An owner's invitation for a relative to become a delegate; single-use, expiring."""

    __tablename__ = "invitations"

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant: Mapped[str] = mapped_column(ForeignKey("tenants.slug"))
    customer_account_id: Mapped[int] = mapped_column(
        ForeignKey("customer_accounts.id", ondelete="CASCADE")
    )
    inviter_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    email: Mapped[str] = mapped_column(String(320))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    accepted_at: Mapped[datetime | None]
    accepted_by_user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
