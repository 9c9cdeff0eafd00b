"""MitID through a Danish OIDC broker; the claim names depend on the broker (``dialect``).

The stable person id is the MitID uuid (the broker's ``sub`` is a per-client pseudonym). CPR is
asked for (and kept) only when the tenant allows it. ES256 ID tokens; ``client_secret_basic``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .base import OIDCProvider, drop_claims, text_claim
from .identity import UpstreamError, UpstreamIdentity

NSIS = "https://data.gov.dk/concept/core/nsis/"


@dataclass(frozen=True)
class MitIDDialect:
    """Where one broker puts each fact, and how it is asked for a level of assurance."""

    scopes: tuple[str, ...]
    national_id_scope: str
    uuid: str
    name: str
    birthdate: str
    national_id: str
    loa: str
    loa_values: Mapping[str, str]  # upstream value -> our acr
    acr_request: str  # "idp_params" or "acr_values"
    acr_values: Mapping[str, str]  # our acr -> the value we send
    given_name: str | None = None
    family_name: str | None = None


DIALECTS: dict[str, MitIDDialect] = {
    "signaturgruppen": MitIDDialect(
        scopes=("openid", "mitid"),
        national_id_scope="ssn",
        uuid="mitid.uuid",
        name="mitid.identity_name",
        birthdate="mitid.date_of_birth",
        national_id="dk.cpr",
        loa="loa",
        loa_values={NSIS + "Low": "low", NSIS + "Substantial": "substantial",
                    NSIS + "High": "high"},
        acr_request="idp_params",
        acr_values={"low": "low", "substantial": "substantial", "high": "high"},
    ),
    "signicat": MitIDDialect(
        scopes=("openid", "profile", "mitid"),
        national_id_scope="nin",
        uuid="mitid_uuid",
        name="name",
        given_name="given_name",
        family_name="family_name",
        birthdate="birthdate",
        national_id="nin",
        loa="mitid_loa",
        loa_values={"LOW": "low", "SUBSTANTIAL": "substantial", "HIGH": "high"},
        acr_request="acr_values",
        acr_values={"low": "urn:signicat:oidc:method:mitid-low",
                    "substantial": "urn:signicat:oidc:method:mitid-substantial",
                    "high": "urn:signicat:oidc:method:mitid-high"},
    ),
    "idura": MitIDDialect(
        scopes=("openid",),
        national_id_scope="ssn",
        uuid="uuid",
        name="name",
        birthdate="dateofbirth",
        national_id="cprNumberIdentifier",
        loa="acr",
        loa_values={"urn:grn:authn:dk:mitid:low": "low",
                    "urn:grn:authn:dk:mitid:substantial": "substantial",
                    "urn:grn:authn:dk:mitid:high": "high"},
        acr_request="acr_values",
        acr_values={"low": "urn:grn:authn:dk:mitid:low",
                    "substantial": "urn:grn:authn:dk:mitid:substantial",
                    "high": "urn:grn:authn:dk:mitid:high"},
    ),
}
DEFAULT_DIALECT = "signaturgruppen"
DEFAULT_LOA = "substantial"


class MitIDProvider(OIDCProvider):
    kind = "mitid"
    allowed_algs = ("ES256", "RS256", "PS256")
    uses_userinfo = True

    @property
    def dialect(self) -> MitIDDialect:
        name = self.config.dialect or DEFAULT_DIALECT
        if name not in DIALECTS:
            raise UpstreamError("not_configured", f"unknown MitID dialect {name!r}")
        return DIALECTS[name]

    def scopes(self) -> list[str]:
        scopes = list(self.config.scopes or self.dialect.scopes)
        if self.config.allow_national_id and self.dialect.national_id_scope not in scopes:
            scopes.append(self.dialect.national_id_scope)
        return scopes

    def authorization_params(self, required_acr: str | None) -> dict[str, str]:
        level = self.dialect.acr_values[required_acr or DEFAULT_LOA]
        if self.dialect.acr_request == "idp_params":
            return {"idp_params": json.dumps({"mitid": {"loa_value": level}})}
        return {"acr_values": level}

    def map_identity(self, claims: Mapping[str, Any]) -> UpstreamIdentity:
        dialect = self.dialect
        uuid = text_claim(claims, dialect.uuid)
        if uuid is None:
            raise UpstreamError("missing_claim", f"{dialect.uuid} is missing")
        loa = text_claim(claims, dialect.loa)
        if loa not in dialect.loa_values:
            raise UpstreamError("missing_claim", "no known level of assurance")
        national_id = (text_claim(claims, dialect.national_id)
                       if self.config.allow_national_id else None)
        return UpstreamIdentity(
            provider=self.kind,
            subject=uuid,
            amr="mitid",
            acr=dialect.loa_values[loa],  # type: ignore[arg-type]
            name=text_claim(claims, dialect.name),
            given_name=text_claim(claims, dialect.given_name),
            family_name=text_claim(claims, dialect.family_name),
            birthdate=text_claim(claims, dialect.birthdate),
            national_id=national_id,
            raw_claims=dict(claims) if national_id else drop_claims(claims, dialect.national_id),
        )

