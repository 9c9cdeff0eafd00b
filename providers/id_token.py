"""ID token checks (OpenID Connect Core 3.1.3.7): decryption, signature, then the claims.

The algorithm comes from the token's header, which an attacker writes, so it is checked against
an allow-list before any key is chosen: ``none`` and the HMAC family (an RSA public key used as
an HMAC secret) never pass. Keys come from the upstream's JWK set, fetched again once when a
token names an unknown key id (rotation).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

from joserfc import jwe, jws, jwt
from joserfc.errors import BadSignatureError, JoseError
from joserfc.jwk import ECKey, Key, KeySet, RSAKey

from .identity import UpstreamError

DEFAULT_SIGNING_ALGS = ("RS256", "PS256", "ES256")
NEVER_ALLOWED_ALGS = frozenset({"none", "HS256", "HS384", "HS512"})
DEFAULT_LEEWAY_SECONDS = 60
KEY_TYPE_FOR_ALG_PREFIX = {"RS": "RSA", "PS": "RSA", "ES": "EC"}

JwksLoader = Callable[[bool], Mapping[str, Any]]
"""Returns the upstream's JWK set; ``True`` asks for a fresh copy."""


def is_encrypted(token: str) -> bool:
    return token.count(".") == 4


def decrypt_token(token: str, key: RSAKey, *, algorithms: Collection[str]) -> str:
    """The signed JWT inside a JWE (nested JWT), decrypted with our encryption key."""
    try:
        encrypted = jwe.decrypt_compact(token, key, algorithms=list(algorithms))
    except JoseError as error:
        raise UpstreamError("decryption_failed", type(error).__name__) from None
    if encrypted.plaintext is None:
        raise UpstreamError("decryption_failed", "empty plaintext")
    return encrypted.plaintext.decode("ascii", errors="replace")


def read_header(token: str) -> dict[str, Any]:
    try:
        return dict(jws.extract_compact(token.encode("ascii")).protected)
    except (JoseError, ValueError, UnicodeError) as error:
        raise UpstreamError("malformed_token", type(error).__name__) from None


def _pick_key(jwks: Mapping[str, Any], header: Mapping[str, Any]) -> Key | None:
    try:
        key_set = KeySet.import_key_set(dict(jwks))  # type: ignore[arg-type]
    except (JoseError, ValueError) as error:
        raise UpstreamError("bad_jwks", type(error).__name__) from None
    kid = header.get("kid")
    wanted_type = KEY_TYPE_FOR_ALG_PREFIX.get(str(header["alg"])[:2])
    candidates = [
        key for key in key_set.keys
        if isinstance(key, RSAKey | ECKey) and key.key_type == wanted_type
        and (kid is None or key.kid == kid)
        and key.get("use") in (None, "sig")
    ]
    return candidates[0] if len(candidates) == 1 else None


def verify_signature(
    token: str, load_jwks: JwksLoader, *, allowed_algs: Collection[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Checks the signature against the upstream's keys; returns (header, claims)."""
    if token.count(".") != 2:
        raise UpstreamError("malformed_token", "not a compact JWS")
    header = read_header(token)
    alg = str(header.get("alg"))
    if alg in NEVER_ALLOWED_ALGS or alg not in allowed_algs:
        raise UpstreamError("alg_not_allowed", f"algorithm {alg!r} is not accepted")
    key = _pick_key(load_jwks(False), header)
    if key is None:
        key = _pick_key(load_jwks(True), header)
    if key is None:
        raise UpstreamError("unknown_key", f"no signing key {header.get('kid')!r} in the JWKS")
    try:
        decoded = jwt.decode(token, key, algorithms=[alg])
    except BadSignatureError:
        raise UpstreamError("bad_signature", "signature does not verify") from None
    except (JoseError, ValueError) as error:
        raise UpstreamError("malformed_token", type(error).__name__) from None
    return dict(decoded.header), dict(decoded.claims)


def _number(claims: Mapping[str, Any], name: str) -> float:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UpstreamError("missing_claim", f"{name} is missing or not a number")
    return float(value)


def check_claims(
    claims: Mapping[str, Any],
    *,
    issuer: str,
    client_id: str,
    nonce: str | None,
    leeway_seconds: int = DEFAULT_LEEWAY_SECONDS,
    now: float | None = None,
) -> None:
    """iss, aud, azp, exp, iat and nonce, as OIDC Core 3.1.3.7 lists them."""
    now = time.time() if now is None else now
    if claims.get("iss") != issuer:
        raise UpstreamError("wrong_issuer", f"iss {claims.get('iss')!r} is not {issuer!r}")
    audience = claims.get("aud")
    audiences = [audience] if isinstance(audience, str) else audience
    if not isinstance(audiences, list) or client_id not in audiences:
        raise UpstreamError("wrong_audience", "the token was not issued to us")
    azp = claims.get("azp")
    if (len(audiences) > 1 or azp is not None) and azp != client_id:
        raise UpstreamError("wrong_azp", "the authorized party is not us")
    if _number(claims, "exp") + leeway_seconds < now:
        raise UpstreamError("expired", "the token has expired")
    if _number(claims, "iat") - leeway_seconds > now:
        raise UpstreamError("issued_in_future", "the token's iat lies in the future")
    if nonce is not None and claims.get("nonce") != nonce:
        raise UpstreamError("nonce_mismatch", "the nonce is not the one we sent")
    if not isinstance(claims.get("sub"), str) or not claims["sub"]:
        raise UpstreamError("missing_claim", "sub is missing")
