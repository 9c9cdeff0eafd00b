"""What the emulator remembers, in memory: its keys, registered clients, codes and tokens."""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from joserfc.jwk import ECKey, Key, KeySet, RSAKey

from .personas import Persona

KINDS = ("mitid", "ftn", "microsoft", "google", "facebook")
OIDC_KINDS = ("mitid", "ftn", "microsoft", "google")
CODE_LIFETIME_SECONDS = 120
DEFECTS = (
    "forged_signature", "wrong_issuer", "wrong_audience", "expired", "wrong_nonce",
    "alg_none", "hs256_public_key", "unencrypted",
)


def new_signing_key(kind: str) -> Key:
    """MitID brokers sign ES256; the others RS256."""
    if kind == "mitid":
        return ECKey.generate_key("P-256", parameters={"use": "sig", "alg": "ES256"},
                                  auto_kid=True)
    return RSAKey.generate_key(2048, parameters={"use": "sig", "alg": "RS256"}, auto_kid=True)


@dataclass
class RegisteredClient:
    client_id: str
    secret: str | None = None
    jwks: dict[str, Any] | None = None
    jwks_uri: str | None = None
    redirect_uris: list[str] = field(default_factory=list)


@dataclass
class AuthRequest:
    """An authorization request waiting for the tester to pick a person."""

    kind: str
    tenant: str | None
    dialect: str
    client_id: str
    redirect_uri: str
    scopes: set[str]
    state: str | None
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    loa_requested: str | None = None


@dataclass
class Grant:
    request: AuthRequest
    persona: Persona
    issued_at: float
    used: bool = False
    client_secret: str | None = None
    access_tokens: list[str] = field(default_factory=list)


class EmulatorState:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.lock = threading.Lock()
        self.signing_keys: dict[str, list[Key]] = {k: [new_signing_key(k)] for k in OIDC_KINDS}
        self.forged_keys: dict[str, Key] = {k: new_signing_key(k) for k in OIDC_KINDS}
        self.clients: dict[tuple[str, str], RegisteredClient] = {}
        self.pending: dict[str, AuthRequest] = {}
        self.codes: dict[str, Grant] = {}
        self.access_tokens: dict[str, Grant] = {}
        self.defects: dict[str, str] = {}
        self.used_assertion_ids: set[str] = set()

    # keys ------------------------------------------------------------------------------------

    def current_key(self, kind: str) -> Key:
        return self.signing_keys[kind][-1]

    def public_jwks(self, kind: str) -> dict[str, Any]:
        return KeySet(self.signing_keys[kind]).as_dict(private=False)

    def rotate(self, kind: str) -> str:
        """A new signing key, published next to the old ones and used from now on."""
        key = new_signing_key(kind)
        with self.lock:
            self.signing_keys[kind].append(key)
        return str(key.kid)

    # clients ---------------------------------------------------------------------------------

    def register_client(self, kind: str, client_id: str, *, secret: str | None = None,
                        jwks: dict[str, Any] | None = None, jwks_uri: str | None = None,
                        redirect_uris: list[str] | None = None) -> RegisteredClient:
        client = RegisteredClient(client_id, secret, jwks, jwks_uri, list(redirect_uris or []))
        with self.lock:
            self.clients[(kind, client_id)] = client
        return client

    def client(self, kind: str, client_id: str) -> RegisteredClient | None:
        return self.clients.get((kind, client_id))

    # one login -------------------------------------------------------------------------------

    def park(self, request: AuthRequest) -> str:
        request_id = secrets.token_urlsafe(16)
        with self.lock:
            self.pending[request_id] = request
        return request_id

    def take_pending(self, request_id: str) -> AuthRequest | None:
        with self.lock:
            return self.pending.pop(request_id, None)

    def issue_code(self, request: AuthRequest, persona: Persona) -> str:
        code = secrets.token_urlsafe(32)
        with self.lock:
            self.codes[code] = Grant(request, persona, time.time())
        return code

    def redeem_code(self, code: str) -> tuple[Grant | None, str]:
        """The grant for a fresh code; a second use revokes what the first use got."""
        with self.lock:
            grant = self.codes.get(code)
            if grant is None:
                return None, "unknown code"
            if grant.used:
                for token in grant.access_tokens:
                    self.access_tokens.pop(token, None)
                return None, "code already used"
            if time.time() - grant.issued_at > CODE_LIFETIME_SECONDS:
                return None, "code expired"
            grant.used = True
            return grant, ""

    def issue_access_token(self, grant: Grant) -> str:
        token = secrets.token_urlsafe(32)
        with self.lock:
            grant.access_tokens.append(token)
            self.access_tokens[token] = grant
        return token

    def set_defect(self, kind: str, defect: str | None) -> None:
        with self.lock:
            if defect:
                self.defects[kind] = defect
            else:
                self.defects.pop(kind, None)

    def take_defect(self, kind: str) -> str | None:
        with self.lock:
            return self.defects.pop(kind, None)

    def first_use_of_assertion(self, jti: str) -> bool:
        with self.lock:
            if jti in self.used_assertion_ids:
                return False
            self.used_assertion_ids.add(jti)
            return True
