"""The pure binding rules: accepted proofs, normalisation, constant-time matching, removal."""

from __future__ import annotations

from policies.binding import (
    account_kind_allowed,
    may_remove,
    normalise_customer_number,
    normalise_national_id,
    normalise_proof_value,
    proof_allowed,
    proof_matches,
)


def test_only_the_proofs_a_tenant_lists_are_accepted():
    assert proof_allowed(["pin"], "pin").allowed
    assert proof_allowed(["pin"], "invoice").reason == "proof_not_accepted"
    assert proof_allowed(["pin", "invoice"], "password").reason == "unknown_proof"


def test_typed_numbers_and_codes_lose_spaces_and_dashes():
    assert normalise_customer_number(" 100 234-5 ") == "1002345"
    assert normalise_proof_value("ab-12 cd") == "AB12CD"


def test_national_ids_normalise_per_country():
    assert normalise_national_id("010190-1234", "DK") == "0101901234"
    assert normalise_national_id(" 131052-308t ", "FI") == "131052-308T"


def test_a_proof_matches_any_stored_digest_and_none_never_matches():
    assert proof_matches("b" * 64, ["a" * 64, "b" * 64])
    assert not proof_matches("b" * 64, [None, "a" * 64])
    assert not proof_matches("b" * 64, [])


def test_seed_003_registration_types_decide_which_accounts_a_user_may_bind():
    types = ["private", "company", "administrator"]
    admin = dict(
        registration_types=types, registration_type="administrator", account_kind="company"
    )
    assert account_kind_allowed(**admin, company_accounts_held=5).allowed
    company = dict(registration_types=types, registration_type="company", account_kind="company")
    assert not account_kind_allowed(**company, company_accounts_held=1).allowed
    assert account_kind_allowed(
        registration_types=["private"], registration_type="private", account_kind="company",
        company_accounts_held=0,
    ).allowed


def test_the_last_owner_cannot_remove_themself_but_a_delegate_may_leave():
    assert may_remove(actor_role="owner", actor_is_target=True, owners_left_after=0).reason == (
        "last_owner"
    )
    assert may_remove(actor_role="delegate", actor_is_target=True, owners_left_after=1).allowed
    assert not may_remove(actor_role="delegate", actor_is_target=False, owners_left_after=0).allowed
    assert may_remove(actor_role="owner", actor_is_target=False, owners_left_after=1).allowed
