"""Email activation of a new account: a 6-digit code or a single-use signed link (per tenant).

Steps: ``issue_activation`` (at registration and on resend) -> ``activate_with_code`` or
``activate_with_link`` -> when the tenant asks for the password only after activation (seed
003), ``start_password_creation`` -> ``create_password``.

Security argument:

- Codes are short, so they are stored as keyed HMACs and guarded twice: the verification row's
  ``attempts`` column is incremented atomically before the code is compared (a code dies after
  ``activation_max_tries``), and an attempt counter keyed by an HMAC of the email locks further
  guesses for a while. Unknown addresses take the same counter and get the same answers, so the
  code form does not tell whether an address waits for activation. A resend does not reset that
  counter, so asking for new codes buys no extra guesses.
- Links carry a random 256-bit token, signed with itsdangerous together with the verification
  id (so an expired link is told apart from a forged one without a query); the row keeps only
  the token's SHA-256. Spending a code or link is one conditional UPDATE: it works once even
  when submitted twice at the same moment.
- A new code or link spends every earlier one.
- Pre-registration takeover: anyone may register an address they do not own, choosing the
  password, and wait for the owner to activate it. So a password chosen before the mailbox was
  proven survives activation only when the browser that activates is the browser that
  registered (the registration sets a random cookie; its SHA-256 is kept on the first
  activation ``Verification`` as ``registrant``). Any other activation by proof of the mailbox
  (another browser, a second registration's code, an upstream login's email code) discards
  the stored password and the person who proved the mailbox chooses one
  (``start_password_creation``). The owner loses nothing; the squatter loses everything.
- The password-creation step is bound to the browser that activated: a cookie set on the
  activation response, whose SHA-256 the step keeps (the step URL alone is not a bearer secret).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from broker import audit
from broker.attempts import record_failure, record_success, reserve_attempt
from broker.config import TenantConfig
from broker.messaging.compose import send_email
from broker.models import Flow, User, Verification, utcnow
from broker.passwords import hash_password
from broker.security import (
    digests_match,
    keyed_hmac,
    new_numeric_code,
    new_token,
    sha256_hex,
)
from policies.lockout import LockoutRule
from policies.password import PasswordCheck, check_password

from .password_login import normalise_email

PURPOSE = "activation"
CREATE_PASSWORD_FLOW = "create_password"
CREATE_PASSWORD_MINUTES = 30

Outcome = Literal["activated", "invalid", "expired", "locked"]


@dataclass(frozen=True)
class ActivationResult:
    """``activated`` carries the user and the portal request (authorize flow id) that was
    carried from registration; ``locked`` carries when guessing may resume."""

    outcome: Outcome
    user: User | None = None
    authorize_flow_id: str | None = None
    locked_until: datetime | None = None


def activation_rule(tenant: TenantConfig) -> LockoutRule:
    """``activation_max_tries`` wrong codes lock the address for the tenant's lock time."""
    return LockoutRule(
        max_attempts=tenant.activation_max_tries,
        lock_minutes=tenant.lockout.lock_minutes,
        growth_factor=tenant.lockout.growth_factor,
        max_lock_minutes=tenant.lockout.max_lock_minutes,
    )


def attempt_key(hmac_key: str, tenant: str, email: str) -> str:
    """The counter of code guesses at one address; keyed so the table holds no emails."""
    digest = keyed_hmac(hmac_key, f"{tenant}\x00{email}", purpose="activation-email")
    return f"activation:{digest}"


def _code_digest(hmac_key: str, user_id: int, code: str) -> str:
    return keyed_hmac(hmac_key, code, purpose=f"activation:{user_id}")


def _serializer(secret_key: str, tenant: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret_key, salt=f"activation-link:{tenant}")


def activation_url(public_url: str, tenant: str, signed: str) -> str:
    return f"{public_url.rstrip('/')}/t/{tenant}/activate/{signed}"


def _spend_earlier(db: Session, user_id: int, now: datetime) -> None:
    db.execute(
        update(Verification)
        .where(
            Verification.user_id == user_id,
            Verification.purpose == PURPOSE,
            Verification.consumed_at.is_(None),
        )
        .values(consumed_at=now)
        .execution_options(synchronize_session=False)
    )


