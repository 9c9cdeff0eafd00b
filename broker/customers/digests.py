"""Keyed HMACs of customer proofs and national ids, one purpose each (see DESIGN.md).

Everything that stores or compares a PIN, bill code, invoice number or national id goes
through here, so the importer, the binding flow and the upstream logins agree on the digest.
"""

from __future__ import annotations

from broker.security import keyed_hmac
from policies.binding import (
    PURPOSE_BY_PROOF,
    PURPOSE_NATIONAL_ID,
    normalise_national_id,
    normalise_proof_value,
)


def proof_hmac(hmac_key: str, proof_kind: str, typed_value: str) -> str:
    """The digest of a PIN, bill code or invoice number as typed (normalised first)."""
    return keyed_hmac(
        hmac_key, normalise_proof_value(typed_value), purpose=PURPOSE_BY_PROOF[proof_kind]
    )


def national_id_hmac(hmac_key: str, national_id: str, country: str) -> str:
    """The digest of a CPR / hetu / personnummer, normalised for ``country``."""
    return keyed_hmac(
        hmac_key, normalise_national_id(national_id, country), purpose=PURPOSE_NATIONAL_ID
    )
