"""ID tokens as each upstream issues them, and the defects tests ask for on purpose."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from typing import Any

import requests
from joserfc import jwe, jwt
from joserfc.jwk import KeySet, RSAKey

from .state import EmulatorState, Grant

ID_TOKEN_LIFETIME_SECONDS = 600
FTN_ENCRYPTION = {"alg": "RSA-OAEP", "enc": "A128CBC-HS256"}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def client_key_set(state: EmulatorState, kind: str, client_id: str) -> KeySet | None:
    """The relying party's public keys: registered in memory or fetched from its jwks_uri."""
    client = state.client(kind, client_id)
    if client is None:
        return None
    jwks = client.jwks
    if jwks is None and client.jwks_uri:
        jwks = requests.get(client.jwks_uri, timeout=10).json()
    return KeySet.import_key_set(jwks) if jwks else None


def _encryption_key(keys: KeySet) -> RSAKey | None:
    return next((k for k in keys.keys
                 if isinstance(k, RSAKey) and k.get("use") == "enc"), None)


def sign(state: EmulatorState, kind: str, claims: dict[str, Any], defect: str | None) -> str:
    key = state.current_key(kind)
    alg = str(key.get("alg"))
    if defect == "alg_none":
        header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
        return f"{header}.{_b64(json.dumps(claims).encode())}."
    if defect == "hs256_public_key":
        # The classic confusion attack: the RSA public key, as PEM, used as an HMAC secret.
        secret = key.as_pem(private=False)
        header = {"alg": "HS256", "typ": "JWT", "kid": key.kid}
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{_b64(mac)}"
    signer = state.forged_keys[kind] if defect == "forged_signature" else key
    return jwt.encode({"alg": alg, "typ": "JWT", "kid": key.kid}, claims, signer)


def id_token(state: EmulatorState, grant: Grant, identity: dict[str, Any], issuer: str) -> str:
    request = grant.request
    defect = state.take_defect(request.kind)
    now = int(time.time())
    claims: dict[str, Any] = {
        **identity,
        "iss": issuer,
        "aud": request.client_id,
        "iat": now,
        "exp": now + ID_TOKEN_LIFETIME_SECONDS,
        "auth_time": int(grant.issued_at),
    }
    if request.nonce:
        claims["nonce"] = request.nonce
    if request.kind == "google":
        claims["azp"] = request.client_id
    if defect == "wrong_issuer":
        claims["iss"] = "https://impostor.invalid/" + request.kind
    elif defect == "wrong_audience":
        claims["aud"] = "some-other-client"
    elif defect == "expired":
        claims["iat"], claims["exp"] = now - 3600, now - 1800
    elif defect == "wrong_nonce":
        claims["nonce"] = secrets.token_urlsafe(16)
    signed = sign(state, request.kind, claims, defect)
    if request.kind != "ftn" or defect == "unencrypted":
        return signed
    return encrypt_for_client(state, request.client_id, signed)


def encrypt_for_client(state: EmulatorState, client_id: str, signed: str) -> str:
    """FTN's nested JWT: the signed token encrypted to the relying party's ``enc`` key."""
    keys = client_key_set(state, "ftn", client_id)
    key = _encryption_key(keys) if keys else None
    if key is None:
        raise LookupError(f"client {client_id!r} registered no encryption key")
    header = {**FTN_ENCRYPTION, "cty": "JWT", "kid": key.kid}
    return jwe.encrypt_compact(header, signed.encode(), key)