def issue_activation(
    db: Session,
    tenant: TenantConfig,
    user: User,
    *,
    hmac_key: str,
    secret_key: str,
    public_url: str,
    authorize_flow_id: str | None = None,
    registrant_digest: str | None = None,
    now: datetime | None = None,
) -> Verification:
    """Spend earlier codes/links of ``user`` and email a fresh one, in the caller's transaction.

    ``registrant_digest``: at registration, the SHA-256 of the registering browser's cookie
    (see the module docstring); only the first activation of a user carries one."""
    now = now or utcnow()
    _spend_earlier(db, user.id, now)
    locale = user.locale or tenant.default_locale
    payload: dict[str, str] = {}
    if authorize_flow_id:
        payload["flow"] = authorize_flow_id
    if registrant_digest:
        payload["registrant"] = registrant_digest
    verification = Verification(
        tenant=tenant.slug,
        user_id=user.id,
        purpose=PURPOSE,
        method=tenant.activation,
        target=user.email or "",
        secret_digest="",
        payload=payload,
        created_at=now,
        last_sent_at=now,
    )
    if tenant.activation == "code":
        code = new_numeric_code()
        verification.secret_digest = _code_digest(hmac_key, user.id, code)
        verification.max_attempts = tenant.activation_max_tries
        verification.expires_at = now + timedelta(minutes=tenant.activation_code_ttl_minutes)
        db.add(verification)
        send_email(db, tenant, user.email or "", "activation_code", locale,
                   code=code, minutes=tenant.activation_code_ttl_minutes)
        return verification
    token = new_token()
    verification.secret_digest = sha256_hex(token)
    verification.max_attempts = 1
    verification.expires_at = now + timedelta(hours=tenant.activation_link_ttl_hours)
    db.add(verification)
    db.flush()  # the id goes into the signed link
    signed = _serializer(secret_key, tenant.slug).dumps([verification.id, token])
    send_email(db, tenant, user.email or "", "activation_link", locale,
               link=activation_url(public_url, tenant.slug, signed),
               hours=tenant.activation_link_ttl_hours)
    return verification


def resend_activation(
    db: Session,
    tenant: TenantConfig,
    email: str,
    *,
    hmac_key: str,
    secret_key: str,
    public_url: str,
    now: datetime | None = None,
) -> bool:
    """Send a new code or link to a pending account, at most once per cooldown.

    Returns whether one was sent, for tests and logs only: the page says the same either way.
    Runs in the caller's transaction. The cooldown is taken with a conditional UPDATE so two
    simultaneous requests send one email.
    """
    now = now or utcnow()
    user = db.scalar(
        select(User).where(
            User.tenant == tenant.slug,
            User.email == normalise_email(email),
            User.status == "pending",
        )
    )
    if user is None:
        return False
    latest = db.scalar(
        select(Verification)
        .where(Verification.user_id == user.id, Verification.purpose == PURPOSE)
        .order_by(Verification.id.desc())
        .limit(1)
    )
    flow_id = None
    if latest is not None:
        cutoff = now - timedelta(seconds=tenant.resend_cooldown_seconds)
        won = db.execute(
            update(Verification)
            .where(Verification.id == latest.id, Verification.last_sent_at <= cutoff)
            .values(last_sent_at=now)
            .returning(Verification.id)
            .execution_options(synchronize_session=False)
        ).scalar()
        if won is None:
            return False
        flow_id = latest.payload.get("flow")
    issue_activation(db, tenant, user, hmac_key=hmac_key, secret_key=secret_key,
                     public_url=public_url, authorize_flow_id=flow_id, now=now)
    return True


