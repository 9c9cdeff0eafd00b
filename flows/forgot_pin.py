"""Forgot customer number / PIN (seed 001).

The person gives an email address or a mobile number (and optionally the customer number) and
picks email or SMS. When the chosen contact is the one on record, every matching account gets
a fresh single-use PIN, and the numbers with their PINs go to that contact, never anywhere
else. The answer is the same whether anything matched, so the form cannot be used to learn
who is a customer; only input that cannot be a contact at all (a malformed number) is an error.
The caller owns the transaction: new PIN digests and the outbox message commit together.

A tenant whose customers live in the utility's own system (an http registry) has that system
send the reminder and the PIN: the broker checks the input as above, passes the contact on, and
gives the same answer, also when the system cannot be reached (it may have sent the message
before failing; the audit record says ``customer_system_unavailable``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from broker import audit
from broker.config import SmsConfig, TenantConfig
from broker.customers.contact import (
    InvalidPhone,
    looks_like_email,
    normalise_email,
    normalise_phone,
)
from broker.customers.digests import proof_hmac
from broker.customers.registry import (
    CustomerRegistry,
    CustomerSystemUnavailable,
    ProofVerifyingRegistry,
    registry_for,
)
from broker.messaging.compose import SmsLimitReached, send_email, send_sms
from broker.models import CustomerAccount, utcnow
from broker.security import new_numeric_code
from policies.binding import normalise_customer_number

PIN_DIGITS = 6
MAX_ACCOUNTS_PER_MESSAGE = 20
CHANNELS = ("email", "sms")


@dataclass(frozen=True)
class ForgotPinResult:
    """``ok`` means "if the details match our register, we have sent them"; ``error`` is set
    only for input the user must correct: invalid_email, invalid_phone, unknown_channel."""

    ok: bool
    error: str = ""
    channel: str = ""


def request_customer_number_and_pin(
    db: Session,
    tenant: TenantConfig,
    hmac_key: str,
    *,
    channel: str,
    email: str | None = None,
    phone: str | None = None,
    customer_number: str | None = None,
    locale: str | None = None,
    source_address: str | None = None,
    sms_limits: SmsConfig | None = None,
    registry: CustomerRegistry | ProofVerifyingRegistry | None = None,
    now: datetime | None = None,
) -> ForgotPinResult:
    """Send customer number(s) and fresh PINs to the chosen contact when it is on record."""
    now = now or utcnow()
    locale = locale or tenant.default_locale
    if channel not in CHANNELS:
        return ForgotPinResult(False, "unknown_channel")
    registry = registry or registry_for(db, tenant)
    if channel == "email":
        destination = normalise_email(email or "")
        if not looks_like_email(destination):
            return ForgotPinResult(False, "invalid_email", channel)
    else:
        try:
            destination = normalise_phone(phone or "", tenant.country)
        except InvalidPhone:
            return ForgotPinResult(False, "invalid_phone", channel)
    number = normalise_customer_number(customer_number or "")
    if isinstance(registry, ProofVerifyingRegistry):
        return _delegate_reminder(
            db, tenant, registry, channel, destination, number, source_address
        )
    if channel == "email":
        records = registry.find_by_contact(email=destination)
    else:
        records = registry.find_by_contact(phone=destination)
    if number:
        records = [r for r in records if r.number == number]
    records = records[:MAX_ACCOUNTS_PER_MESSAGE]

    outcome = "no_match"
    if records:
        pins = {record.account_id: new_numeric_code(PIN_DIGITS) for record in records}
        days = tenant.binding.pin_valid_days
        accounts: list[dict[str, Any]] = [
            {"number": r.number, "pin": pins[r.account_id], "name": r.name,
             "address": r.address_label}
            for r in records
        ]
        context: dict[str, Any] = {
            "accounts": accounts,
            "pin_valid_days": days,
            "customer_numbers": [r.number for r in records],
            "valid_days": days,
        }
        try:
            if channel == "email":
                send_email(db, tenant, destination, "forgot_customer_number", locale, **context)
            else:
                send_sms(
                    db, tenant, destination, "forgot_customer_number", locale,
                    limits=sms_limits, **context,
                )
        except SmsLimitReached:
            # Saying "too many SMS" would reveal that this number is a customer's: same answer.
            outcome = "sms_limited"
        else:
            expires_at = now + timedelta(days=days)
            for record in records:
                account = db.get(CustomerAccount, record.account_id)
                if account is not None:
                    account.pin_hmac = proof_hmac(hmac_key, "pin", pins[record.account_id])
                    account.pin_expires_at = expires_at
            outcome = "sent"
    audit.record(
        db, "forgot_pin_requested", tenant=tenant.slug, actor_type="anonymous",
        source_address=source_address, reason=outcome, channel=channel,
        customer_account_ids=[r.account_id for r in records] if outcome == "sent" else [],
    )
    db.flush()
    return ForgotPinResult(True, "", channel)


def _delegate_reminder(
    db: Session, tenant: TenantConfig, registry: ProofVerifyingRegistry, channel: str,
    destination: str, customer_number: str, source_address: str | None,
) -> ForgotPinResult:
    """The utility's system sends number and PIN itself; the broker never sees the PIN."""
    contact = {"email": destination} if channel == "email" else {"phone": destination}
    try:
        registry.send_reminder(channel, customer_number=customer_number or None, **contact)
    except CustomerSystemUnavailable:
        outcome = "customer_system_unavailable"
    else:
        outcome = "delegated"
    audit.record(
        db, "forgot_pin_requested", tenant=tenant.slug, actor_type="anonymous",
        source_address=source_address, reason=outcome, channel=channel,
        customer_account_ids=[],
    )
    db.flush()
    return ForgotPinResult(True, "", channel)
