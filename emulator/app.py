"""The emulator's HTTP face: discovery, keys, login page, token, userinfo, per upstream."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any
from urllib.parse import unquote_plus, urlencode, urlsplit

from authlib.oauth2.rfc7636 import create_s256_code_challenge
from flask import Blueprint, Flask, Response, current_app, jsonify, redirect, request
from joserfc import jws, jwt
from joserfc.errors import JoseError

from .claims import DEFAULT_DIALECTS, DIALECTS, identity_claims
from .page import error_page, login_page
from .personas import PERSONAS, find_persona
from .state import DEFECTS, KINDS, AuthRequest, EmulatorState
from .tokens import client_key_set, encrypt_for_client, id_token, sign

LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")
MICROSOFT_MULTI_TENANT = ("common", "organizations", "consumers")
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
AUTH_METHODS = {
    "mitid": ("client_secret_basic",),
    "ftn": ("private_key_jwt",),
    "microsoft": ("client_secret_post", "client_secret_basic"),
    "google": ("client_secret_basic", "client_secret_post"),
    "facebook": ("client_secret_post", "client_secret_basic"),
}
GENERIC = "<any(mitid,ftn,google):kind>"

bp = Blueprint("emulator", __name__)


class EmulatorRefused(RuntimeError):
    """The emulator only runs for development, on a loopback address."""


def state() -> EmulatorState:
    return current_app.extensions["emulator"]


# --- URLs -------------------------------------------------------------------------------------

def prefix(kind: str, tenant: str | None = None) -> str:
    if kind == "microsoft":
        return f"{state().base_url}/microsoft/{tenant or 'common'}"
    return f"{state().base_url}/{kind}"


def issuer(kind: str, tenant: str | None = None) -> str:
    if kind == "microsoft":
        tenant = tenant or "common"
        tid = "{tenantid}" if tenant in MICROSOFT_MULTI_TENANT else tenant
        return f"{state().base_url}/microsoft/{tid}/v2.0"
    return f"{state().base_url}/{kind}"


def endpoints(kind: str, tenant: str | None = None) -> dict[str, str]:
    base = prefix(kind, tenant)
    if kind == "microsoft":
        return {"authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "jwks_uri": f"{base}/discovery/v2.0/keys",
                "userinfo_endpoint": f"{state().base_url}/microsoft/oidc/userinfo"}
    if kind == "facebook":
        return {"authorization_endpoint": f"{base}/dialog/oauth",
                "token_endpoint": f"{base}/oauth/access_token",
                "userinfo_endpoint": f"{base}/me"}
    return {"authorization_endpoint": f"{base}/authorize", "token_endpoint": f"{base}/token",
            "jwks_uri": f"{base}/jwks", "userinfo_endpoint": f"{base}/userinfo"}


def oauth_error(error: str, description: str, status: int = 400) -> tuple[Response, int]:
    return jsonify(error=error, error_description=description), status


# --- discovery and keys -----------------------------------------------------------------------

@bp.get("/<any(mitid,ftn,google,facebook):kind>/.well-known/openid-configuration")
@bp.get("/microsoft/.well-known/openid-configuration", defaults={"kind": "microsoft"})
@bp.get("/microsoft/<tenant>/v2.0/.well-known/openid-configuration",
        defaults={"kind": "microsoft"})
def discovery(kind: str, tenant: str | None = None) -> Response:
    urls = endpoints(kind, tenant)
    dialect = request.args.get("dialect")
    if dialect in DIALECTS.get(kind, ()):
        urls["authorization_endpoint"] += "?" + urlencode({"dialect": dialect})
    document: dict[str, Any] = {
        "issuer": issuer(kind, tenant),
        **urls,
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": list(AUTH_METHODS[kind]),
    }
    if kind != "facebook":
        alg = "ES256" if kind == "mitid" else "RS256"
        document.update(subject_types_supported=["pairwise" if kind in ("mitid", "microsoft")
                                                 else "public"],
                        id_token_signing_alg_values_supported=[alg])
    if kind == "ftn":
        document.update(
            request_parameter_supported=True,
            request_object_signing_alg_values_supported=["RS256"],
            token_endpoint_auth_signing_alg_values_supported=["RS256"],
            id_token_encryption_alg_values_supported=["RSA-OAEP"],
            id_token_encryption_enc_values_supported=["A128CBC-HS256"],
            userinfo_encryption_alg_values_supported=["RSA-OAEP"],
            userinfo_encryption_enc_values_supported=["A128CBC-HS256"],
            acr_values_supported=["http://ftn.ficora.fi/2017/loa2",
                                  "http://ftn.ficora.fi/2017/loa3"],
        )
    return jsonify(document)


@bp.get(f"/{GENERIC}/jwks")
@bp.get("/microsoft/<tenant>/discovery/v2.0/keys", defaults={"kind": "microsoft"})
def jwks(kind: str, tenant: str | None = None) -> Response:
    return jsonify(state().public_jwks(kind))


# --- the login page ---------------------------------------------------------------------------

def _requested_loa(kind: str, params: dict[str, str]) -> str | None:
    if "idp_params" in params:
        try:
            return str(json.loads(params["idp_params"])["mitid"]["loa_value"])
        except (ValueError, KeyError, TypeError):
            return None
    return params.get("acr_values")


def _ftn_request_object(args: dict[str, str]) -> dict[str, str]:
    """FTN takes only the signed request object; parameters outside it are ignored."""
    client_id, raw = args.get("client_id", ""), args.get("request")
    if not raw:
        raise ValueError("FTN needs a signed request object (the 'request' parameter)")
    keys = client_key_set(state(), "ftn", client_id)
    if keys is None:
        raise ValueError(f"client {client_id!r} has not registered its keys")
    try:
        claims = jwt.decode(raw, keys, algorithms=["RS256"]).claims
    except (JoseError, ValueError) as error:
        raise ValueError(f"the request object does not verify ({type(error).__name__})") from None
    if claims.get("iss") != client_id or claims.get("client_id") != client_id:
        raise ValueError("the request object was not made by this client")
    if claims.get("aud") != issuer("ftn"):
        raise ValueError("the request object is meant for another issuer")
    if not isinstance(claims.get("exp"), int) or claims["exp"] < time.time():
        raise ValueError("the request object has expired")
    return {k: str(v) for k, v in claims.items()}


def _parse_request(kind: str, tenant: str | None) -> AuthRequest:
    params = dict(request.args)
    if kind == "ftn":
        params = _ftn_request_object(params)
    client_id, redirect_uri = params.get("client_id", ""), params.get("redirect_uri", "")
    if params.get("response_type") != "code":
        raise ValueError("response_type must be 'code'")
    if not client_id or urlsplit(redirect_uri).scheme not in ("http", "https"):
        raise ValueError("client_id and an http(s) redirect_uri are required")
    client = state().client(kind, client_id)
    if client and client.redirect_uris and redirect_uri not in client.redirect_uris:
        raise ValueError("redirect_uri is not registered for this client")
    scopes = set(params.get("scope", "").split())
    if kind != "facebook" and "openid" not in scopes:
        raise ValueError("scope must include 'openid'")
    method = params.get("code_challenge_method")
    if params.get("code_challenge") and method != "S256":
        raise ValueError("only code_challenge_method=S256 is supported")
    dialect = request.args.get("dialect") or DEFAULT_DIALECTS.get(kind, "")
    if kind in DIALECTS and dialect not in DIALECTS[kind]:
        raise ValueError(f"unknown dialect {dialect!r}")
    return AuthRequest(
        kind=kind, tenant=tenant, dialect=dialect, client_id=client_id,
        redirect_uri=redirect_uri, scopes=scopes, state=params.get("state"),
        nonce=params.get("nonce"), code_challenge=params.get("code_challenge"),
        code_challenge_method=method, loa_requested=_requested_loa(kind, params),
    )


def _back_to_client(auth: AuthRequest, values: dict[str, str]) -> Response:
    if auth.state is not None:
        values["state"] = auth.state
    separator = "&" if "?" in auth.redirect_uri else "?"
    return redirect(f"{auth.redirect_uri}{separator}{urlencode(values)}", code=302)


@bp.route(f"/{GENERIC}/authorize", methods=["GET", "POST"])
@bp.route("/microsoft/<tenant>/oauth2/v2.0/authorize", methods=["GET", "POST"],
          defaults={"kind": "microsoft"})
@bp.route("/facebook/dialog/oauth", methods=["GET", "POST"], defaults={"kind": "facebook"})
def authorize(kind: str, tenant: str | None = None) -> Any:
    if request.method == "POST":
        return _decide(kind)
    try:
        auth = _parse_request(kind, tenant)
    except ValueError as error:
        return error_page(str(error)), 400
    request_id = state().park(auth)
    return login_page(kind, auth, request_id, PERSONAS[kind], request.base_url)


def _decide(kind: str) -> Any:
    auth = state().take_pending(request.form.get("request_id", ""))
    if auth is None or auth.kind != kind:
        return error_page("This login page has expired; start again."), 400
    if request.form.get("action") != "consent":
        return _back_to_client(auth, {"error": "access_denied",
                                      "error_description": "the user cancelled"})
    persona = find_persona(kind, request.form.get("persona", ""))
    if persona is None:
        return error_page("Pick a test person."), 400
    persona = persona.with_changes(dict(request.form))
    code = state().issue_code(auth, persona)
    return _back_to_client(auth, {"code": code})


# --- the token endpoint -----------------------------------------------------------------------

def _params() -> Any:
    """Token requests are POSTed; Facebook also takes the exchange as a GET."""
    return request.args if request.method == "GET" else request.form


def _client_credentials(kind: str, token_url: str) -> tuple[str, str | None]:
    """Authenticates the client the way this upstream demands; returns (client_id, secret)."""
    form = _params()
    if form.get("client_assertion_type") == JWT_BEARER:
        method = "private_key_jwt"
    elif request.authorization and request.authorization.type == "basic":
        method = "client_secret_basic"
    else:
        method = "client_secret_post"
    if method not in AUTH_METHODS[kind]:
        raise PermissionError(f"{kind} requires {' or '.join(AUTH_METHODS[kind])}")
    if method == "private_key_jwt":
        return _verify_client_assertion(kind, form.get("client_assertion", ""), token_url), None
    if method == "client_secret_basic":
        auth = request.authorization
        client_id = unquote_plus(auth.username or "")
        secret = unquote_plus(auth.password or "")
    else:
        client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
    client = state().client(kind, client_id)
    expected = client.secret if client else None
    if not client_id or not secret or (
        expected is not None and not hmac.compare_digest(expected.encode(), secret.encode())
    ):
        raise PermissionError("client authentication failed")
    return client_id, secret


def _verify_client_assertion(kind: str, assertion: str, token_url: str) -> str:
    try:
        unverified = jws.extract_compact(assertion.encode())
        header = dict(unverified.protected)
        client_id = str(json.loads(unverified.payload).get("iss", ""))
        keys = client_key_set(state(), kind, client_id)
        if keys is None or not header.get("kid"):
            raise PermissionError("unknown client, or the assertion has no kid")
        claims = jwt.decode(assertion, keys, algorithms=["RS256"]).claims
    except (JoseError, ValueError) as error:
        raise PermissionError(f"client assertion rejected ({type(error).__name__})") from None
    audience = claims.get("aud")
    audiences = [audience] if isinstance(audience, str) else list(audience or [])
    if claims.get("sub") != client_id or not ({token_url, issuer(kind)} & set(audiences)):
        raise PermissionError("client assertion has the wrong sub or aud")
    if not isinstance(claims.get("exp"), int) or claims["exp"] < time.time():
        raise PermissionError("client assertion has expired")
    if not claims.get("jti") or not state().first_use_of_assertion(str(claims["jti"])):
        raise PermissionError("client assertion has no jti or was used before")
    return client_id


@bp.post(f"/{GENERIC}/token")
@bp.post("/microsoft/<tenant>/oauth2/v2.0/token", defaults={"kind": "microsoft"})
@bp.route("/facebook/oauth/access_token", methods=["GET", "POST"],
          defaults={"kind": "facebook"})
def token(kind: str, tenant: str | None = None) -> Any:
    try:
        client_id, secret = _client_credentials(kind, request.base_url)
    except PermissionError as error:
        return oauth_error("invalid_client", str(error), 401)
    if _params().get("grant_type", "authorization_code") != "authorization_code":
        return oauth_error("unsupported_grant_type", "only authorization_code")
    grant, why = state().redeem_code(_params().get("code", ""))
    if grant is None:
        return oauth_error("invalid_grant", why)
    auth = grant.request
    if auth.kind != kind or auth.client_id != client_id:
        return oauth_error("invalid_grant", "the code was issued to another client")
    if _params().get("redirect_uri") != auth.redirect_uri:
        return oauth_error("invalid_grant", "redirect_uri differs from the authorization")
    if auth.code_challenge:
        verifier = _params().get("code_verifier", "")
        if not verifier or create_s256_code_challenge(verifier) != auth.code_challenge:
            return oauth_error("invalid_grant", "PKCE verification failed")
    grant.client_secret = secret
    access_token = state().issue_access_token(grant)
    if kind == "facebook":
        return jsonify(access_token=access_token, token_type="bearer", expires_in=5183944)
    identity = identity_claims(kind, auth.dialect, grant.persona, client_id, auth.scopes)
    token_issuer = issuer(kind, grant.persona.tenant_id if kind == "microsoft" else None)
    try:
        raw_id_token = id_token(state(), grant, identity, token_issuer)
    except LookupError as error:
        return oauth_error("invalid_client", str(error))
    return jsonify(access_token=access_token, token_type="Bearer", expires_in=3600,
                   id_token=raw_id_token, scope=" ".join(sorted(auth.scopes)))


# --- userinfo and the Graph API ---------------------------------------------------------------

def _bearer() -> str:
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.args.get("access_token", "")


@bp.get(f"/{GENERIC}/userinfo")
@bp.get("/microsoft/oidc/userinfo", defaults={"kind": "microsoft"})
def userinfo(kind: str) -> Any:
    grant = state().access_tokens.get(_bearer())
    if grant is None or grant.request.kind != kind:
        return oauth_error("invalid_token", "unknown or revoked access token", 401)
    auth = grant.request
    claims = identity_claims(kind, auth.dialect, grant.persona, auth.client_id, auth.scopes)
    if kind != "ftn":
        return jsonify(claims)
    now = int(time.time())
    signed = sign(state(), kind, {**claims, "iss": issuer(kind), "aud": auth.client_id,
                                  "iat": now}, None)
    body = encrypt_for_client(state(), auth.client_id, signed)
    return Response(body, content_type="application/jwt")


@bp.get("/facebook/me")
def graph_me() -> Any:
    access_token = _bearer()
    grant = state().access_tokens.get(access_token)
    if grant is None or grant.request.kind != "facebook":
        return jsonify(error={"message": "Invalid OAuth access token.", "type": "OAuthException",
                              "code": 190}), 400
    proof = request.args.get("appsecret_proof")
    if proof is not None:
        expected = hmac.new((grant.client_secret or "").encode(), access_token.encode(),
                            hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, proof):
            return jsonify(error={"message": "Invalid appsecret_proof", "code": 100}), 400
    auth = grant.request
    profile = identity_claims("facebook", "", grant.persona, auth.client_id, auth.scopes)
    fields = set(request.args.get("fields", "id,name").split(",")) | {"id"}
    if "email" not in auth.scopes:
        fields.discard("email")
    return jsonify({k: v for k, v in profile.items() if k in fields})


# --- development hooks ------------------------------------------------------------------------

@bp.post("/<any(mitid,ftn,microsoft,google,facebook):kind>/register-client")
def register_client(kind: str) -> Any:
    """Dev registration: a relying party's public keys (FTN) and optionally its secret."""
    data = request.get_json(silent=True) or {}
    if not isinstance(data.get("client_id"), str) or not data["client_id"]:
        return oauth_error("invalid_client_metadata", "client_id is required")
    state().register_client(kind, data["client_id"], secret=data.get("client_secret"),
                            jwks=data.get("jwks"), jwks_uri=data.get("jwks_uri"),
                            redirect_uris=data.get("redirect_uris"))
    return jsonify(client_id=data["client_id"]), 201


