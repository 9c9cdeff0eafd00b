"""Each seed utility's password rules, with passwords that pass and fail each rule."""

from __future__ import annotations

import pytest

from policies.password import (
    PASSWORD_POLICY_PRESETS,
    PasswordPolicy,
    check_password,
    common_passwords,
    describe_rules,
)

DK = PASSWORD_POLICY_PRESETS["dk-water"]
NO = PASSWORD_POLICY_PRESETS["no-district-heating"]
FI = PASSWORD_POLICY_PRESETS["fi-energy"]
ES = PASSWORD_POLICY_PRESETS["es-water"]
NIST = PASSWORD_POLICY_PRESETS["nist"]
FI_USER = ("Anna Lindqvist", "anna.lindqvist@example.fi")


def codes(policy: PasswordPolicy, password: str, **kwargs) -> list[str]:
    return check_password(policy, password, **kwargs).codes


# --- dk-water (seed 000): 8 chars, upper, lower, digit, special, 3 different characters ---


def test_dk_water_accepts_a_password_meeting_every_rule():
    result = check_password(DK, "Vandrør-7kant", confirmation="Vandrør-7kant")
    assert result.ok and result.failures == []


@pytest.mark.parametrize(
    ("password", "unmet"),
    [
        ("Ab1-xyz", ["min_length"]),
        ("abcdef1-", ["min_upper"]),
        ("ABCDEF1-", ["min_lower"]),
        ("Abcdefg-", ["min_digits"]),
        ("Kvandrør1", ["min_special"]),
    ],
)
def test_dk_water_names_the_rule_a_password_breaks(password, unmet):
    assert codes(DK, password) == unmet


def test_dk_water_min_distinct_refuses_a_password_of_two_repeated_characters():
    strict = DK.model_copy(update={"min_upper": 0, "min_digits": 0, "min_special": 0})
    assert codes(strict, "aaaabbbb") == ["min_distinct"]
    assert codes(strict, "aaaabbbc") == []


def test_every_unmet_rule_is_listed_not_only_the_first():
    assert codes(DK, "aaaa", confirmation="bbbb") == [
        "min_length",
        "min_upper",
        "min_digits",
        "min_special",
        "min_distinct",
        "confirmation_mismatch",
    ]


# --- no-district-heating (seed 001): at least 8 characters and a confirmation ---


def test_no_district_heating_accepts_eight_characters_with_matching_confirmation():
    assert check_password(NO, "fjord hus", confirmation="fjord hus").ok


def test_no_district_heating_refuses_seven_characters_and_a_mismatched_confirmation():
    assert codes(NO, "fjordhu", confirmation="fjordhx") == [
        "min_length",
        "confirmation_mismatch",
    ]


# --- fi-energy (seed 002): 10 chars, digit, upper, lower, no 3-char run of name or email ---


def test_fi_energy_accepts_a_password_sharing_nothing_with_the_user():
    assert check_password(FI, "Kesäpäivä2024", user_inputs=FI_USER).ok


@pytest.mark.parametrize(
    ("password", "unmet"),
    [
        ("Kesä2024x", ["min_length"]),
        ("kesäpäivä2024", ["min_upper"]),
        ("KESÄPÄIVÄ2024", ["min_lower"]),
        ("Kesäpäiväxx", ["min_digits"]),
    ],
)
def test_fi_energy_names_the_rule_a_password_breaks(password, unmet):
    assert codes(FI, password, user_inputs=FI_USER) == unmet


@pytest.mark.parametrize(
    "password",
    [
        "Xyzann9876Q",  # "ann" from the first name
        "QWQIST9876r",  # "IST" from the surname, case-insensitive
        "Zz9exam4444",  # "exa" from the email's domain
        "Ww1a.l5555x",  # "a.l" from the email's local part
    ],
)
def test_fi_energy_refuses_three_consecutive_characters_of_name_or_email(password):
    assert codes(FI, password, user_inputs=FI_USER) == ["shared_run_with_user_data"]


def test_fi_energy_allows_two_shared_characters_in_a_row():
    assert codes(FI, "Anxxxxxx99Q", user_inputs=FI_USER) == []


# --- es-water (seed 003): 8 characters and a zxcvbn score of 2 ---


def test_es_water_accepts_a_hard_to_guess_password():
    assert check_password(ES, "molino tarde 48 rio").ok


def test_es_water_refuses_a_guessable_password_as_too_weak():
    assert "too_weak" in codes(ES, "abcd1234x")


def test_es_water_strength_counts_the_users_own_data_against_them():
    password = "aguasvalle"
    assert "too_weak" not in codes(ES, password)
    assert "too_weak" in codes(ES, password, user_inputs=("Aguas Valle", "x@example.es"))


def test_es_water_refuses_an_empty_password_as_too_short_and_too_weak_not_with_an_error():
    """Found by tests/test_fuzz_more_forms.py: an empty password on the password-creation step
    reached zxcvbn, which raises IndexError on an empty string (a 500)."""
    assert {"min_length", "too_weak"} <= set(codes(ES, "", confirmation=""))


# --- nist (seed 004 fallback): 8 characters and the blocklist ---


def test_nist_accepts_a_long_uncommon_passphrase():
    assert check_password(NIST, "correct horse battery staple").ok


@pytest.mark.parametrize("password", ["password", "Password1", "qwertyuiop", "iloveyou"])
def test_nist_refuses_common_passwords_whatever_the_case(password):
    assert codes(NIST, password) == ["common_password"]


def test_nist_refuses_a_short_password_and_one_over_the_maximum():
    assert codes(NIST, "k9#f") == ["min_length"]
    assert codes(NIST, "k9#f" * 40) == ["max_length"]


def test_the_blocklist_ships_ten_thousand_common_passwords():
    blocklist = common_passwords()
    assert len(blocklist) == 10000
    assert {"123456", "password", "letmein"} <= blocklist
    assert common_passwords() is blocklist  # read once


def test_a_policy_without_the_blocklist_accepts_a_common_password():
    assert check_password(NIST.model_copy(update={"check_blocklist": False}), "password").ok


# --- what the page shows ---


def test_rules_shown_before_typing_match_the_dk_water_seed():
    messages = [rule.message for rule in describe_rules(DK)]
    assert messages[:6] == [
        "Use at least 8 characters.",
        "Include at least 1 upper-case letter.",
        "Include at least 1 lower-case letter.",
        "Include at least 1 digit.",
        "Include at least 1 special character (such as ! # % or -).",
        "Use at least 3 different characters.",
    ]


def test_rules_shown_for_fi_energy_include_the_name_and_email_rule():
    rules = {rule.code: rule.params for rule in describe_rules(FI)}
    assert rules["min_length"] == {"count": 10}
    assert rules["shared_run_with_user_data"] == {"count": 3}
    assert "min_special" not in rules


def test_every_failure_has_a_stable_code_params_and_an_english_message():
    for failure in check_password(ES, "ab", confirmation="ba").failures:
        assert failure.code and isinstance(failure.params, dict)
        assert failure.message.endswith(".")
    too_weak = next(f for f in check_password(ES, "ab").failures if f.code == "too_weak")
    assert too_weak.params == {"score": 2}
    assert "2 of 4" in too_weak.message


@pytest.mark.parametrize("preset", sorted(PASSWORD_POLICY_PRESETS))
def test_each_preset_describes_its_length_rule_first(preset):
    first = describe_rules(PASSWORD_POLICY_PRESETS[preset])[0]
    assert first.code == "min_length"
    assert first.params["count"] == PASSWORD_POLICY_PRESETS[preset].min_length
