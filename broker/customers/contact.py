"""Email and phone as the register keeps them: emails lower-case, phones in E.164.

Phone numbers are judged by ``phonenumbers`` and its metadata, nothing else. An import checks
up to a million of them, and ``parse`` + ``is_valid_number`` cost some 40 µs a number, mostly
Python around a dozen regular expressions. So a number already written in E.164 form
(``+4791234567``, spaces allowed) takes a short path: the same metadata, patterns and rules as
``phonenumbers.is_valid_number``, compiled once per calling code into one pattern per length.
The short path only ever accepts; whatever it is not sure of (a national prefix that parsing
could strip, a leading zero, an unknown calling code, a number it finds invalid) goes through
``phonenumbers.parse`` as before. ``tests/test_customers_import_fast.py`` compares both paths
on every calling code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

import phonenumbers
from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, PhoneMetadata

# The number types ``phonenumbers._number_type_helper`` tries; a number is valid when the
# general pattern and at least one of these match (mobile is skipped where its pattern is the
# fixed-line one, as there).
_NUMBER_TYPES = (
    "premium_rate", "toll_free", "shared_cost", "voip", "personal_number", "pager", "uan",
    "voicemail", "fixed_line", "mobile",
)
_NON_GEO_REGION = "001"
# '+', then ASCII digits and spaces: the only text the short path reads. E.164 allows 15 digits;
# fewer than 7 go the long way (phonenumbers' rules for very short input are its own).
_E164_SHAPE = re.compile(r"\+[1-9][0-9 ]{6,40}")
_MIN_DIGITS, _MAX_DIGITS = 7, 15


class InvalidPhone(ValueError):
    """The text is not a possible phone number in the tenant's country or in E.164."""


def normalise_email(value: str) -> str:
    return (value or "").strip().lower()


def looks_like_email(value: str) -> bool:
    local, _, domain = value.partition("@")
    return bool(local) and "." in domain and " " not in value and len(value) <= 320


def normalise_phone(value: str, country: str) -> str:
    """'+47 912 34 567' or '912 34 567' at a Norwegian tenant -> '+4791234567'."""
    text = (value or "").strip()
    fast = _valid_e164(text)
    if fast is not None:
        return fast
    return _normalise_with_phonenumbers(text, country)


def _normalise_with_phonenumbers(text: str, country: str) -> str:
    """The authority: ``phonenumbers.parse`` with the tenant's country, then validation."""
    try:
        number = phonenumbers.parse(text, country)
    except phonenumbers.NumberParseException as error:
        raise InvalidPhone(str(error)) from None
    if not phonenumbers.is_valid_number(number):
        raise InvalidPhone("not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _valid_e164(text: str) -> str | None:
    """``text`` in E.164 if it is written that way and valid for sure, else None (ask parse)."""
    if not _E164_SHAPE.fullmatch(text):
        return None
    digits = text.replace(" ", "")
    if not _MIN_DIGITS <= len(digits) - 1 <= _MAX_DIGITS:
        return None
    for length in (1, 2, 3):  # phonenumbers' country code rule: the shortest known prefix
        plan = _calling_code_plan(int(digits[1 : 1 + length]))
        if plan is not None:
            national = digits[1 + length :]
            return digits if plan.accepts(national) else None
    return None


@dataclass(frozen=True)
class _RegionPlan:
    """One region's validity test: for each national number length, one compiled pattern
    that matches exactly when ``_number_type_helper`` would return a type other than UNKNOWN."""

    leading_digits: re.Pattern[str] | None
    by_length: dict[int, re.Pattern[str]]

    def is_valid(self, national: str) -> bool:
        pattern = self.by_length.get(len(national))
        return pattern is not None and pattern.fullmatch(national) is not None


@dataclass(frozen=True)
class _CallingCodePlan:
    """How parse and ``is_valid_number`` treat ``+<code><national>`` for one calling code."""

    national_prefix: re.Pattern[str] | None
    regions: tuple[_RegionPlan, ...]

    def accepts(self, national: str) -> bool:
        if national[0] == "0":  # parse keeps it as an Italian leading zero: its own rules
            return False
        if self.national_prefix is not None and self.national_prefix.match(national):
            return False  # parse might strip a national prefix here
        region = self._region_for(national)
        return region is not None and region.is_valid(national)

    def _region_for(self, national: str) -> _RegionPlan | None:
        """``region_code_for_number``: the first region whose leading digits match, or
        (without leading digits) for which the number is valid."""
        if len(self.regions) == 1:
            return self.regions[0]
        for region in self.regions:
            if region.leading_digits is not None:
                if region.leading_digits.match(national):
                    return region
            elif region.is_valid(national):
                return region
        return None


@cache
def _calling_code_plan(calling_code: int) -> _CallingCodePlan | None:
    """Built on first use from phonenumbers' own metadata; None for an unknown code."""
    region_codes = COUNTRY_CODE_TO_REGION_CODE.get(calling_code)
    if not region_codes:
        return None
    main = PhoneMetadata.metadata_for_region_or_calling_code(calling_code, region_codes[0])
    if main is None:
        return None
    regions = []
    for region_code in region_codes:
        metadata = PhoneMetadata.metadata_for_region_or_calling_code(calling_code, region_code)
        if metadata is None:
            if len(region_codes) == 1:
                return None
            continue  # as _region_code_for_number_from_list does
        if region_code != _NON_GEO_REGION and (
            phonenumbers.country_code_for_valid_region(region_code) != calling_code
        ):
            return None  # never seen in the metadata; leave such a code to phonenumbers
        regions.append(_region_plan(metadata))
    prefix = main.national_prefix_for_parsing
    return _CallingCodePlan(re.compile(prefix) if prefix else None, tuple(regions))


def _region_plan(metadata: PhoneMetadata) -> _RegionPlan:
    general = metadata.general_desc
    descs = [getattr(metadata, name) for name in _NUMBER_TYPES]
    if metadata.same_mobile_and_fixed_line_pattern:
        descs.pop()  # mobile is only tried when its pattern differs from fixed line's
    usable = [d for d in descs if d is not None and d.national_number_pattern]
    by_length: dict[int, re.Pattern[str]] = {}
    if general is not None and general.national_number_pattern:
        for length in range(1, 18):
            alternatives = [
                d.national_number_pattern for d in usable if _length_allowed(d, length)
            ]
            if alternatives and _length_allowed(general, length):
                by_length[length] = _all_of_and_any_of(
                    general.national_number_pattern, alternatives
                )
    leading = metadata.leading_digits
    return _RegionPlan(re.compile(leading) if leading is not None else None, by_length)


def _all_of_and_any_of(general: str, alternatives: list[str]) -> re.Pattern[str]:
    """One pattern for "the whole number matches ``general`` and one of ``alternatives``"
    (used with ``fullmatch``, so each alternative must match the whole number too)."""
    any_of = "|".join(f"(?:{alternative})" for alternative in alternatives)
    return re.compile(f"(?=(?:{general})\\Z)(?:{any_of})")


def _length_allowed(desc: object, length: int) -> bool:
    """``_is_number_matching_desc``: no listed lengths means any length."""
    possible = getattr(desc, "possible_length", ())
    return not possible or length in possible
