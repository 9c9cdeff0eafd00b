"""Password policy: a tenant's rules as data, and a check that lists every unmet rule."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from importlib import resources

from pydantic import BaseModel, ConfigDict, Field


class PasswordPolicy(BaseModel):
    """A tenant's password rules. The defaults follow NIST SP 800-63B."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_length: int = Field(8, ge=1, le=128)
    max_length: int = Field(128, ge=8, le=1024)
    min_upper: int = Field(0, ge=0)
    min_lower: int = Field(0, ge=0)
    min_digits: int = Field(0, ge=0)
    min_special: int = Field(0, ge=0)
    min_distinct: int = Field(0, ge=0)
    max_shared_run_with_user_data: int | None = Field(None, ge=2)
    min_zxcvbn_score: int = Field(0, ge=0, le=4)
    check_blocklist: bool = True
    require_confirmation: bool = True


PASSWORD_POLICY_PRESETS: dict[str, PasswordPolicy] = {
    # Seed 000: Danish water utility.
    "dk-water": PasswordPolicy(
        min_length=8, min_upper=1, min_lower=1, min_digits=1, min_special=1, min_distinct=3
    ),
    # Seed 001: Norwegian district heating: minimum 8 characters.
    "no-district-heating": PasswordPolicy(min_length=8),
    # Seed 002: Finnish energy company.
    "fi-energy": PasswordPolicy(
        min_length=10, min_upper=1, min_lower=1, min_digits=1, max_shared_run_with_user_data=3
    ),
    # Seed 003: Spanish water utility (no rules published: NIST defaults plus strength).
    "es-water": PasswordPolicy(min_length=8, min_zxcvbn_score=2),
    # Seed 004: Swedish grid company logs in upstream; local fallback follows NIST.
    "nist": PasswordPolicy(),
}


# --- Checking a password against a policy -------------------------------------------------

BLOCKLIST_FILE = "common_passwords.txt"
ZXCVBN_MAX_INPUT = 100
"""zxcvbn's matching grows fast with length; a strength verdict needs no more than this."""


@dataclass(frozen=True)
class PasswordRule:
    """One rule of a policy, by stable ``code`` and ``params``; pages translate the code.

    The same value describes a rule before the user types (``describe_rules``) and names an
    unmet rule afterwards (``check_password``), so both lists read the same.
    """

    code: str
    params: dict[str, int] = field(default_factory=dict)

    @property
    def message(self) -> str:
        """The rule in English; other languages come from the code and params."""
        number = self.params.get("count", self.params.get("score", 0))
        template = _MESSAGES[self.code]
        return template(number) if callable(template) else template


RuleFailure = PasswordRule
"""An unmet rule is reported as the rule itself."""


def _plural(singular: str, plural: str) -> Callable[[int], str]:
    return lambda n: (singular if n == 1 else plural).format(n=n)


_MESSAGES: dict[str, str | Callable[[int], str]] = {
    "min_length": _plural("Use at least {n} character.", "Use at least {n} characters."),
    "max_length": _plural("Use at most {n} character.", "Use at most {n} characters."),
    "min_upper": _plural(
        "Include at least {n} upper-case letter.", "Include at least {n} upper-case letters."
    ),
    "min_lower": _plural(
        "Include at least {n} lower-case letter.", "Include at least {n} lower-case letters."
    ),
    "min_digits": _plural("Include at least {n} digit.", "Include at least {n} digits."),
    "min_special": _plural(
        "Include at least {n} special character (such as ! # % or -).",
        "Include at least {n} special characters (such as ! # % or -).",
    ),
    "min_distinct": _plural(
        "Use at least {n} different character.", "Use at least {n} different characters."
    ),
    "shared_run_with_user_data": _plural(
        "Do not use {n} character in a row from your name or email address.",
        "Do not use {n} characters in a row from your name or email address.",
    ),
    "too_weak": lambda n: f"Choose a password that is harder to guess (strength {n} of 4).",
    "common_password": "Do not use a commonly used password.",
    "confirmation_mismatch": "The two passwords must be the same.",
}


@dataclass(frozen=True)
class PasswordCheck:
    """The verdict: ``ok`` only when ``failures`` is empty; every unmet rule is listed."""

    failures: list[PasswordRule]

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def codes(self) -> list[str]:
        return [failure.code for failure in self.failures]


