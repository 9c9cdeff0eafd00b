"""What a provider hands the login flow: where to send the browser, and who came back.

Every defect in an upstream's answer is an :class:`UpstreamError` with a stable ``code`` the
login page can translate and the audit log can count; the message is for logs, never for users.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Acr = Literal["low", "substantial", "high"]
ACR_ORDER: dict[str, int] = {"low": 0, "substantial": 1, "high": 2}


class UpstreamError(Exception):
    """The upstream's answer cannot be trusted or used; ``code`` says which check failed."""

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class AuthorizationStart:
    """Where to send the browser, and what the broker keeps server-side until it returns."""

    url: str
    state_data: dict[str, Any]

    @property
    def state(self) -> str:
        return str(self.state_data["state"])


@dataclass(frozen=True)
class UpstreamIdentity:
    """A person as one upstream vouched for them, mapped to our vocabulary.

    ``subject`` is the upstream's stable id for the person (MitID uuid, FTN ``sub``, Google
    ``sub``, Microsoft ``tid:oid``, Facebook id). ``email_verified`` is only true when the
    upstream's claims prove it. ``national_id`` (CPR, hetu) is only set when the tenant's config
    allows asking for it.
    """

    provider: str
    subject: str
    amr: str
    acr: Acr
    email: str | None = None
    email_verified: bool = False
    name: str | None = None
    given_name: str | None = None
    family_name: str | None = None
    birthdate: str | None = None
    national_id: str | None = None
    raw_claims: dict[str, Any] = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:  # personal data stays out of logs and tracebacks
        return f"UpstreamIdentity(provider={self.provider!r}, acr={self.acr!r})"


def acr_at_least(actual: str, required: str | None) -> bool:
    return required is None or ACR_ORDER[actual] >= ACR_ORDER[required]


def stronger_acr(first: str | None, second: str | None) -> str | None:
    """The stricter of two demands (tenant minimum, portal's acr_values)."""
    if first is None:
        return second
    if second is None:
        return first
    return first if ACR_ORDER[first] >= ACR_ORDER[second] else second