def activate_with_code(
    db: Session,
    tenant: TenantConfig,
    email: str,
    code: str,
    *,
    hmac_key: str,
    source_address: str | None,
    browser_token: str | None = None,
    now: datetime | None = None,
) -> ActivationResult:
    """Check one code for ``email``; commits (the attempt counts even if the request dies).

    ``browser_token``: the registration cookie of this browser, if any (see the docstring)."""
    now = now or utcnow()
    email = normalise_email(email)
    code = "".join(code.split())
    key = attempt_key(hmac_key, tenant.slug, email)
    rule = activation_rule(tenant)
    reservation = reserve_attempt(db, key, rule, now)
    db.commit()
    if not reservation.allowed:
        return ActivationResult("locked", locked_until=reservation.locked_until)

    user = db.scalar(
        select(User).where(
            User.tenant == tenant.slug, User.email == email, User.status == "pending"
        )
    )
    verification = None if user is None else db.scalar(
        select(Verification)
        .where(
            Verification.user_id == user.id,
            Verification.purpose == PURPOSE,
            Verification.method == "code",
            Verification.consumed_at.is_(None),
        )
        .order_by(Verification.id.desc())
        .limit(1)
    )
    counted = None
    if verification is not None:
        counted = db.execute(
            update(Verification)
            .where(
                Verification.id == verification.id,
                Verification.consumed_at.is_(None),
                Verification.expires_at > now,
                Verification.attempts < Verification.max_attempts,
            )
            .values(attempts=Verification.attempts + 1)
            .returning(Verification.attempts)
            .execution_options(synchronize_session=False)
        ).scalar()
    right = (
        user is not None
        and verification is not None
        and counted is not None
        and digests_match(_code_digest(hmac_key, user.id, code), verification.secret_digest)
    )
    if not right:
        locked_until = record_failure(db, key, rule, now)
        db.commit()
        if locked_until is not None:
            return ActivationResult("locked", locked_until=locked_until)
        return ActivationResult("invalid")
    assert user is not None and verification is not None
    if not _spend(db, verification.id, now):
        db.rollback()
        return ActivationResult("invalid")
    record_success(db, key)
    _activate(db, tenant, user, source_address, method="code", now=now,
              keep_password=registered_in_this_browser(db, user.id, browser_token))
    db.commit()
    return ActivationResult("activated", user=user,
                            authorize_flow_id=verification.payload.get("flow"))


def _load_link(
    db: Session, tenant: TenantConfig, signed: str, secret_key: str, now: datetime
) -> Verification | Outcome:
    try:
        verification_id, token = _serializer(secret_key, tenant.slug).loads(
            signed, max_age=tenant.activation_link_ttl_hours * 3600
        )
    except SignatureExpired:
        return "expired"
    except (BadSignature, TypeError, ValueError):
        return "invalid"
    verification = db.get(Verification, verification_id) if isinstance(
        verification_id, int) else None
    if (
        verification is None
        or verification.tenant != tenant.slug
        or verification.purpose != PURPOSE
        or verification.method != "link"
        or not isinstance(token, str)
        or not digests_match(sha256_hex(token), verification.secret_digest)
        or verification.consumed_at is not None
    ):
        return "invalid"
    if verification.expires_at <= now:
        return "expired"
    return verification


def activation_link_status(
    db: Session, tenant: TenantConfig, signed: str, *, secret_key: str,
    now: datetime | None = None,
) -> Outcome | Literal["valid"]:
    """For the confirm page: ``valid``, ``expired`` or ``invalid``; does not spend the link."""
    found = _load_link(db, tenant, signed, secret_key, now or utcnow())
    return found if isinstance(found, str) else "valid"


def activate_with_link(
    db: Session,
    tenant: TenantConfig,
    signed: str,
    *,
    secret_key: str,
    source_address: str | None,
    browser_token: str | None = None,
    now: datetime | None = None,
) -> ActivationResult:
    """Spend the link and activate its account; commits. Single use. ``browser_token`` as
    for ``activate_with_code``."""
    now = now or utcnow()
    found = _load_link(db, tenant, signed, secret_key, now)
    if isinstance(found, str):
        return ActivationResult(found)  # type: ignore[arg-type]
    if not _spend(db, found.id, now):
        db.rollback()
        return ActivationResult("invalid")
    user = db.get(User, found.user_id) if found.user_id else None
    if user is None or user.status != "pending":
        db.rollback()
        return ActivationResult("invalid")
    _activate(db, tenant, user, source_address, method="link", now=now,
              keep_password=registered_in_this_browser(db, user.id, browser_token))
    db.commit()
    return ActivationResult("activated", user=user, authorize_flow_id=found.payload.get("flow"))


def _spend(db: Session, verification_id: int, now: datetime) -> bool:
    spent = db.execute(
        update(Verification)
        .where(Verification.id == verification_id, Verification.consumed_at.is_(None))
        .values(consumed_at=now)
        .returning(Verification.id)
        .execution_options(synchronize_session=False)
    ).scalar()
    return spent is not None


def registered_in_this_browser(db: Session, user_id: int, browser_token: str | None) -> bool:
    """Does ``browser_token`` belong to the browser whose registration created ``user_id``?"""
    if not browser_token:
        return False
    payload = db.scalar(
        select(Verification.payload)
        .where(Verification.user_id == user_id, Verification.purpose == PURPOSE)
        .order_by(Verification.id)
        .limit(1)
    )
    registrant = payload.get("registrant") if isinstance(payload, dict) else None
    return digests_match(registrant, sha256_hex(browser_token))


