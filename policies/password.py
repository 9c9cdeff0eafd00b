"""Password policy: a tenant's rules as data, and a check that lists every unmet rule."""

from __future__ import annotations

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
