"""Registration of a local account: validate the form, create a pending user, send activation.

The user, its activation ``Verification`` and the email are written in ONE transaction.

Enumeration: a registered address gets exactly the same answer as a new one ("check your
email"), and its owner is emailed instead: a fresh activation code or link when the account is
still pending, otherwise a password reset link (the likely reason someone signs up again is a
forgotten password). The password is hashed on both paths, so the slow step happens either way.
Validation errors come from the form alone and never depend on whether the address is known.

A second registration for a pending address keeps nothing of what it typed: the owner gets a
fresh code. The password the FIRST registration chose survives activation only when the
registering browser activates (``registrant_digest``, see ``flows.activation``); otherwise the
person who proves the mailbox chooses the password. So squatting an address gains nothing.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from broker import audit
from broker.attempts import record_failure, reserve_attempt, rule_from_config
from broker.config import TenantConfig
from broker.messaging.compose import (
    InvalidEmailAddress,
    InvalidPhoneNumber,
    normalize_phone,
    stored_address,
)
from broker.models import User, utcnow
from broker.passwords import hash_password
from policies.binding import normalise_customer_number
from policies.names import one_line
from policies.password import PasswordRule, check_password

from .activation import issue_activation, resend_activation
from .binding import (
    MAX_CUSTOMER_NUMBER_LENGTH,
    BindingResult,
    bind_with_proof,
    binding_attempt_key,
)
from .password_reset import send_reset_link

MAX_NAME_LENGTH = 200
MAX_EMAIL_LENGTH = 320


@dataclass(frozen=True)
class RegistrationForm:
    """What the person typed. ``password`` is ignored when the tenant sets it after activation."""

    email: str
    name: str
    password: str = ""
    password_confirmation: str = ""
    phone: str = ""
    registration_type: str = "private"
    privacy_accepted: bool = False
    ebill_opt_in: bool = False
    locale: str | None = None
    customer_number: str = ""  # with proof_value: asked first when binding.ask_at_signup
    proof_value: str = ""


@dataclass(frozen=True)
class RegistrationResult:
    """``errors`` maps a form field to an error code; ``password_failures`` lists every unmet
    password rule. ``ok`` means the "check your email" page is shown (new or known address)."""

    errors: dict[str, str] = field(default_factory=dict)
    password_failures: list[PasswordRule] = field(default_factory=list)
    locked_until: datetime | None = None  # the customer number's proof limit was reached

    @property
    def ok(self) -> bool:
        return not self.errors and not self.password_failures


def new_subject() -> str:
    """The opaque, stable ``sub`` the portals see: 128 random bits in hex."""
    return secrets.token_hex(16)


def validate(tenant: TenantConfig, form: RegistrationForm) -> tuple[RegistrationResult, str, str]:
    """Check the form; returns the result, the normalised email and phone."""
    errors: dict[str, str] = {}
    email = ""
    try:
        email = stored_address(form.email)
    except InvalidEmailAddress:
        errors["email"] = "invalid_email"
    if len(email) > MAX_EMAIL_LENGTH:
        errors["email"] = "invalid_email"
    name = one_line(form.name)
    if not name:
        errors["name"] = "required"
    elif len(name) > MAX_NAME_LENGTH:
        errors["name"] = "too_long"
    phone = ""
    if form.phone.strip():
        try:
            phone = normalize_phone(form.phone, tenant.country)
        except InvalidPhoneNumber:
            errors["phone"] = "invalid_phone"
    if form.registration_type not in tenant.registration_types:
        errors["registration_type"] = "invalid_choice"
    if not form.privacy_accepted:
        errors["privacy"] = "must_accept"
    failures: list[PasswordRule] = []
    if not tenant.password_after_activation:
        check = check_password(tenant.password_policy, form.password,
                               confirmation=form.password_confirmation,
                               user_inputs=(name, email))
        failures = check.failures
    errors.update(signup_proof_errors(tenant, form))
    return RegistrationResult(errors=errors, password_failures=failures), email, phone


def register(
    db: Session,
    tenant: TenantConfig,
    form: RegistrationForm,
    *,
    hmac_key: str,
    secret_key: str,
    public_url: str,
    source_address: str | None,
    authorize_flow_id: str | None = None,
    registrant_digest: str | None = None,
    now: datetime | None = None,
) -> RegistrationResult:
    """Register, or quietly tell the owner of a known address; commits.

    ``registrant_digest``: SHA-256 of a random cookie this registration sets in the browser;
    kept only for a new account, so only that browser may keep the password at activation."""
    now = now or utcnow()
    result, email, phone = validate(tenant, form)
    if not result.ok:
        return result
    password_hash = None
    if not tenant.password_after_activation:
        password_hash = hash_password(tenant, form.password)  # on both paths: equal cost
    existing = db.scalar(select(User).where(User.tenant == tenant.slug, User.email == email))
    if existing is None:
        user = User(
            tenant=tenant.slug,
            subject=new_subject(),
            email=email,
            email_verified=False,
            name=one_line(form.name),
            phone=phone or None,
            locale=form.locale if form.locale in tenant.locales else tenant.default_locale,
            registration_type=form.registration_type,
            status="pending",
            password_hash=password_hash,
            password_changed_at=now if password_hash else None,
            privacy_version=tenant.privacy_policy_version,
            privacy_accepted_at=now,
            ebill_opt_in=form.ebill_opt_in,
            created_at=now,
        )
        db.add(user)
        try:
            db.flush()
        except IntegrityError:  # registered a moment ago by a concurrent request
            db.rollback()
            existing = db.scalar(
                select(User).where(User.tenant == tenant.slug, User.email == email)
            )
        else:
            refused = prove_customer_account(db, tenant, form, user, hmac_key=hmac_key,
                                             source_address=source_address, keep=True, now=now)
            if refused is not None:
                return refused
            issue_activation(db, tenant, user, hmac_key=hmac_key, secret_key=secret_key,
                             public_url=public_url, authorize_flow_id=authorize_flow_id,
                             registrant_digest=registrant_digest, now=now)
            audit.record(db, "user_registered", tenant=tenant.slug, actor_type="user",
                         actor_id=user.id, target_user_id=user.id, source_address=source_address,
                         registration_type=user.registration_type)
            db.commit()
            return result
    if existing is not None:
        refused = prove_customer_account(db, tenant, form, existing, hmac_key=hmac_key,
                                         source_address=source_address, keep=False, now=now)
        if refused is not None:
            return refused
        _tell_the_owner(db, tenant, existing, hmac_key=hmac_key, secret_key=secret_key,
                        public_url=public_url, source_address=source_address, now=now)
    db.commit()
    return result


def _tell_the_owner(
    db: Session, tenant: TenantConfig, user: User, *, hmac_key: str, secret_key: str,
    public_url: str, source_address: str | None, now: datetime,
) -> None:
    """Someone registered with an address that has an account: help its owner, create nothing."""
    if user.status == "pending":
        resend_activation(db, tenant, user.email or "", hmac_key=hmac_key,
                          secret_key=secret_key, public_url=public_url, now=now)
    elif user.status == "active":
        send_reset_link(db, tenant, user, public_url=public_url, now=now)
    audit.record(db, "registration_for_known_email", tenant=tenant.slug,
                 actor_type="anonymous", target_user_id=user.id, source_address=source_address,
                 outcome="refused")


# --- Customer number + proof at signup (seed 001) -------------------------------------------
#
# When the tenant sets ``binding.ask_at_signup``, the form also asks for the customer number and
# the tenant's first accepted proof. Both left empty: the account is created without a binding
# (the first portal login offers the binding step). Given: the proof is checked through
# ``flows.binding.bind_with_proof`` in the registration's own transaction, so the user, its
# owner binding, the activation email and the audit records commit together. A refused proof
# creates nothing, yet still counts toward the customer number's attempt limit.


def asks_for_customer_number(tenant: TenantConfig) -> bool:
    return tenant.binding.ask_at_signup and bool(tenant.binding.proofs)


def signup_proof_kind(tenant: TenantConfig) -> str:
    """The proof the registration form asks for: the tenant's first accepted one."""
    return tenant.binding.proofs[0]


