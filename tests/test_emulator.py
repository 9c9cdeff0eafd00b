"""The emulator itself: dev only, FTN's demands, and the broker's own provider keys."""
# ruff: noqa: F811 - pytest fixtures imported from the harness are parameters here

from __future__ import annotations

import stat

import pytest
import requests

from emulator import EmulatorRefused, create_emulator
from providers import generate_provider_keys, load_or_create_provider_keys

from .test_providers_support import emulator, ftn_keys  # noqa: F401 - fixtures


def test_the_emulator_refuses_to_run_on_a_public_address():
    with pytest.raises(EmulatorRefused):
        create_emulator("https://login.example.com")


def test_ftn_login_page_refuses_a_request_without_a_signed_request_object(emulator):
    answer = requests.get(f"{emulator.url}/ftn/authorize", timeout=5, params={
        "client_id": "broker-ftn", "response_type": "code", "scope": "openid",
        "redirect_uri": "http://127.0.0.1:5000/cb"})
    assert answer.status_code == 400
    assert "signed request object" in answer.text


def test_ftn_token_endpoint_refuses_a_client_secret(emulator, ftn_keys):
    answer = requests.post(f"{emulator.url}/ftn/token", timeout=5, data={
        "grant_type": "authorization_code", "code": "x", "client_id": "broker-ftn",
        "client_secret": "guess"})
    assert answer.status_code == 401
    assert answer.json()["error"] == "invalid_client"


def test_microsoft_common_metadata_names_the_issuer_template(emulator):
    document = requests.get(emulator.discovery("microsoft", tenant="common"), timeout=5).json()
    assert document["issuer"] == f"{emulator.url}/microsoft/{{tenantid}}/v2.0"


def test_facebook_graph_refuses_an_unknown_access_token(emulator):
    answer = requests.get(f"{emulator.url}/facebook/me", timeout=5,
                          params={"access_token": "made-up", "fields": "id,email"})
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == 190


def test_provider_keys_are_kept_in_a_private_file_and_reused(tmp_path):
    path = tmp_path / "ftn-keys.json"
    first = load_or_create_provider_keys(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = load_or_create_provider_keys(path)
    assert again.signing_kid == first.signing_kid
    public = again.public_jwks()["keys"]
    assert {key["use"] for key in public} == {"sig", "enc"}
    assert all("d" not in key for key in public)


def test_provider_keys_shorter_than_2048_bits_are_refused():
    with pytest.raises(ValueError):
        generate_provider_keys(1024)


def test_the_demo_companion_registers_the_tenants_ftn_keys_and_refuses_without_dev_mode(
        tmp_path):
    from broker.config import parse_config
    from emulator.demo import emulator_server

    metadata_url = "http://127.0.0.1:5002/ftn/.well-known/openid-configuration"
    config = parse_config({
        "secret_key": "test-secret-key-0123456789abcdefghijkl",
        "hmac_key": "test-hmac-key-0123456789abcdefghijklmn",
        "dev_mode": True,
        "emulator_url": "http://127.0.0.1:5002",
        "tenants": {"stadsenergi": {
            "name": "Stadsenergi", "country": "FI", "login_methods": ["ftn"],
            "upstreams": {"ftn": {"kind": "ftn", "client_id": "broker-ftn",
                                  "server_metadata_url": metadata_url,
                                  "keys_file": str(tmp_path / "ftn-keys.json")}},
        }},
    })
    name, app, port, link = emulator_server(config)
    assert (name, port, link) == ("emulator", 5002, "http://127.0.0.1:5002/")
    registered = app.extensions["emulator"].client("ftn", "broker-ftn")
    keys = load_or_create_provider_keys(tmp_path / "ftn-keys.json")
    assert registered.jwks == keys.public_jwks()
    with pytest.raises(EmulatorRefused):
        emulator_server(config.model_copy(update={"dev_mode": False}))
