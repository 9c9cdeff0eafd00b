"""Forged, replayed and tampered upstream answers: each is refused with a clear code."""
# ruff: noqa: F811 - pytest fixtures imported from the harness are parameters here

from __future__ import annotations

import pytest
import requests

from providers import UpstreamError

from .test_providers_support import (  # noqa: F401 - fixtures
    browse_login,
    emulator,
    ftn_keys,
    make_provider,
    metadata_cache,
)

TOKEN_DEFECTS = [
    ("forged_signature", "bad_signature"),
    ("wrong_issuer", "wrong_issuer"),
    ("wrong_audience", "wrong_audience"),
    ("expired", "expired"),
    ("wrong_nonce", "nonce_mismatch"),
    ("alg_none", "alg_not_allowed"),
    ("hs256_public_key", "alg_not_allowed"),
]


@pytest.mark.parametrize("kind,persona", [("google", "anna"), ("mitid", "karen"),
                                          ("microsoft", "work")])
@pytest.mark.parametrize("defect,code", TOKEN_DEFECTS)
def test_a_tampered_id_token_is_refused(emulator, metadata_cache, kind, persona, defect, code):
    provider = make_provider(emulator, kind, cache=metadata_cache)
    start = provider.begin()
    args = browse_login(start.url, persona)
    emulator.next_token_defect(kind, defect)
    with pytest.raises(UpstreamError) as refused:
        provider.complete(args, start.state_data)
    assert refused.value.code == code


@pytest.mark.parametrize("defect,code", [("forged_signature", "bad_signature"),
                                         ("wrong_nonce", "nonce_mismatch"),
                                         ("alg_none", "alg_not_allowed")])
def test_a_tampered_ftn_token_is_refused_after_decryption(
        emulator, metadata_cache, ftn_keys, defect, code):
    provider = make_provider(emulator, "ftn", cache=metadata_cache, keys=ftn_keys)
    start = provider.begin()
    args = browse_login(start.url, "matti")
    emulator.next_token_defect("ftn", defect)
    with pytest.raises(UpstreamError) as refused:
        provider.complete(args, start.state_data)
    assert refused.value.code == code


def test_a_callback_belonging_to_another_login_is_a_state_mismatch(emulator, metadata_cache):
    provider = make_provider(emulator, "google", cache=metadata_cache)
    victim, attacker = provider.begin(), provider.begin()
    attackers_callback = browse_login(attacker.url, "olof")
    with pytest.raises(UpstreamError) as refused:
        provider.complete(attackers_callback, victim.state_data)
    assert refused.value.code == "state_mismatch"


def test_a_callback_without_state_is_a_state_mismatch(emulator, metadata_cache):
    provider = make_provider(emulator, "google", cache=metadata_cache)
    start = provider.begin()
    args = browse_login(start.url, "anna")
    del args["state"]
    with pytest.raises(UpstreamError) as refused:
        provider.complete(args, start.state_data)
    assert refused.value.code == "state_mismatch"


def test_a_replayed_response_with_its_state_is_refused_because_the_code_works_once(
        emulator, metadata_cache):
    provider = make_provider(emulator, "mitid", cache=metadata_cache)
    start = provider.begin()
    args = browse_login(start.url, "karen")
    provider.complete(args, start.state_data)
    with pytest.raises(UpstreamError) as refused:
        provider.complete(args, start.state_data)
    assert refused.value.code == "token_exchange_failed"
    assert "invalid_grant" in refused.value.message


def test_a_replayed_facebook_code_is_refused(emulator, metadata_cache):
    provider = make_provider(emulator, "facebook", cache=metadata_cache)
    start = provider.begin()
    args = browse_login(start.url, "maja")
    provider.complete(args, start.state_data)
    with pytest.raises(UpstreamError) as refused:
        provider.complete(args, start.state_data)
    assert refused.value.code == "token_exchange_failed"


def test_a_stored_login_of_another_upstream_is_refused(emulator, metadata_cache):
    google = make_provider(emulator, "google", cache=metadata_cache)
    microsoft = make_provider(emulator, "microsoft", cache=metadata_cache, tenant="common")
    start = microsoft.begin()
    args = browse_login(start.url, "work")
    with pytest.raises(UpstreamError) as refused:
        google.complete(args, start.state_data)
    assert refused.value.code == "state_mismatch"


def test_a_code_without_the_pkce_verifier_is_refused(emulator, metadata_cache):
    provider = make_provider(emulator, "google", cache=metadata_cache)
    start = provider.begin()
    args = browse_login(start.url, "anna")
    tampered = {**start.state_data, "code_verifier": "x" * 64}
    with pytest.raises(UpstreamError) as refused:
        provider.complete(args, tampered)
    assert refused.value.code == "token_exchange_failed"


def test_rotated_upstream_keys_are_fetched_again_and_accepted(emulator, metadata_cache):
    provider = make_provider(emulator, "google", cache=metadata_cache)
    login_before = provider.begin()
    provider.complete(browse_login(login_before.url, "anna"), login_before.state_data)
    new_kid = requests.post(f"{emulator.url}/google/_test/rotate-keys", timeout=5).json()["kid"]
    start = provider.begin()
    identity = provider.complete(browse_login(start.url, "anna"), start.state_data)
    assert identity.subject == "109876543210987654321"
    assert new_kid in {key["kid"] for key in provider.load_jwks(False)["keys"]}


def test_a_wrong_client_secret_is_refused_by_the_upstream(emulator, metadata_cache):
    emulator.state.register_client("google", "broker-google-strict",
                                   secret="the-real-secret-0123456789abcdefghij")
    provider = make_provider(emulator, "google", cache=metadata_cache)
    provider.config = provider.config.model_copy(update={"client_id": "broker-google-strict"})
    start = provider.begin()
    with pytest.raises(UpstreamError) as refused:
        provider.complete(browse_login(start.url, "anna"), start.state_data)
    assert refused.value.code == "token_exchange_failed"