def _wants_binding(tenant: TenantConfig, form: RegistrationForm) -> bool:
    return asks_for_customer_number(tenant) and bool(
        form.customer_number.strip() or form.proof_value.strip()
    )


def signup_proof_errors(tenant: TenantConfig, form: RegistrationForm) -> dict[str, str]:
    """One of the pair without the other is an error on the missing field."""
    if not _wants_binding(tenant, form):
        return {}
    errors: dict[str, str] = {}
    number = normalise_customer_number(form.customer_number)
    if not number:
        errors["customer_number"] = "required"
    elif len(number) > MAX_CUSTOMER_NUMBER_LENGTH:
        errors["customer_number"] = "too_long"
    if not form.proof_value.strip():
        errors["proof_value"] = "required"
    return errors


# Where a refused proof is shown: the limit is per customer number, the rest is about the code.
PROOF_ERROR_FIELD = {"locked": "customer_number", "wrong_proof": "proof_value",
                     "pin_expired": "proof_value", "missing_input": "proof_value",
                     "proof_not_accepted": "proof_value"}
# bind_with_proof leaves these tries counted; the others were never counted or were reset.
COUNTED_REFUSALS = ("wrong_proof", "pin_expired")


def prove_customer_account(
    db: Session, tenant: TenantConfig, form: RegistrationForm, user: User, *, hmac_key: str,
    source_address: str | None, keep: bool, now: datetime,
) -> RegistrationResult | None:
    """Check the signup proof for ``user``; None when registration goes on.

    ``keep``: ``user`` is the one this registration just added, and the owner binding stays in
    the transaction. For a known address (``keep=False``) the proof is checked the same way, so
    a wrong code gets the same answer whether or not the address is registered, but nothing is
    bound to the existing account: its owner is only told, as without a customer number.
    On refusal the whole transaction is rolled back (no user, no email), and the counted try
    is recorded again and committed on its own: the guess must not come for free.
    """
    if not _wants_binding(tenant, form):
        return None
    kind = signup_proof_kind(tenant)
    proof = bind_with_proof(db, tenant, hmac_key, user, form.customer_number, kind,
                            form.proof_value, source_address, now=now)
    if proof.ok and keep:
        return None
    db.rollback()
    if proof.ok:
        return None
    _count_refused_proof(db, tenant, form, kind, proof, source_address, now)
    db.commit()
    field_name = PROOF_ERROR_FIELD.get(proof.reason, "customer_number")
    return RegistrationResult(errors={field_name: proof.reason},
                              locked_until=proof.locked_until)


def _count_refused_proof(
    db: Session, tenant: TenantConfig, form: RegistrationForm, kind: str, proof: BindingResult,
    source_address: str | None, now: datetime,
) -> None:
    """Keep the refused try on the customer number's counter after the rollback."""
    if proof.reason in COUNTED_REFUSALS:
        key = binding_attempt_key(tenant.slug, normalise_customer_number(form.customer_number))
        rule = rule_from_config(tenant.lockout)
        if reserve_attempt(db, key, rule, now=now).allowed:
            record_failure(db, key, rule, now=now)
    audit.record(db, "binding_failed", tenant=tenant.slug, actor_type="anonymous",
                 source_address=source_address, reason=proof.reason, outcome="refused",
                 proof=kind, at_signup=True)
