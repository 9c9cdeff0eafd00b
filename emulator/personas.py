"""Test people the emulator's login page offers, per upstream (all invented)."""

from __future__ import annotations

from dataclasses import dataclass, replace

CONSUMER_TENANT_ID = "9188040d-6c67-4c5b-b112-36a304b66dad"
WORK_TENANT_ID = "4f1c2a9e-7d3b-4c55-9a61-2b8e0f6d1c7a"


@dataclass(frozen=True)
class Persona:
    key: str
    label: str
    name: str
    given_name: str
    family_name: str
    uuid: str
    email: str | None = None
    email_verified: bool = False
    national_id: str | None = None
    birthdate: str | None = None
    loa: str = "substantial"
    tenant_id: str | None = None

    def with_changes(self, changes: dict[str, str]) -> Persona:
        """The same person with the tester's edits from the form; blank fields keep the preset."""
        editable = ("name", "email", "national_id", "uuid", "birthdate", "loa")
        cleaned = {k: v.strip() for k, v in changes.items() if k in editable and v.strip()}
        if cleaned.get("loa", "low") not in ("low", "substantial", "high"):
            cleaned.pop("loa")
        return replace(self, **cleaned)


PERSONAS: dict[str, list[Persona]] = {
    "mitid": [
        Persona("karen", "Karen Jensen (substantial)", "Karen Jensen", "Karen", "Jensen",
                uuid="8a1f0c52-2d6e-4b7a-9e0f-5c3d1b2a4e6f", national_id="0101801234",
                birthdate="1980-01-01", loa="substantial"),
        Persona("mads", "Mads Nielsen (high)", "Mads Nielsen", "Mads", "Nielsen",
                uuid="3c9e7b1d-6f2a-4d8c-b5e0-7a1f9d3c2b84", national_id="1512659871",
                birthdate="1965-12-15", loa="high"),
        Persona("lise", "Lise Holm (low)", "Lise Holm", "Lise", "Holm",
                uuid="d4b2e8f6-1a3c-4e5d-8f7a-9c0b1d2e3f45", national_id="2207924562",
                birthdate="1992-07-22", loa="low"),
    ],
    "ftn": [
        Persona("matti", "Matti Virtanen (loa2)", "Matti Virtanen", "Matti", "Virtanen",
                uuid="ftn-sub-6a9d2c41", national_id="010180-9026",
                birthdate="1980-01-01", loa="substantial"),
        Persona("aino", "Aino Korhonen (loa3)", "Aino Korhonen", "Aino", "Korhonen",
                uuid="ftn-sub-b37e10f8", national_id="150875-946U",
                birthdate="1975-08-15", loa="high"),
    ],
    "microsoft": [
        Persona("work", "Erik Lund (work account)", "Erik Lund", "Erik", "Lund",
                uuid="0b7c3e9a-5d21-4f6e-a8b4-1c2d3e4f5a6b", email="erik.lund@norrnat.example",
                email_verified=True, tenant_id=WORK_TENANT_ID, loa="low"),
        Persona("personal", "Sara Berg (personal account)", "Sara Berg", "Sara", "Berg",
                uuid="00000000-0000-0000-6a1b-2c3d4e5f6a7b", email="sara.berg@outlook.example",
                tenant_id=CONSUMER_TENANT_ID, loa="low"),
    ],
    "google": [
        Persona("anna", "Anna Svensson (verified email)", "Anna Svensson", "Anna", "Svensson",
                uuid="109876543210987654321", email="anna.svensson@gmail.example",
                email_verified=True, loa="low"),
        Persona("olof", "Olof Ek (unverified email)", "Olof Ek", "Olof", "Ek",
                uuid="112233445566778899001", email="olof.ek@example.test", loa="low"),
    ],
    "facebook": [
        Persona("maja", "Maja Lind (shares email)", "Maja Lind", "Maja", "Lind",
                uuid="10160000000000001", email="maja.lind@example.test", loa="low"),
        Persona("nils", "Nils Åberg (no email)", "Nils Åberg", "Nils", "Åberg",
                uuid="10160000000000002", loa="low"),
    ],
}


def find_persona(kind: str, key: str) -> Persona | None:
    return next((p for p in PERSONAS[kind] if p.key == key), None)
