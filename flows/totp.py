"""TOTP second factor (RFC 6238 via pyotp): enrolment, recovery codes, and the login step.

- Enrolment keeps the new secret server-side in a ``Flow`` (sealed, ``broker.crypto``) until
  the user proves with a code that the authenticator app has it; only then does it move to
  ``users.totp_secret`` (a sealed column) and ten recovery codes are made (shown once, stored as
  keyed HMACs).
- The login step accepts a code from the current time step or one step either side. The step
  used is stored in ``users.totp_last_step`` with a conditional UPDATE, so a code (or an
  earlier one) is refused the second time, even from two requests at once.
- A recovery code is spent by one conditional UPDATE: single use.
- Every guess takes an attempt from ``broker.attempts`` under ``totp:<user id>`` first, so the
  tenant's lockout bounds guessing across processes.
"""

from __future__ import annotations

import base64
import io
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import pyotp
import qrcode
import qrcode.image.svg
from sqlalchemy import delete, or_, update
from sqlalchemy.orm import Session

from broker import audit, crypto
from broker.attempts import (
    LoginAccount,
    record_failure,
    record_success,
    reserve_attempt,
    rule_from_config,
)
from broker.config import TenantConfig
from broker.models import Flow, RecoveryCode, User, utcnow
from broker.security import keyed_hmac, new_token, sha256_hex

RECOVERY_CODE_COUNT = 10
ENROL_FLOW = "totp_enrol"
ENROL_MINUTES = 15
VALID_WINDOW = 1  # one 30-second step either side, for clocks that drift


def totp_offered(tenant: TenantConfig) -> bool:
    return tenant.totp != "off"


def second_factor_needed(tenant: TenantConfig, user: User | LoginAccount) -> bool:
    """After a right password: does this login need the TOTP step (or enrolment)?"""
    if tenant.totp == "off":
        return False
    return bool(user.totp_secret) or tenant.totp == "required"


def attempt_key(user_id: int) -> str:
    return f"totp:{user_id}"


# --- Enrolment ---------------------------------------------------------------------------


def start_enrolment(
    db: Session, tenant: TenantConfig, user: User, *, purpose: str,
    data: dict | None = None, now: datetime | None = None,
) -> Flow:
    """Keep a fresh secret server-side while the user adds it to an app. ``purpose`` is
    ``profile`` or ``login``; ``data`` carries what the login step needs afterwards."""
    now = now or utcnow()
    flow_id = new_token(24)
    sealed = crypto.seal(pyotp.random_base32(), purpose=_enrolment_purpose(flow_id))
    flow = Flow(
        id=flow_id,
        tenant=tenant.slug,
        kind=ENROL_FLOW,
        state=purpose,
        data={**(data or {}), "user_id": user.id, "secret": sealed},
        created_at=now,
        expires_at=now + timedelta(minutes=ENROL_MINUTES),
    )
    db.add(flow)
    return flow


def _enrolment_purpose(flow_id: str) -> str:
    return f"totp-enrolment:{flow_id}"


def enrolment_secret(flow: Flow) -> str:
    """The new secret of an enrolment, to show (QR code) and to check the first code against."""
    return crypto.open_sealed(flow.data["secret"], purpose=_enrolment_purpose(flow.id))


def enrolment(
    db: Session, tenant: TenantConfig, flow_id: str, user_id: int, now: datetime | None = None
) -> Flow | None:
    """The live enrolment of ``user_id`` under ``flow_id``, or None."""
    flow = db.get(Flow, flow_id) if flow_id else None
    if (
        flow is None
        or flow.tenant != tenant.slug
        or flow.kind != ENROL_FLOW
        or flow.data.get("user_id") != user_id
        or flow.expires_at <= (now or utcnow())
    ):
        return None
    return flow


def provisioning_uri(tenant: TenantConfig, user: User, secret: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=user.email or user.subject,
                                              issuer_name=tenant.name)


def qr_code_data_uri(uri: str) -> str:
    """The otpauth URI as an SVG QR code in a data URI: rendered here, no JavaScript."""
    image = qrcode.make(uri, image_factory=qrcode.image.svg.SvgPathImage)
    buffer = io.BytesIO()
    image.save(buffer)
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode()