def activate_by_mailbox_proof(
    db: Session, tenant: TenantConfig, user: User, source_address: str | None, *,
    method: str, keep_password: bool = False, now: datetime | None = None,
) -> None:
    """Activate a pending ``user`` whose address was just proven; caller's transaction.

    A password set before the proof is discarded unless ``keep_password`` (the registering
    browser proved it): whoever registered may not own the mailbox."""
    _activate(db, tenant, user, source_address, method=method, now=now or utcnow(),
              keep_password=keep_password)


def _activate(
    db: Session, tenant: TenantConfig, user: User, source_address: str | None, *,
    method: str, now: datetime, keep_password: bool,
) -> None:
    user.status = "active"
    user.email_verified = True
    _spend_earlier(db, user.id, now)
    if user.password_hash is not None and not keep_password:
        user.password_hash = None
        user.password_changed_at = None
        audit.record(
            db, "password_discarded", tenant=tenant.slug, actor_type="user", actor_id=user.id,
            target_user_id=user.id, source_address=source_address,
            reason="set before the mailbox was proven, in another browser", method=method,
        )
    audit.record(
        db, "account_activated", tenant=tenant.slug, actor_type="user", actor_id=user.id,
        target_user_id=user.id, source_address=source_address, method=method,
    )


# --- Seed 003: the password is created after activation ---------------------------------


def start_password_creation(
    db: Session, tenant: TenantConfig, user: User, *, authorize_flow_id: str | None,
    browser_token: str, now: datetime | None = None,
) -> Flow:
    """A short-lived server-side step that lets this browser choose the first password.

    ``browser_token`` goes into a cookie of the activation response; the step keeps its
    SHA-256 and serves only a request that carries it."""
    now = now or utcnow()
    flow = Flow(
        id=new_token(24),
        tenant=tenant.slug,
        kind=CREATE_PASSWORD_FLOW,
        state="choose",
        data={"user_id": user.id, "authorize_flow": authorize_flow_id,
              "browser": sha256_hex(browser_token)},
        created_at=now,
        expires_at=now + timedelta(minutes=CREATE_PASSWORD_MINUTES),
    )
    db.add(flow)
    return flow


def password_creation_step(
    db: Session, tenant: TenantConfig, step_id: str, browser_token: str | None,
    now: datetime | None = None,
) -> tuple[Flow, User] | None:
    """The live step and its user, or None (expired, used, unknown or another browser's)."""
    flow = db.get(Flow, step_id) if step_id else None
    if (
        flow is None
        or flow.tenant != tenant.slug
        or flow.kind != CREATE_PASSWORD_FLOW
        or flow.state != "choose"
        or flow.expires_at <= (now or utcnow())
        or not browser_token
        or not digests_match(flow.data.get("browser"), sha256_hex(browser_token))
    ):
        return None
    user = db.get(User, flow.data.get("user_id"))
    if user is None or user.status != "active" or user.password_hash is not None:
        return None
    return flow, user


@dataclass(frozen=True)
class CreatePasswordResult:
    check: PasswordCheck | None
    user: User | None = None
    authorize_flow_id: str | None = None

    @property
    def ok(self) -> bool:
        return self.user is not None


def create_password(
    db: Session,
    tenant: TenantConfig,
    step_id: str,
    password: str,
    confirmation: str,
    *,
    source_address: str | None,
    browser_token: str | None,
    now: datetime | None = None,
) -> CreatePasswordResult | None:
    """Set the first password; None when the step is gone. Commits on success."""
    now = now or utcnow()
    step = password_creation_step(db, tenant, step_id, browser_token, now)
    if step is None:
        return None
    flow, user = step
    check = check_password(tenant.password_policy, password, confirmation=confirmation,
                           user_inputs=(user.name, user.email or ""))
    if not check.ok:
        return CreatePasswordResult(check)
    taken = db.execute(
        update(Flow)
        .where(Flow.id == flow.id, Flow.state == "choose")
        .values(state="done")
        .returning(Flow.id)
        .execution_options(synchronize_session=False)
    ).scalar()
    if taken is None:
        db.rollback()
        return None
    user.password_hash = hash_password(tenant, password)
    user.password_changed_at = now
    audit.record(db, "password_created", tenant=tenant.slug, actor_type="user",
                 actor_id=user.id, target_user_id=user.id, source_address=source_address)
    db.commit()
    return CreatePasswordResult(check, user=user, authorize_flow_id=flow.data.get("authorize_flow"))
