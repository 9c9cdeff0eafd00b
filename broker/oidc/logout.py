"""Ending a login session: revoke it and its tokens, and tell portals over the back channel.

Back-channel logout tokens (OpenID Connect Back-Channel Logout 1.0) are POSTed from a short-
lived background thread with a small timeout, so a slow portal never holds up the user.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

import requests
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy import event, select, update
from sqlalchemy.orm import Session, sessionmaker

from ..login_session import ENDED_SESSIONS
from ..models import LoginSession, Token, User, utcnow
from ..security import new_token
from ..state import db
from .grants import session_id_claim

if TYPE_CHECKING:
    from flask import Flask

    from .server import TenantServer

log = logging.getLogger(__name__)
BACKCHANNEL_TIMEOUT_SECONDS = 5
LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"


def id_token_hint_claims(server: TenantServer, id_token: str) -> dict[str, Any] | None:
    """The claims of an id_token_hint we signed (its expiry is not checked, as the spec says)."""
    try:
        public = server.keys.cached(server.tenant.slug).public_jwks
        token = jwt.decode(id_token, KeySet.import_key_set(public))
    except (JoseError, ValueError):
        return None
    if token.claims.get("iss") != server.issuer:
        return None
    return dict(token.claims)


def audience_of(claims: dict[str, Any]) -> str | None:
    aud = claims.get("aud")
    return aud[0] if isinstance(aud, list) and aud else aud if isinstance(aud, str) else None


def end_login_session(server: TenantServer, login: LoginSession) -> None:
    """Revoke the session and the tokens issued in it, then notify the portals that got them."""
    session = db()
    now = utcnow()
    login.revoked_at = now
    clients = set(
        session.scalars(
            select(Token.client_id).where(Token.login_session_id == login.id).distinct()
        )
    )
    session.execute(
        update(Token)
        .where(Token.login_session_id == login.id, Token.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    user = session.get(User, login.user_id)
    if user is not None:
        notify_portals(server, user.subject, login.id, clients)


def notify_after_commit(app: Flask, sessions: sessionmaker[Session],
                        servers: dict[str, TenantServer]) -> None:
    """Back-channel logout for the sessions a transaction ended in bulk
    (login_session.end_all_for_user), once it is committed: a portal told of a logout that was
    then rolled back would end a session that lives on. A rollback forgets them. Runs in the
    app's context (a support action may commit outside a request); a failure to tell is
    logged, never raised into the commit that already happened."""

    @event.listens_for(sessions, "after_commit")
    def _tell(db: Session) -> None:
        ended = db.info.pop(ENDED_SESSIONS, None)
        if not ended:
            return
        try:
            with app.app_context():
                for tenant, subject, session_id, clients in ended:
                    server = servers.get(tenant)
                    if server is not None:
                        server.keys.cached(tenant)
                        notify_portals(server, subject, session_id, clients)
        except Exception:  # noqa: BLE001 - the commit stands; the portals' sessions expire
            log.exception("back-channel logout after a commit failed")

    @event.listens_for(sessions, "after_rollback")
    def _forget(db: Session) -> None:
        db.info.pop(ENDED_SESSIONS, None)


def notify_portals(
    server: TenantServer, subject: str, login_session_id: int | None, client_ids: set[str]
) -> None:
    targets = []
    for client_id in client_ids:
        client = server.query_client(client_id)
        if client is None or not client.config.backchannel_logout_uri:
            continue
        targets.append((client.config.backchannel_logout_uri, logout_token(
            server, client_id, subject, login_session_id)))
    if targets:
        threading.Thread(target=_post_all, args=(targets,), daemon=True).start()


def logout_token(
    server: TenantServer, client_id: str, subject: str, login_session_id: int | None
) -> str:
    ring = server.keys.cached(server.tenant.slug)
    now = int(utcnow().timestamp())
    claims: dict[str, Any] = {
        "iss": server.issuer,
        "aud": client_id,
        "iat": now,
        "exp": now + 120,
        "jti": new_token(16),
        "sub": subject,
        "events": {LOGOUT_EVENT: {}},
    }
    sid = session_id_claim(login_session_id)
    if sid:
        claims["sid"] = sid
    header = {"alg": ring.signing_alg, "kid": ring.signing_kid, "typ": "logout+jwt"}
    return jwt.encode(header, claims, ring.signing, algorithms=[ring.signing_alg])


def _post_all(targets: list[tuple[str, str]]) -> None:
    for uri, token in targets:
        try:
            response = requests.post(
                uri, data={"logout_token": token}, timeout=BACKCHANNEL_TIMEOUT_SECONDS
            )
            if response.status_code >= 400:
                log.warning("back-channel logout refused", extra={"status": response.status_code})
        except requests.RequestException as error:
            log.warning("back-channel logout failed", extra={"error": type(error).__name__})