def _matching_step(secret: str, code: str, now: datetime) -> int | None:
    """The time step whose code equals ``code`` (within the window), else None."""
    code = "".join(code.split())
    # str.isdigit() is true for "²" and other non-ASCII digits, which compare_digest refuses.
    if len(code) != 6 or not (code.isascii() and code.isdigit()):
        return None
    totp = pyotp.TOTP(secret)
    current = totp.timecode(now)
    for step in range(current - VALID_WINDOW, current + VALID_WINDOW + 1):
        if secrets.compare_digest(totp.generate_otp(step), code):
            return step
    return None


def confirm_enrolment(
    db: Session,
    tenant: TenantConfig,
    user: User,
    flow: Flow,
    code: str,
    *,
    hmac_key: str,
    source_address: str | None,
    now: datetime | None = None,
) -> list[str] | None:
    """Turn TOTP on when ``code`` comes from the new secret; returns the recovery codes (to
    show once) or None for a wrong code or an enrolment already confirmed. Commits.

    The enrolment is spent by its DELETE: of two confirmations at once only the one whose
    DELETE removed the row goes on, so one set of recovery codes is made and shown."""
    now = now or utcnow()
    secret = enrolment_secret(flow)
    step = _matching_step(secret, code, now)
    if step is None:
        return None
    spent = db.execute(delete(Flow).where(Flow.id == flow.id, Flow.kind == ENROL_FLOW))
    if spent.rowcount != 1:  # type: ignore[attr-defined]
        db.rollback()
        return None
    user.totp_secret = secret
    user.totp_last_step = step
    codes = replace_recovery_codes(db, user, hmac_key=hmac_key)
    record_success(db, attempt_key(user.id))
    audit.record(db, "totp_enabled", tenant=tenant.slug, actor_type="user", actor_id=user.id,
                 target_user_id=user.id, source_address=source_address)
    db.commit()
    return codes


def _recovery_digest(hmac_key: str, user_id: int, code: str) -> str:
    normalised = "".join(ch for ch in code.lower() if ch.isalnum())
    return keyed_hmac(hmac_key, normalised, purpose=f"recovery:{user_id}")


def _new_recovery_code() -> str:
    """Ten characters from a 32-letter alphabet without look-alikes (50 bits), grouped."""
    alphabet = "abcdefghjkmnpqrstuvwxyz23456789"
    raw = "".join(secrets.choice(alphabet) for _ in range(10))
    return f"{raw[:5]}-{raw[5:]}"


def replace_recovery_codes(db: Session, user: User, *, hmac_key: str) -> list[str]:
    """Make ten new recovery codes; the old ones stop working. Caller's transaction."""
    db.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    codes = [_new_recovery_code() for _ in range(RECOVERY_CODE_COUNT)]
    for code in codes:
        db.add(RecoveryCode(user_id=user.id, code_hmac=_recovery_digest(hmac_key, user.id, code)))
    return codes


def disable_totp(
    db: Session, tenant: TenantConfig, user: User, *, source_address: str | None
) -> bool:
    """Turn TOTP off (not where the tenant requires it). Caller's transaction."""
    if tenant.totp == "required":
        return False
    user.totp_secret = None
    user.totp_last_step = None
    db.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    audit.record(db, "totp_disabled", tenant=tenant.slug, actor_type="user", actor_id=user.id,
                 target_user_id=user.id, source_address=source_address)
    return True


# --- The login step ----------------------------------------------------------------------

Outcome = Literal["ok", "invalid", "replayed", "locked"]


@dataclass(frozen=True)
class SecondFactorResult:
    outcome: Outcome
    locked_until: datetime | None = None
    used_recovery_code: bool = False

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