def describe_rules(policy: PasswordPolicy) -> list[PasswordRule]:
    """The rules to show next to the password field, before the user types."""
    rules = [PasswordRule("min_length", {"count": policy.min_length})]
    counted = (
        ("min_upper", policy.min_upper),
        ("min_lower", policy.min_lower),
        ("min_digits", policy.min_digits),
        ("min_special", policy.min_special),
        ("min_distinct", policy.min_distinct),
    )
    rules += [PasswordRule(code, {"count": count}) for code, count in counted if count]
    if policy.max_shared_run_with_user_data:
        rules.append(
            PasswordRule(
                "shared_run_with_user_data", {"count": policy.max_shared_run_with_user_data}
            )
        )
    if policy.min_zxcvbn_score:
        rules.append(PasswordRule("too_weak", {"score": policy.min_zxcvbn_score}))
    if policy.check_blocklist:
        rules.append(PasswordRule("common_password"))
    rules.append(PasswordRule("max_length", {"count": policy.max_length}))
    return rules


def check_password(
    policy: PasswordPolicy,
    password: str,
    *,
    confirmation: str | None = None,
    user_inputs: Iterable[str] = (),
) -> PasswordCheck:
    """Check ``password`` against every rule of ``policy`` and list each one it breaks.

    ``user_inputs`` are the user's own data (name, email, phone): a password built from them
    is refused by the shared-run rule and scores lower with zxcvbn. ``confirmation`` is the
    second field of the form; None means the caller has no such field to compare.
    """
    inputs = [value for value in user_inputs if value]
    failures: list[PasswordRule] = []

    def require(code: str, count: int, actual: int) -> None:
        if actual < count:
            failures.append(PasswordRule(code, {"count": count}))

    require("min_length", policy.min_length, len(password))
    if len(password) > policy.max_length:
        failures.append(PasswordRule("max_length", {"count": policy.max_length}))
    require("min_upper", policy.min_upper, sum(ch.isupper() for ch in password))
    require("min_lower", policy.min_lower, sum(ch.islower() for ch in password))
    require("min_digits", policy.min_digits, sum(ch.isdigit() for ch in password))
    require("min_special", policy.min_special, sum(_is_special(ch) for ch in password))
    require("min_distinct", policy.min_distinct, len(set(password)))
    run = policy.max_shared_run_with_user_data
    if run and shares_run_with_user_data(password, inputs, run):
        failures.append(PasswordRule("shared_run_with_user_data", {"count": run}))
    if policy.min_zxcvbn_score and _zxcvbn_score(password, inputs) < policy.min_zxcvbn_score:
        failures.append(PasswordRule("too_weak", {"score": policy.min_zxcvbn_score}))
    if policy.check_blocklist and is_common_password(password):
        failures.append(PasswordRule("common_password"))
    if confirmation is not None and confirmation != password:
        failures.append(PasswordRule("confirmation_mismatch"))
    return PasswordCheck(failures=failures)


def _is_special(character: str) -> bool:
    """Anything that is not a letter or digit counts, including spaces and symbols."""
    return not character.isalnum()


def user_data_fragments(user_inputs: Iterable[str]) -> list[str]:
    """The pieces of the user's data a password must not borrow from, case-folded.

    An email gives itself whole and its local part; a name gives itself and each word, so
    "Anna Berg" guards "anna" and "berg" as well as "anna berg".
    """
    fragments: set[str] = set()
    for value in user_inputs:
        folded = value.strip().casefold()
        if not folded:
            continue
        fragments.add(folded)
        if "@" in folded:
            fragments.add(folded.rsplit("@", 1)[0])
        else:
            fragments.update(folded.split())
    return sorted(fragment for fragment in fragments if fragment)


def shares_run_with_user_data(password: str, user_inputs: Iterable[str], run: int) -> bool:
    """True when ``password`` contains ``run`` consecutive characters of the user's data."""
    folded = password.casefold()
    for fragment in user_data_fragments(user_inputs):
        for start in range(len(fragment) - run + 1):
            if fragment[start : start + run] in folded:
                return True
    return False


def _zxcvbn_score(password: str, user_inputs: list[str]) -> int:
    from zxcvbn import zxcvbn

    if not password:
        return 0  # zxcvbn raises IndexError on an empty string; nothing is weaker
    inputs = user_data_fragments(user_inputs)
    return int(zxcvbn(password[:ZXCVBN_MAX_INPUT], user_inputs=inputs)["score"])


@cache
def common_passwords() -> frozenset[str]:
    """The blocklist shipped with the package, read once on first use."""
    text = resources.files("policies").joinpath(BLOCKLIST_FILE).read_text(encoding="utf-8")
    return frozenset(
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
    )


def is_common_password(password: str) -> bool:
    return password.casefold() in common_passwords()
