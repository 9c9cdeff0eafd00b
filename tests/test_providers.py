"""Every upstream over real HTTP against the emulator: the mapped identity per broker dialect."""
# ruff: noqa: F811 - pytest fixtures imported from the harness are parameters here

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import pytest

from providers import UpstreamError

from .test_providers_support import (  # noqa: F401 - fixtures
    browse_login,
    emulator,
    ftn_keys,
    make_provider,
    metadata_cache,
)


def login(provider, persona: str, **edits: str):  # type: ignore[no-untyped-def]
    start = provider.begin()
    args = browse_login(start.url, persona, **edits)
    return provider.complete(args, start.state_data)


def query_of(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


# --- MitID ----------------------------------------------------------------------------------

@pytest.mark.parametrize("dialect", ["signaturgruppen", "signicat", "idura"])
def test_mitid_login_maps_uuid_name_birthdate_cpr_and_level_in_each_broker_dialect(
        emulator, metadata_cache, dialect):
    provider = make_provider(emulator, "mitid", cache=metadata_cache, dialect=dialect,
                             allow_national_id=True)
    identity = login(provider, "mads")
    assert identity.provider == "mitid" and identity.amr == "mitid"
    assert identity.subject == "3c9e7b1d-6f2a-4d8c-b5e0-7a1f9d3c2b84"
    assert identity.name == "Mads Nielsen"
    assert identity.national_id == "1512659871"
    assert identity.acr == "high"
    assert identity.email is None and identity.email_verified is False
    assert identity.birthdate == "1965-12-15"


def test_mitid_without_cpr_permission_neither_asks_for_nor_keeps_the_cpr(
        emulator, metadata_cache):
    provider = make_provider(emulator, "mitid", cache=metadata_cache)
    start = provider.begin()
    assert query_of(start.url)["scope"] == ["openid mitid"]
    identity = provider.complete(browse_login(start.url, "karen"), start.state_data)
    assert identity.national_id is None
    assert "dk.cpr" not in identity.raw_claims
    assert identity.acr == "substantial"


def test_mitid_asks_for_the_level_through_idp_params_and_refuses_a_lower_one(
        emulator, metadata_cache):
    provider = make_provider(emulator, "mitid", cache=metadata_cache, min_acr="high")
    start = provider.begin()
    idp_params = json.loads(query_of(start.url)["idp_params"][0])
    assert idp_params == {"mitid": {"loa_value": "high"}}
    with pytest.raises(UpstreamError) as refused:
        provider.complete(browse_login(start.url, "karen"), start.state_data)
    assert refused.value.code == "acr_too_low"


def test_portal_asking_for_substantial_refuses_a_low_mitid_login(emulator, metadata_cache):
    provider = make_provider(emulator, "mitid", cache=metadata_cache)
    start = provider.begin(acr="substantial")
    with pytest.raises(UpstreamError) as refused:
        provider.complete(browse_login(start.url, "lise"), start.state_data)
    assert refused.value.code == "acr_too_low"


def test_a_person_edited_on_the_emulator_page_arrives_as_edited(emulator, metadata_cache):
    provider = make_provider(emulator, "mitid", cache=metadata_cache, allow_national_id=True)
    identity = login(provider, "karen", name="Karen Test", national_id="0202021234",
                     uuid="11111111-2222-3333-4444-555555555555", loa="high")
    assert (identity.name, identity.national_id, identity.acr) == (
        "Karen Test", "0202021234", "high")
    assert identity.subject == "11111111-2222-3333-4444-555555555555"


# --- FTN --------------------------------------------------------------------------------------

@pytest.mark.parametrize("dialect,hetu_claim", [
    ("op", "personal_identity_code"), ("idura", "hetu"), ("signicat", "nin"),
])
def test_ftn_login_decrypts_the_id_token_and_maps_the_hetu_in_each_dialect(
        emulator, metadata_cache, ftn_keys, dialect, hetu_claim):
    provider = make_provider(emulator, "ftn", cache=metadata_cache, keys=ftn_keys,
                             dialect=dialect, allow_national_id=True)
    start = provider.begin()
    assert set(query_of(start.url)) == {"client_id", "request", "dialect"}
    identity = provider.complete(browse_login(start.url, "aino"), start.state_data)
    assert identity.amr == "ftn" and identity.subject == "ftn-sub-b37e10f8"
    assert identity.national_id == "150875-946U"
    assert identity.raw_claims[hetu_claim] == "150875-946U"
    assert (identity.given_name, identity.family_name) == ("Aino", "Korhonen")
    assert identity.acr == "high"


def test_ftn_without_hetu_permission_gets_no_hetu(emulator, metadata_cache, ftn_keys):
    provider = make_provider(emulator, "ftn", cache=metadata_cache, keys=ftn_keys)
    identity = login(provider, "matti")
    assert identity.national_id is None
    assert "personal_identity_code" not in identity.raw_claims
    assert identity.acr == "substantial"


def test_ftn_refuses_an_id_token_that_is_only_signed_not_encrypted(
        emulator, metadata_cache, ftn_keys):
    provider = make_provider(emulator, "ftn", cache=metadata_cache, keys=ftn_keys)
    emulator.next_token_defect("ftn", "unencrypted")
    with pytest.raises(UpstreamError) as refused:
        login(provider, "matti")
    assert refused.value.code == "not_encrypted"


def test_ftn_cannot_be_built_without_our_keys(emulator, metadata_cache):
    with pytest.raises(UpstreamError) as refused:
        make_provider(emulator, "ftn", cache=metadata_cache)
    assert refused.value.code == "not_configured"


# --- Microsoft --------------------------------------------------------------------------------

def test_microsoft_work_account_on_organizations_uses_the_tenant_issuer_and_trusts_edov(
        emulator, metadata_cache):
    provider = make_provider(emulator, "microsoft", cache=metadata_cache,
                             tenant="organizations")
    identity = login(provider, "work")
    tenant_id = "4f1c2a9e-7d3b-4c55-9a61-2b8e0f6d1c7a"
    assert identity.raw_claims["iss"] == f"{emulator.url}/microsoft/{tenant_id}/v2.0"
    assert identity.subject == f"{tenant_id}:0b7c3e9a-5d21-4f6e-a8b4-1c2d3e4f5a6b"
    assert identity.email == "erik.lund@norrnat.example" and identity.email_verified


def test_microsoft_personal_account_email_is_not_trusted_as_verified(emulator, metadata_cache):
    provider = make_provider(emulator, "microsoft", cache=metadata_cache, tenant="common")
    identity = login(provider, "personal")
    assert identity.email == "sara.berg@outlook.example"
    assert identity.email_verified is False


def test_microsoft_organizations_endpoint_refuses_a_personal_account(emulator, metadata_cache):
    provider = make_provider(emulator, "microsoft", cache=metadata_cache,
                             tenant="organizations")
    with pytest.raises(UpstreamError) as refused:
        login(provider, "personal")
    assert refused.value.code == "tenant_not_allowed"


def test_microsoft_refuses_a_tenant_outside_the_allowed_list(emulator, metadata_cache):
    provider = make_provider(emulator, "microsoft", cache=metadata_cache, tenant="common",
                             extra={"allowed_tenants": ["00000000-0000-0000-0000-000000000001"]})
    with pytest.raises(UpstreamError) as refused:
        login(provider, "work")
    assert refused.value.code == "tenant_not_allowed"


# --- Google and Facebook ----------------------------------------------------------------------

@pytest.mark.parametrize("persona,verified", [("anna", True), ("olof", False)])
def test_google_passes_on_email_verified_as_google_states_it(
        emulator, metadata_cache, persona, verified):
    provider = make_provider(emulator, "google", cache=metadata_cache)
    identity = login(provider, persona)
    assert identity.amr == "google" and identity.email
    assert identity.email_verified is verified


def test_facebook_login_reads_the_graph_api_and_never_calls_the_email_verified(
        emulator, metadata_cache):
    provider = make_provider(emulator, "facebook", cache=metadata_cache)
    identity = login(provider, "maja")
    assert identity.subject == "10160000000000001" and identity.amr == "facebook"
    assert identity.email == "maja.lind@example.test" and identity.email_verified is False
    assert identity.given_name == "Maja"


def test_facebook_person_without_email_arrives_without_email(emulator, metadata_cache):
    provider = make_provider(emulator, "facebook", cache=metadata_cache)
    identity = login(provider, "nils")
    assert identity.email is None and identity.name == "Nils Åberg"


def test_cancel_on_the_upstream_page_is_access_denied(emulator, metadata_cache):
    provider = make_provider(emulator, "google", cache=metadata_cache)
    start = provider.begin()
    args = browse_login(start.url, "anna", action="cancel")
    with pytest.raises(UpstreamError) as refused:
        provider.complete(args, start.state_data)
    assert refused.value.code == "access_denied"


def test_authorization_url_carries_pkce_s256_state_and_nonce(emulator, metadata_cache):
    provider = make_provider(emulator, "google", cache=metadata_cache)
    start = provider.begin(login_hint="anna@example.test")
    query = query_of(start.url)
    assert query["code_challenge_method"] == ["S256"]
    assert query["state"] == [start.state_data["state"]]
    assert query["nonce"] == [start.state_data["nonce"]]
    assert query["login_hint"] == ["anna@example.test"]
    assert start.state_data["code_verifier"] not in start.url
    json.dumps(start.state_data)  # the broker stores it as JSON