def verify_second_factor(
    db: Session,
    tenant: TenantConfig,
    user: User,
    code: str,
    *,
    hmac_key: str,
    source_address: str | None,
    now: datetime | None = None,
) -> SecondFactorResult:
    """Check a TOTP code or a recovery code for ``user``; commits (attempts always count)."""
    now = now or utcnow()
    key = attempt_key(user.id)
    rule = rule_from_config(tenant.lockout)
    reservation = reserve_attempt(db, key, rule, now)
    db.commit()
    if not reservation.allowed:
        return SecondFactorResult("locked", locked_until=reservation.locked_until)
    outcome: Outcome = "invalid"
    recovery = False
    step = _matching_step(user.totp_secret, code, now) if user.totp_secret else None
    if step is not None:
        taken = db.execute(
            update(User)
            .where(User.id == user.id,
                   or_(User.totp_last_step.is_(None), User.totp_last_step < step))
            .values(totp_last_step=step)
            .returning(User.id)
            .execution_options(synchronize_session=False)
        ).scalar()
        outcome = "ok" if taken is not None else "replayed"
    elif code.strip():
        spent = db.execute(
            update(RecoveryCode)
            .where(RecoveryCode.user_id == user.id,
                   RecoveryCode.code_hmac == _recovery_digest(hmac_key, user.id, code),
                   RecoveryCode.used_at.is_(None))
            .values(used_at=now)
            .returning(RecoveryCode.id)
            .execution_options(synchronize_session=False)
        ).scalar()
        if spent is not None:
            outcome, recovery = "ok", True
    if outcome == "ok":
        record_success(db, key)
        audit.record(db, "second_factor_passed", tenant=tenant.slug, actor_type="user",
                     actor_id=user.id, target_user_id=user.id, source_address=source_address,
                     method="recovery_code" if recovery else "totp")
        db.commit()
        return SecondFactorResult("ok", used_recovery_code=recovery)
    locked_until = record_failure(db, key, rule, now)
    audit.record(db, "second_factor_failed", tenant=tenant.slug, actor_type="user",
                 actor_id=user.id, target_user_id=user.id, source_address=source_address,
                 reason=outcome, outcome="refused")
    db.commit()
    if locked_until is not None:
        return SecondFactorResult("locked", locked_until=locked_until)
    return SecondFactorResult(outcome)


# --- The pending login between password and second factor -------------------------------

PENDING_FLOW = "pending_login"
PENDING_MINUTES = 10


def start_pending_login(
    db: Session, tenant: TenantConfig, user: User | LoginAccount, *,
    authorize_flow_id: str | None,
    remember: bool, amr: list[str] | None = None, acr: str = "low",
    then_link: dict[str, Any] | None = None, now: datetime | None = None,
) -> Flow:
    """The first factor was right (a password, or an upstream login that found an account);
    keep that fact, with its ``amr`` and ``acr``, server-side until the second factor is done.
    ``then_link``: the upstream identity to link once it is (flows.upstream_login)."""
    now = now or utcnow()
    flow = Flow(
        id=new_token(24),
        tenant=tenant.slug,
        kind=PENDING_FLOW,
        state="totp",
        data={"user_id": user.id, "authorize_flow": authorize_flow_id, "remember": remember,
              "amr": list(amr or ["pwd"]), "acr": acr, "then_link": then_link,
              "credential": _credential_mark(user)},
        created_at=now,
        expires_at=now + timedelta(minutes=PENDING_MINUTES),
    )
    db.add(flow)
    return flow


def pending_login(
    db: Session, tenant: TenantConfig, flow_id: str | None, now: datetime | None = None
) -> tuple[Flow, User] | None:
    flow = db.get(Flow, flow_id) if flow_id else None
    if (
        flow is None
        or flow.tenant != tenant.slug
        or flow.kind != PENDING_FLOW
        or flow.expires_at <= (now or utcnow())
    ):
        return None
    user = db.get(User, flow.data.get("user_id"))
    if user is None or user.status != "active":
        return None
    if flow.data.get("credential") != _credential_mark(user):
        return None  # the password changed since: the first factor given no longer holds
    return flow, user


def _credential_mark(user: User | LoginAccount) -> str:
    """Changes whenever the password does (a reset, a change, support's reset): a pending
    login started with the old password must die with it, or whoever knew the old one could
    finish it (and, where TOTP is required, enrol an authenticator of their own)."""
    return sha256_hex(f"credential\x00{user.password_hash or ''}")


def finish_pending_login(db: Session, flow: Flow) -> bool:
    """Spend the pending login (once); caller's transaction."""
    deleted = db.execute(delete(Flow).where(Flow.id == flow.id, Flow.kind == PENDING_FLOW))
    return bool(deleted.rowcount)  # type: ignore[attr-defined]
