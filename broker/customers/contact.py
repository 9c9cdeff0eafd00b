"""Email and phone as the register keeps them: emails lower-case, phones in E.164."""

from __future__ import annotations

import phonenumbers


class InvalidPhone(ValueError):
    """The text is not a possible phone number in the tenant's country or in E.164."""


def normalise_email(value: str) -> str:
    return (value or "").strip().lower()


def looks_like_email(value: str) -> bool:
    local, _, domain = value.partition("@")
    return bool(local) and "." in domain and " " not in value and len(value) <= 320


def normalise_phone(value: str, country: str) -> str:
    """'+47 912 34 567' or '912 34 567' at a Norwegian tenant -> '+4791234567'."""
    try:
        number = phonenumbers.parse((value or "").strip(), country)
    except phonenumbers.NumberParseException as error:
        raise InvalidPhone(str(error)) from None
    if not phonenumbers.is_valid_number(number):
        raise InvalidPhone("not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
