"""Per-tenant signing keys: stored in the database, held in memory, rotated by the CLI.

A new key is published at once and signs only ``PUBLISHED_BEFORE_SIGNING`` later: a portal
that cached the JWKS (``JWKS_MAX_AGE``) and a broker process that has not reloaded its ring
yet (``RELOAD_SECONDS``) both know the key before any token carries its kid. Meanwhile the
previous key signs; then it retires, and stays in the JWKS until ``published_until`` (the
longest lifetime of anything it signed), so tokens issued before the rotation still verify.
A process reloads its key ring every ``RELOAD_SECONDS`` so a rotation made by
``broker keys rotate`` reaches every broker process without a restart.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from joserfc.jwk import ECKey, RSAKey
from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from ..config import TenantConfig
from ..models import SigningKey, utcnow

RELOAD_SECONDS = 60.0
JWKS_MAX_AGE = 300  # seconds a portal may cache /jwks (its Cache-Control)
PUBLISHED_BEFORE_SIGNING = timedelta(seconds=JWKS_MAX_AGE + RELOAD_SECONDS)
Key = RSAKey | ECKey


@dataclass(frozen=True)
class KeyRing:
    signing: Key
    signing_kid: str
    signing_alg: str
    public_jwks: dict[str, Any]


def generate_key(alg: str) -> tuple[str, dict[str, Any]]:
    """A new private key as a JWK; the kid is its RFC 7638 thumbprint."""
    key: Key = (
        ECKey.generate_key("P-256", private=True)
        if alg == "ES256"
        else RSAKey.generate_key(2048, private=True)
    )
    kid = key.thumbprint()
    return kid, key.as_dict(private=True)


def _import(jwk: dict[str, Any], kid: str) -> Key:
    cls = ECKey if jwk["kty"] == "EC" else RSAKey
    return cls.import_key({**jwk, "kid": kid})


def rotate(db: Session, tenant: TenantConfig, alg: str | None = None, *,
           now: datetime | None = None) -> SigningKey:
    """Make a new signing key, published now, signing from ``PUBLISHED_BEFORE_SIGNING`` on;
    the keys signing now retire then, and stay published for as long as what they signed
    lives."""
    now = now or utcnow()
    takes_over = now + PUBLISHED_BEFORE_SIGNING
    keep_published = timedelta(days=tenant.refresh_token_days) + timedelta(
        minutes=max(tenant.id_token_minutes, tenant.access_token_minutes)
    )
    for old in db.scalars(
        select(SigningKey).where(SigningKey.tenant == tenant.slug, SigningKey.retired_at.is_(None))
    ):
        old.retired_at = takes_over
        old.published_until = takes_over + keep_published
    kid, jwk = generate_key(alg or tenant.signing_alg)
    key = SigningKey(kid=kid, tenant=tenant.slug, alg=alg or tenant.signing_alg, private_jwk=jwk,
                     created_at=now)
    db.add(key)
    db.flush()
    return key


def signs_from(key: SigningKey) -> datetime:
    """When a key made by ``rotate`` starts to sign (a tenant's first key: at once)."""
    return key.created_at + PUBLISHED_BEFORE_SIGNING


def _signing_key(rows: list[SigningKey], now: datetime) -> SigningKey | None:
    """Of the published keys (newest first): the newest still signing that has been
    published long enough; before any has, the one published longest (a tenant's first
    key, which nobody can have cached an older JWKS without)."""
    signing = [row for row in rows if row.retired_at is None or row.retired_at > now]
    ready = [row for row in signing if row.created_at <= now - PUBLISHED_BEFORE_SIGNING]
    return ready[0] if ready else (signing[-1] if signing else None)


def _load(db: Session, tenant: TenantConfig) -> KeyRing:
    now = utcnow()
    rows = list(
        db.scalars(
            select(SigningKey)
            .where(
                SigningKey.tenant == tenant.slug,
                or_(SigningKey.retired_at.is_(None), SigningKey.published_until > now),
            )
            .order_by(SigningKey.created_at.desc())
        )
    )
    active = _signing_key(rows, now)
    if active is None:
        active = rotate(db, tenant)
        rows.insert(0, active)
    public = []
    for row in rows:
        jwk = _import(row.private_jwk, row.kid).as_dict(private=False)
        public.append({**jwk, "kid": row.kid, "alg": row.alg, "use": "sig"})
    return KeyRing(
        signing=_import(active.private_jwk, active.kid),
        signing_kid=active.kid,
        signing_alg=active.alg,
        public_jwks={"keys": public},
    )


class KeyStore:
    """Key rings for every tenant, loaded lazily and reloaded every RELOAD_SECONDS."""

    def __init__(self, sessions: sessionmaker[Session], tenants: dict[str, TenantConfig]) -> None:
        self._sessions = sessions
        self._tenants = tenants
        self._rings: dict[str, tuple[float, KeyRing]] = {}
        self._lock = threading.Lock()

    def ring(self, tenant: str) -> KeyRing:
        cached = self._rings.get(tenant)
        if cached and time.monotonic() - cached[0] < RELOAD_SECONDS:
            return cached[1]
        with self._lock:
            cached = self._rings.get(tenant)
            if cached and time.monotonic() - cached[0] < RELOAD_SECONDS:
                return cached[1]
            with self._sessions() as db, db.begin():
                ring = _load(db, self._tenants[tenant])
            self._rings[tenant] = (time.monotonic(), ring)
            return ring

    def cached(self, tenant: str) -> KeyRing:
        """The ring as loaded by ``ring()`` earlier in this request, without touching the
        database: a request that already holds a transaction must not open another (on
        SQLite that would wait for itself)."""
        cached = self._rings.get(tenant)
        return cached[1] if cached else self.ring(tenant)

    def forget(self, tenant: str | None = None) -> None:
        """Drop cached rings (after a rotation in this process)."""
        if tenant is None:
            self._rings.clear()
        else:
            self._rings.pop(tenant, None)