@bp.post("/<any(mitid,ftn,microsoft,google):kind>/_test/next-token-defect")
def next_token_defect(kind: str) -> Any:
    """The next ID token of this upstream comes out broken in the named way (tests)."""
    defect = (request.get_json(silent=True) or {}).get("defect")
    if defect is not None and defect not in DEFECTS:
        return oauth_error("invalid_request", f"defect must be one of {', '.join(DEFECTS)}")
    state().set_defect(kind, defect)
    return jsonify(kind=kind, defect=defect)


@bp.post("/<any(mitid,ftn,microsoft,google):kind>/_test/rotate-keys")
def rotate_keys(kind: str) -> Any:
    """A new signing key, published alongside the old ones (tests key rotation)."""
    return jsonify(kid=state().rotate(kind))


@bp.get("/")
def index() -> str:
    links = "".join(
        f'<li>{kind}: <a href="{url}">{url}</a></li>'
        for kind in KINDS
        for url in [f"{state().base_url}/{kind}/.well-known/openid-configuration"]
    )
    return ("<!doctype html><title>Upstream emulator</title><h1>Upstream emulator</h1>"
            f"<p>Development only.</p><ul>{links}</ul>")


def create_emulator(base_url: str) -> Flask:
    """The emulator app, answering as if it were served at ``base_url`` (loopback only)."""
    host = urlsplit(base_url).hostname or ""
    if host not in LOOPBACK_HOSTS and not host.endswith(".localhost"):
        raise EmulatorRefused(
            f"the upstream emulator is for development on this machine only, not {host!r}"
        )
    app = Flask(__name__)
    app.extensions["emulator"] = EmulatorState(base_url)
    app.register_blueprint(bp)
    return app
