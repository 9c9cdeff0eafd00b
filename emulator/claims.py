"""Claim shapes per upstream and broker dialect, written from the brokers' documentation.

Kept apart from ``providers/`` on purpose: the tests prove the providers' mapping presets
against an independent description of what each broker sends.
"""

from __future__ import annotations

import hashlib
from typing import Any

from .personas import Persona

NSIS = "https://data.gov.dk/concept/core/nsis/"
FTN_LOA = {"substantial": "http://ftn.ficora.fi/2017/loa2",
           "high": "http://ftn.ficora.fi/2017/loa3",
           "low": "http://ftn.ficora.fi/2017/loa2"}
DEFAULT_DIALECTS = {"mitid": "signaturgruppen", "ftn": "op"}
DIALECTS = {"mitid": ("signaturgruppen", "signicat", "idura"), "ftn": ("op", "idura", "signicat")}


def pairwise_subject(persona: Persona, client_id: str) -> str:
    """A per-client pseudonym, as MitID brokers and Microsoft issue ``sub``."""
    return hashlib.sha256(f"{persona.uuid}|{client_id}".encode()).hexdigest()[:32]


def _mitid(persona: Persona, dialect: str, scopes: set[str]) -> dict[str, Any]:
    level = persona.loa
    if dialect == "signicat":
        claims: dict[str, Any] = {
            "idp": "mitid", "mitid_uuid": persona.uuid, "name": persona.name,
            "given_name": persona.given_name, "family_name": persona.family_name,
            "birthdate": persona.birthdate, "mitid_loa": level.upper(),
            "mitid_ial": level.upper(), "mitid_aal": level.upper(),
        }
        if "nin" in scopes and persona.national_id:
            claims.update(nin=persona.national_id, nin_type="SSN", nin_issuing_country="DK")
        return claims
    if dialect == "idura":
        claims = {
            "identityscheme": "dkmitid", "uuid": persona.uuid, "name": persona.name,
            "dateofbirth": persona.birthdate, "acr": f"urn:grn:authn:dk:mitid:{level}",
        }
        if "ssn" in scopes and persona.national_id:
            claims["cprNumberIdentifier"] = persona.national_id
        return claims
    nsis = NSIS + level.capitalize()
    claims = {
        "idp": "mitid", "identity_type": "private", "loa": nsis, "ial": nsis, "aal": nsis,
        "mitid.uuid": persona.uuid, "mitid.identity_name": persona.name,
        "mitid.date_of_birth": persona.birthdate, "mitid.has_cpr": persona.national_id is not None,
    }
    if "ssn" in scopes and persona.national_id:
        claims["dk.cpr"] = persona.national_id
    return claims


def _ftn(persona: Persona, dialect: str, scopes: set[str]) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "name": persona.name, "given_name": persona.given_name,
        "family_name": persona.family_name, "birthdate": persona.birthdate,
        "acr": FTN_LOA[persona.loa],
    }
    hetu = {"op": ("personal_identity_code", "personal_identity_code"),
            "idura": ("hetu", "ssn"), "signicat": ("nin", "nin")}[dialect]
    if hetu[1] in scopes and persona.national_id:
        claims[hetu[0]] = persona.national_id
    return claims


def _microsoft(persona: Persona) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "ver": "2.0", "tid": persona.tenant_id, "oid": persona.uuid, "name": persona.name,
        "given_name": persona.given_name, "family_name": persona.family_name,
        "preferred_username": persona.email or f"{persona.given_name.lower()}@example.test",
    }
    if persona.email:
        claims["email"] = persona.email
        if persona.email_verified:
            claims["xms_edov"] = True
    return claims


def identity_claims(kind: str, dialect: str, persona: Persona, client_id: str,
                    scopes: set[str]) -> dict[str, Any]:
    """Claims about the person (no iss/aud/exp), with ``sub`` as this upstream issues it."""
    if kind == "mitid":
        return {"sub": pairwise_subject(persona, client_id), **_mitid(persona, dialect, scopes)}
    if kind == "ftn":
        return {"sub": persona.uuid, **_ftn(persona, dialect, scopes)}
    if kind == "microsoft":
        return {"sub": pairwise_subject(persona, client_id), **_microsoft(persona)}
    if kind == "google":
        claims: dict[str, Any] = {"sub": persona.uuid, "name": persona.name,
                                  "given_name": persona.given_name,
                                  "family_name": persona.family_name}
        if persona.email:
            claims.update(email=persona.email, email_verified=persona.email_verified)
        return claims
    profile: dict[str, Any] = {"id": persona.uuid, "name": persona.name,
                               "first_name": persona.given_name,
                               "last_name": persona.family_name}
    if persona.email:
        profile["email"] = persona.email
    return profile
