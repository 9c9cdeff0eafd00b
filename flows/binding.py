"""Binding a login to customer accounts: by a proof from the bill, or by national identity.

Seeds 000, 001 and 004: a user types the customer number and one proof the tenant accepts
(PIN, activation code on the bill, or a previous invoice number). Failed proofs count per
customer number across all users (``bind:<tenant>:<number>``), so spreading guesses over many
accounts does not help, and a wrong proof for a number that does not exist counts and answers
exactly like one for a number that does: the answer never tells which numbers exist.

Seed 002: after a MitID or FTN login the tenant may bind every account whose national id HMAC
matches, and hand the page the customer record's name, email and phone to prefill.

The caller owns the transaction: these functions add rows and audit records to ``db`` and
never commit, so a binding and its audit record are saved together.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from broker import audit
from broker.attempts import record_failure, record_success, reserve_attempt, rule_from_config
from broker.config import TenantConfig
from broker.customers.digests import national_id_hmac, proof_hmac
from broker.customers.registry import (
    CustomerRecord,
    CustomerRegistry,
    CustomerSystemUnavailable,
    ProofVerifyingRegistry,
    registry_for,
)
from broker.models import Binding, CustomerAccount, Invitation, Staff, User, utcnow
from policies.binding import (
    account_kind_allowed,
    may_remove,
    normalise_customer_number,
    normalise_proof_value,
    pin_expired,
    proof_allowed,
    proof_matches,
    role_for_new_binding,
)

NATIONAL_ID_PROOF = "national_id"


@dataclass(frozen=True)
class BindingResult:
    """``reason`` when not ok: proof_not_accepted, missing_input, locked, wrong_proof,
    pin_expired, customer_system_unavailable (a live customer system did not answer; the try
    stays counted), or an account-kind rule (account_kind_needs_company_user, ...)."""

    ok: bool
    reason: str = ""
    binding: Binding | None = None
    locked_until: datetime | None = None


@dataclass(frozen=True)
class NationalIdResult:
    """Accounts bound after a MitID/FTN login, and what the profile page may prefill.

    A matching account the tenant's account-kind rule refuses (seed 003) is left out and
    audited; when it refuses every match, ``reason`` says why (account_kind_needs_company_user,
    ...). When nothing matched, ``show_support`` is true and ``support`` holds the tenant's phone,
    hours and email: the customer relation lacks the identity code and only support can add it.
    """

    ok: bool
    reason: str = ""
    bindings: list[Binding] = field(default_factory=list)
    accounts: list[dict[str, Any]] = field(default_factory=list)
    prefill: dict[str, str] = field(default_factory=dict)
    show_support: bool = False
    support: dict[str, str] = field(default_factory=dict)


MAX_CUSTOMER_NUMBER_LENGTH = 64  # CustomerAccount.number


def binding_attempt_key(tenant: str, customer_number: str) -> str:
    return f"bind:{tenant}:{customer_number}"


def bind_with_proof(
    db: Session,
    tenant_cfg: TenantConfig,
    hmac_key: str,
    user: User,
    customer_number: str,
    proof_kind: str,
    proof_value: str,
    source_address: str | None,
    *,
    registry: CustomerRegistry | ProofVerifyingRegistry | None = None,
    now: datetime | None = None,
) -> BindingResult:
    """Bind ``user`` to the account ``customer_number`` when ``proof_value`` proves it."""
    now = now or utcnow()
    tenant = tenant_cfg.slug

    def refuse(reason: str, account_id: int | None = None, **extra: Any) -> BindingResult:
        audit.record(
            db, "binding_failed", tenant=tenant, actor_type="user", actor_id=user.id,
            target_user_id=user.id, source_address=source_address, reason=reason,
            outcome="refused", proof=proof_kind, customer_account_id=account_id,
        )
        return BindingResult(False, reason, **extra)

    decision = proof_allowed(tenant_cfg.binding.proofs, proof_kind)
    if not decision.allowed:
        return refuse(decision.reason)
    number = normalise_customer_number(customer_number)
    if not number or not normalise_proof_value(proof_value):
        return refuse("missing_input")
    if len(number) > MAX_CUSTOMER_NUMBER_LENGTH:  # no account has it; its counter key won't fit
        return refuse("wrong_proof")

    key = binding_attempt_key(tenant, number)
    rule = rule_from_config(tenant_cfg.lockout)
    reservation = reserve_attempt(db, key, rule, now=now)
    if not reservation.allowed:
        return refuse("locked", locked_until=reservation.locked_until)

    registry = registry or registry_for(db, tenant_cfg)
    if isinstance(registry, ProofVerifyingRegistry):
        # The utility's own system checks the proof. The try was reserved above and stays
        # counted when the system fails to answer: a timeout is never a free guess.
        try:
            record = registry.verify_proof(number, proof_kind, normalise_proof_value(proof_value))
        except CustomerSystemUnavailable:
            return refuse("customer_system_unavailable")
        matched = record is not None
    else:
        record = registry.find_by_number(number)
        candidate = proof_hmac(hmac_key, proof_kind, proof_value)
        digests = record.proof_digests(proof_kind) if record else [None]
        matched = proof_matches(candidate, digests)
    if not matched or record is None:
        locked_until = record_failure(db, key, rule, now=now)
        return refuse(
            "wrong_proof", record.account_id if record else None, locked_until=locked_until
        )
    if proof_kind == "pin" and pin_expired(
        record.pin_expires_at.timestamp() if record.pin_expires_at else None, now.timestamp()
    ):
        # The right PIN, too late: the try stays counted (like every try) and nothing binds.
        return refuse("pin_expired", record.account_id)

    kind_rule = account_kind_allowed(
        registration_types=tenant_cfg.registration_types,
        registration_type=user.registration_type,
        account_kind=record.kind,
        company_accounts_held=_company_accounts_held(db, user.id),
    )
    if not kind_rule.allowed:
        record_success(db, key)
        return refuse(kind_rule.reason, record.account_id)

    record_success(db, key)
    role = role_for_new_binding(proof_kind)
    binding = grant_binding(db, user, record.account_id, role, proof_kind)
    if proof_kind == "pin" and record.pin_expires_at is not None:
        _consume_sent_pin(db, record.account_id)
    audit.record(
        db, "customer_bound", tenant=tenant, actor_type="user", actor_id=user.id,
        target_user_id=user.id, source_address=source_address, reason=proof_kind,
        customer_account_id=record.account_id, role=binding.role,
    )
    return BindingResult(True, binding=binding)


def bind_by_national_id(
    db: Session,
    tenant: TenantConfig,
    hmac_key: str,
    user: User,
    national_id: str,
    source: str | None,
    *,
    country: str | None = None,
    registry: CustomerRegistry | ProofVerifyingRegistry | None = None,
) -> NationalIdResult:
    """After a MitID/FTN login: bind every account with this national id (seed 002)."""
    support = {
        "phone": tenant.support_phone, "hours": tenant.support_hours, "email": tenant.support_email
    }
    if not tenant.binding.national_id_match:
        return NationalIdResult(False, "national_id_match_disabled")
    if not national_id.strip():
        return NationalIdResult(False, "no_national_id", show_support=True, support=support)
    registry = registry or registry_for(db, tenant)
    if isinstance(registry, ProofVerifyingRegistry):
        try:
            records = registry.find_by_national_id(national_id, country or tenant.country)
        except CustomerSystemUnavailable:
            # Not "no match": the support guidance would wrongly say the contract lacks the id.
            audit.record(
                db, "binding_failed", tenant=tenant.slug, actor_type="user", actor_id=user.id,
                target_user_id=user.id, source_address=source,
                reason="customer_system_unavailable", outcome="refused", proof=NATIONAL_ID_PROOF,
            )
            return NationalIdResult(False, "customer_system_unavailable")
    else:
        digest = national_id_hmac(hmac_key, national_id, country or tenant.country)
        records = registry.find_by_national_id_hmac(digest)
    if not records:
        audit.record(
            db, "binding_failed", tenant=tenant.slug, actor_type="user", actor_id=user.id,
            target_user_id=user.id, source_address=source, reason="no_national_id_match",
            outcome="refused", proof=NATIONAL_ID_PROOF,
        )
        return NationalIdResult(False, "no_match", show_support=True, support=support)
    allowed, refusals = _records_of_allowed_kind(db, tenant, user, records)
    for record, reason in refusals:
        audit.record(
            db, "binding_failed", tenant=tenant.slug, actor_type="user", actor_id=user.id,
            target_user_id=user.id, source_address=source, reason=reason, outcome="refused",
            proof=NATIONAL_ID_PROOF, customer_account_id=record.account_id,
        )
    bindings = []
    for record in allowed:
        binding = grant_binding(db, user, record.account_id, "owner", NATIONAL_ID_PROOF)
        bindings.append(binding)
        audit.record(
            db, "customer_bound", tenant=tenant.slug, actor_type="user", actor_id=user.id,
            target_user_id=user.id, source_address=source, reason=NATIONAL_ID_PROOF,
            customer_account_id=record.account_id, role=binding.role,
        )
    return NationalIdResult(
        bool(allowed),
        "" if allowed else refusals[0][1],
        bindings=bindings,
        accounts=[_describe(record, "owner") for record in allowed],
        prefill=_prefill(allowed),
    )


def _records_of_allowed_kind(
    db: Session, tenant: TenantConfig, user: User, records: list[CustomerRecord]
) -> tuple[list[CustomerRecord], list[tuple[CustomerRecord, str]]]:
    """Seed 003 holds for a national id as for a proof from the bill: the same identity code
    may be on a company contract, and a private login must not become its owner. Records are
    decided in turn, each company account allowed counting toward the next; an account the
    user already holds does not count against itself (a company user logs in again)."""
    company_accounts = set(_company_account_ids_held(db, user.id))
    allowed: list[CustomerRecord] = []
    refusals: list[tuple[CustomerRecord, str]] = []
    for record in records:
        decision = account_kind_allowed(
            registration_types=tenant.registration_types,
            registration_type=user.registration_type,
            account_kind=record.kind,
            company_accounts_held=len(company_accounts - {record.account_id}),
        )
        if not decision.allowed:
            refusals.append((record, decision.reason))
            continue
        allowed.append(record)
        if record.kind == "company":
            company_accounts.add(record.account_id)
    return allowed, refusals


# What the ``customer_accounts`` claim is made of, per bound account; built once.
ACCOUNT_CLAIM_COLUMNS = (
    CustomerAccount.number, CustomerAccount.kind, Binding.role, CustomerAccount.name
)
_ACCOUNTS_OF_USER = (
    select(*ACCOUNT_CLAIM_COLUMNS)
    .join(Binding, Binding.customer_account_id == CustomerAccount.id)
    .where(Binding.user_id == bindparam("user_id"))
    .order_by(CustomerAccount.number)
)


def account_claim(number: str, kind: str, role: str, name: str) -> dict[str, Any]:
    return {"number": number, "kind": kind, "role": role, "name": name}


def customer_accounts_for(db: Session, user_id: int) -> list[dict[str, Any]]:
    """What the ``customer_accounts`` claim says about a user: one query."""
    return [account_claim(*row) for row in db.execute(_ACCOUNTS_OF_USER, {"user_id": user_id})]


@dataclass(frozen=True)
class UnbindResult:
    ok: bool
    reason: str = ""


def unbind(
    db: Session,
    tenant: TenantConfig,
    binding: Binding,
    *,
    actor_user: User | None = None,
    actor_staff: Staff | None = None,
    source_address: str | None = None,
    reason: str | None = None,
) -> UnbindResult:
    """Remove a user's access to an account: an owner (or the user themself), or support.

    An owner may not remove themself while they are the last owner: the account would be left
    with nobody who can invite or remove. Support staff may (audited, with their reason).

    The account's owner rows are locked (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite's
    ``BEGIN IMMEDIATE`` serialises writers) before they are counted, so two owners removing
    each other at once are decided one after the other: the second sees one owner left and is
    refused, instead of both counting two and leaving none.

    A removed owner's open invitations for the account end with the binding
    (``end_open_invitations``).
    """
    owners = len(db.scalars(
        select(Binding.id).where(
            Binding.customer_account_id == binding.customer_account_id, Binding.role == "owner"
        ).with_for_update()
    ).all())
    if db.scalar(select(Binding.id).where(Binding.id == binding.id)) is None:
        return UnbindResult(False, "not_bound")  # removed meanwhile by someone else
    owners_after = owners - (1 if binding.role == "owner" else 0)
    if actor_staff is not None:
        actor_type, actor_id = "staff", actor_staff.id
    elif actor_user is not None:
        actor_type, actor_id = "user", actor_user.id
        actor_binding = db.scalar(
            select(Binding).where(
                Binding.user_id == actor_user.id,
                Binding.customer_account_id == binding.customer_account_id,
            )
        )
        decision = may_remove(
            actor_role=actor_binding.role if actor_binding else None,
            actor_is_target=binding.user_id == actor_user.id,
            owners_left_after=owners_after,
        )
        if not decision.allowed:
            audit.record(
                db, "customer_unbound", tenant=tenant.slug, actor_type=actor_type,
                actor_id=actor_id, target_user_id=binding.user_id,
                source_address=source_address, reason=decision.reason, outcome="refused",
                customer_account_id=binding.customer_account_id,
            )
            return UnbindResult(False, decision.reason)
    else:
        raise ValueError("unbind needs actor_user or actor_staff")
    invitations_ended = (
        end_open_invitations(db, binding.user_id, binding.customer_account_id)
        if binding.role == "owner" else 0
    )
    audit.record(
        db, "customer_unbound", tenant=tenant.slug, actor_type=actor_type, actor_id=actor_id,
        target_user_id=binding.user_id, source_address=source_address, reason=reason,
        customer_account_id=binding.customer_account_id, role=binding.role,
        owners_left=owners_after, invitations_ended=invitations_ended,
    )
    db.delete(binding)
    db.flush()
    return UnbindResult(True)


def end_open_invitations(
    db: Session, inviter_user_id: int, customer_account_id: int, *, now: datetime | None = None
) -> int:
    """An owner's open invitations end with their ownership: accepted later (by a relative, or
    by the removed owner's second login) they would hand the account back. They expire now
    rather than vanish, so the audit trail keeps them until retention removes expired ones.
    Returns how many ended."""
    now = now or utcnow()
    return db.execute(
        update(Invitation)
        .where(
            Invitation.inviter_user_id == inviter_user_id,
            Invitation.customer_account_id == customer_account_id,
            Invitation.accepted_at.is_(None),
            Invitation.expires_at > now,
        )
        .values(expires_at=now)
        .execution_options(synchronize_session="fetch")  # a loaded invitation ends too
    ).rowcount


def grant_binding(
    db: Session, user: User, account_id: int, role: str, proof: str,
    granted_by: int | None = None,
) -> Binding:
    """Create the binding, or raise an existing delegate to owner when a proof was shown.

    Two grants at once (two tabs, an invitation and a proof) both find no row; the one whose
    INSERT loses to the unique constraint takes the other's row, inside a savepoint so the
    caller's transaction goes on."""
    def existing() -> Binding | None:
        return db.scalar(select(Binding).where(
            Binding.user_id == user.id, Binding.customer_account_id == account_id
        ))

    binding = existing()
    if binding is None:
        binding = Binding(
            user_id=user.id, customer_account_id=account_id, role=role, proof=proof,
            granted_by_user_id=granted_by,
        )
        try:
            with db.begin_nested():
                db.add(binding)
        except IntegrityError:
            binding = existing()
            if binding is None:
                raise
        else:
            return binding
    if role == "owner" and binding.role != "owner":
        binding.role = "owner"
        binding.proof = proof
    db.flush()
    return binding


