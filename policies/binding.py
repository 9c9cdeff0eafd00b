"""Binding proofs: which proofs a tenant accepts, how typed values are normalised, and the check.

Pure functions: the caller computes the keyed HMAC of the typed value (it holds the key) and
passes it with the stored HMACs; the check compares in constant time. Nothing here reads a
database or a request, so the rules are testable as plain functions.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

ProofKind = Literal["pin", "bill_code", "invoice"]
PROOF_KINDS: tuple[str, ...] = ("pin", "bill_code", "invoice")
CUSTOMER_KINDS: tuple[str, ...] = ("private", "company")
ROLES: tuple[str, ...] = ("owner", "delegate")
MAX_CUSTOMER_NUMBER_LENGTH = 64

# HMAC purposes: a PIN digest can never match a bill code digest of the same digits.
PURPOSE_BY_PROOF: dict[str, str] = {
    "pin": "customer.pin",
    "bill_code": "customer.bill_code",
    "invoice": "customer.invoice",
}
PURPOSE_NATIONAL_ID = "national_id"

_SEPARATORS = re.compile(r"[\s\-\u2010-\u2015.]+")


@dataclass(frozen=True)
class ProofDecision:
    """Whether a proof may be tried at this tenant, and if not, why (a reason code)."""

    allowed: bool
    reason: str = ""


def proof_allowed(accepted: Sequence[str], proof_kind: str) -> ProofDecision:
    """A tenant accepts only the proofs in its ``binding.proofs``."""
    if proof_kind not in PROOF_KINDS:
        return ProofDecision(False, "unknown_proof")
    if proof_kind not in accepted:
        return ProofDecision(False, "proof_not_accepted")
    return ProofDecision(True)


def normalise_customer_number(typed: str) -> str:
    """What people type from a bill: '100 234-5' and '1002345' are the same number."""
    return _SEPARATORS.sub("", typed or "").upper()


def normalise_proof_value(typed: str) -> str:
    """PINs, bill codes and invoice numbers: no spaces, no dashes, case does not matter."""
    return _SEPARATORS.sub("", typed or "").upper()


def normalise_national_id(value: str, country: str) -> str:
    """CPR (DK) is digits only ('010190-1234' -> '0101901234'); a Finnish hetu keeps its
    century sign and check character, upper-cased; others lose spaces and are upper-cased."""
    value = (value or "").strip()
    if country == "DK":
        return re.sub(r"\D", "", value)
    if country == "FI":
        return re.sub(r"\s", "", value).upper()
    return re.sub(r"[\s\-]", "", value).upper()


def proof_matches(candidate_hmac: str, stored_hmacs: Iterable[str | None]) -> bool:
    """Constant-time check of one typed proof against every stored digest.

    Every stored digest is compared (no early exit), so the time does not tell which invoice
    matched or whether any digest is stored at all.
    """
    matched = False
    candidate = candidate_hmac.encode()
    for stored in stored_hmacs:
        if stored is None:
            # Compare against itself so a missing digest costs the same as a present one.
            hmac.compare_digest(candidate, candidate)
            continue
        matched |= hmac.compare_digest(candidate, stored.encode())
    return matched


def pin_expired(expires_at_epoch: float | None, now_epoch: float) -> bool:
    """A PIN with no expiry (printed by the utility) never expires; a sent one does."""
    return expires_at_epoch is not None and now_epoch >= expires_at_epoch


def role_for_new_binding(proof_kind: str) -> str:
    """A proof from the bill is the authority: whoever holds it becomes an owner."""
    return "owner" if proof_kind in PROOF_KINDS else "delegate"


def may_remove(
    *, actor_role: str | None, actor_is_target: bool, owners_left_after: int
) -> ProofDecision:
    """Only an owner removes users, and never leaves an account without owners by removing
    themselves (a delegate may always leave)."""
    if actor_is_target and actor_role == "delegate":
        return ProofDecision(True)
    if actor_role != "owner":
        return ProofDecision(False, "not_owner")
    if actor_is_target and owners_left_after == 0:
        return ProofDecision(False, "last_owner")
    return ProofDecision(True)


def account_kind_allowed(
    *,
    registration_types: Sequence[str],
    registration_type: str,
    account_kind: str,
    company_accounts_held: int,
) -> ProofDecision:
    """Seed 003: where a tenant separates private, company and administrator users, a private
    user binds private accounts, a company user one company account, and an administrator
    any number of company accounts. Tenants with only private registration accept any kind."""
    if set(registration_types) <= {"private"}:
        return ProofDecision(True)
    if registration_type == "private":
        ok = account_kind == "private"
        return ProofDecision(ok, "" if ok else "account_kind_needs_company_user")
    if account_kind != "company":
        return ProofDecision(False, "account_kind_needs_private_user")
    if registration_type == "company" and company_accounts_held >= 1:
        return ProofDecision(False, "company_user_has_one_account")
    return ProofDecision(True)