def _consume_sent_pin(db: Session, account_id: int) -> None:
    """A PIN the broker sent (it has an expiry) works once."""
    account = db.get(CustomerAccount, account_id)
    if account is not None:
        account.pin_hmac = None
        account.pin_expires_at = None


def _company_accounts_held(db: Session, user_id: int) -> int:
    return db.scalar(
        select(func.count(Binding.id))
        .join(CustomerAccount, CustomerAccount.id == Binding.customer_account_id)
        .where(Binding.user_id == user_id, CustomerAccount.kind == "company")
    ) or 0


def _company_account_ids_held(db: Session, user_id: int) -> list[int]:
    return list(db.scalars(
        select(Binding.customer_account_id)
        .join(CustomerAccount, CustomerAccount.id == Binding.customer_account_id)
        .where(Binding.user_id == user_id, CustomerAccount.kind == "company")
    ))


def _describe(record: CustomerRecord, role: str) -> dict[str, Any]:
    return {
        "number": record.number, "kind": record.kind, "role": role, "name": record.name,
        "address": record.address_label,
    }


def _prefill(records: list[CustomerRecord]) -> dict[str, str]:
    """Name, email and phone from the register, private accounts first; the page lets the
    user edit them before anything is saved to the profile."""
    ordered = sorted(records, key=lambda r: (r.kind != "private", r.number))
    prefill: dict[str, str] = {}
    for field_name in ("name", "email", "phone"):
        for record in ordered:
            value = getattr(record, field_name)
            if value:
                prefill[field_name] = value
                break
    return prefill
