"""Login through an upstream (MitID, FTN, Microsoft, Google, Facebook) and account linking.

A later login through a linked upstream goes straight in (seed 000). The first login is a small
state machine whose state lives in a ``Flow`` row of kind ``first_login``, bound to the browser:

- ``ask_email``: the upstream gave no email, or one it does not vouch for (Facebook, Microsoft
  without proof, MitID, FTN). The user types one and gets a 6-digit code.
- ``enter_code``: a code sent by email; ``code_for`` says what a right code proves:
  ``new_email`` (the typed address: create the user, or link to the account that has it),
  ``prove`` (control of an existing account's address) or ``profile_email`` (a changed address
  on the profile step).
- ``prove``: a local account has the upstream's verified email. We never link on an email claim
  alone: the user proves control by the account's password (counted against its lockout) or by a
  code sent to that address.
- ``profile``: after a MitID/FTN login at a tenant with national-id matching, the accounts are
  bound and the customer record's name, email and phone are shown, editable, before saving
  (seed 002); with no match the tenant's support guidance is shown instead.
- ``done``: the caller starts the login session with the upstream's amr and acr.

The national identity number never rests in plain text: the flow keeps it sealed (``broker.crypto``,
bound to the flow's id) until the user exists and ``bind_by_national_id`` runs, and the
linked identity keeps only its keyed HMAC. Codes are keyed HMACs bound to the flow, with a
limited number of tries each and a limited number of sends per flow (counted by a conditional
UPDATE of an attempt counter, not by rewriting the flow's JSON). Every guess also takes a try
from a counter keyed by an HMAC of (tenant, address), like activation codes: starting new
journeys buys no extra guesses at one mailbox.

Linking an existing account proves the mailbox or the password, never the second factor: when
the account has TOTP (or the tenant requires it) the ``done`` step says ``second_factor`` and
the caller runs the TOTP step before any session starts. A pending account whose address a code
proves is activated without the password someone set before the proof (``flows.activation``).

The caller owns the transaction (commit after each step), except ``submit_password`` which
commits the attempt reservation before the slow hash, like the password login.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from broker import audit, crypto
from broker.attempts import (
    record_failure,
    record_login_failure,
    record_login_success,
    record_success,
    reserve_attempt,
    reserve_login_attempt,
    rule_from_config,
)
from broker.config import TenantConfig
from broker.customers.digests import national_id_hmac
from broker.messaging.compose import (
    InvalidEmailAddress,
    InvalidPhoneNumber,
    normalize_phone,
    send_email,
    stored_address,
)
from broker.models import FederatedIdentity, Flow, User, Verification, utcnow
from broker.passwords import verify_password
from broker.security import digests_match, keyed_hmac, new_numeric_code, new_token, sha256_hex
from policies.lockout import LockoutRule
from policies.names import one_line
from providers.identity import UpstreamIdentity, acr_at_least

from .activation import activate_by_mailbox_proof, activation_rule
from .binding import bind_by_national_id
from .totp import second_factor_needed
from .unlock import send_unlock_link

UPSTREAM_FLOW_MINUTES = 15
FIRST_LOGIN_MINUTES = 30
CODE_PURPOSE = "link_identity"
MAX_CODE_SENDS = 5
# At most MAX_CODE_SENDS sends per journey; the counter outlives the journey, then is purged.
SENDS_RULE = LockoutRule(max_attempts=MAX_CODE_SENDS, lock_minutes=FIRST_LOGIN_MINUTES,
                         growth_factor=1, max_lock_minutes=FIRST_LOGIN_MINUTES)
STRONG_EIDS = ("mitid", "ftn")
PROVIDER_LABELS = {
    "mitid": "MitID", "ftn": "Finnish bank ID", "microsoft": "Microsoft", "google": "Google",
    "facebook": "Facebook",
}


@dataclass(frozen=True)
class Step:
    """What to show next. ``name``: done, ask_email, enter_code, prove, profile or refused.

    For ``done`` the caller opens a session for ``user`` with ``amr`` and ``acr`` (after the
    TOTP step when ``second_factor``); ``error`` names a refusal or a problem with the last input
    (the page translates it).
    """

    name: str
    flow: Flow | None = None
    user: User | None = None
    error: str = ""
    amr: list[str] = field(default_factory=list)
    acr: str = "low"
    context: dict[str, Any] = field(default_factory=dict)
    second_factor: bool = False
    link: dict[str, Any] | None = None  # with second_factor: link this once the TOTP is right


def provider_label(kind: str) -> str:
    return PROVIDER_LABELS.get(kind, kind.capitalize())


# --- the upstream round trip --------------------------------------------------------------------


def new_upstream_flow(
    db: Session, tenant: str, state_data: dict[str, Any], *, browser_token: str,
    authorize_flow_id: str | None, link_user_id: int | None = None,
) -> Flow:
    """Keep one upstream login attempt server-side, findable by its ``state`` only together
    with the browser's binding cookie."""
    flow = Flow(
        id=sha256_hex(str(state_data["state"])),
        tenant=tenant,
        kind="upstream",
        state="sent",
        data={
            "state_data": state_data,
            "authorize_flow": authorize_flow_id,
            "browser": sha256_hex(browser_token),
            "link_user_id": link_user_id,
        },
        expires_at=utcnow() + timedelta(minutes=UPSTREAM_FLOW_MINUTES),
    )
    db.add(flow)
    return flow


def take_upstream_flow(
    db: Session, tenant: str, kind: str, state: str, browser_token: str | None
) -> dict[str, Any] | None:
    """The stored attempt for this callback, deleted so it serves once; None when unknown,
    expired, used, started in another browser or for another upstream."""
    if not state or not browser_token:
        return None
    flow = db.get(Flow, sha256_hex(state))
    if flow is None or flow.kind != "upstream" or flow.tenant != tenant:
        return None
    data = dict(flow.data)
    if not digests_match(data.get("browser"), sha256_hex(browser_token)):
        return None
    deleted = db.execute(delete(Flow).where(Flow.id == flow.id)).rowcount
    if deleted != 1 or flow.expires_at <= utcnow():
        return None
    if data.get("state_data", {}).get("provider") != kind:
        return None
    return data


# --- after the upstream vouched for someone ----------------------------------------------------


def after_upstream_login(
    db: Session,
    tenant: TenantConfig,
    hmac_key: str,
    identity: UpstreamIdentity,
    *,
    authorize_flow_id: str | None,
    required_acr: str | None,
    browser_token: str,
    source: str | None,
) -> Step:
    """A linked identity goes straight in; otherwise the first-login journey starts."""
    amr, acr = [identity.amr], identity.acr
    if not acr_at_least(identity.acr, required_acr):
        _audit_failure(db, tenant, None, source, identity.provider, "acr_too_low")
        return Step("refused", error="acr_too_low", amr=amr, acr=acr)
    linked = _linked_identity(db, tenant.slug, identity.provider, identity.subject)
    if linked is not None:
        user = linked.user
        if user.status != "active":
            _audit_failure(db, tenant, user.id, source, identity.provider, "account_disabled")
            return Step("refused", error="disabled", amr=amr, acr=acr)
        linked.last_login_at = utcnow()
        _audit_login(db, tenant, user, source, identity.provider)
        return Step("done", user=user, amr=amr, acr=acr)

    flow_id = new_token(24)
    flow = Flow(
        id=flow_id,
        tenant=tenant.slug,
        kind="first_login",
        state="new",
        data={
            "authorize_flow": authorize_flow_id,
            "browser": sha256_hex(browser_token),
            "provider": identity.provider,
            "subject": identity.subject,
            "amr": amr,
            "acr": acr,
            "name": _full_name(identity),
            "upstream_email": _email_or_none(identity.email),
            "upstream_email_verified": identity.email_verified,
            "national_id_sealed": _seal(flow_id, identity.national_id)
            if identity.national_id else None,
            "national_id_hmac": national_id_hmac(hmac_key, identity.national_id, tenant.country)
            if identity.national_id else None,
        },
        expires_at=utcnow() + timedelta(minutes=FIRST_LOGIN_MINUTES),
    )
    db.add(flow)
    email = flow.data["upstream_email"] if identity.email_verified else None
    if email is None:
        _update(flow, state="ask_email")
        return _step(flow)
    existing = _user_by_email(db, tenant.slug, email)
    if existing is not None:
        return _ask_for_proof(flow, existing)
    user = _create_user(db, tenant, flow, email)
    return _after_user(db, tenant, hmac_key, flow, user, source)


def load_first_login(
    db: Session, tenant: str, flow_id: str, browser_token: str | None
) -> Flow | None:
    """The journey of this browser, or None (unknown, expired, or another browser's)."""
    if not flow_id or not browser_token:
        return None
    flow = db.get(Flow, flow_id)
    if flow is None or flow.kind != "first_login" or flow.tenant != tenant:
        return None
    if flow.expires_at <= utcnow():
        return None
    if not digests_match(flow.data.get("browser"), sha256_hex(browser_token)):
        return None
    return flow


def current_step(flow: Flow) -> Step:
    """The page for the flow's state, e.g. when the browser reloads it."""
    return _step(flow)


def submit_email(
    db: Session, tenant: TenantConfig, hmac_key: str, flow: Flow, typed: str
) -> Step:
    """``ask_email``: send a code to the typed address (the answer does not say whether an
    account has it; that is learnt only after the code proves control of the mailbox)."""
    if flow.state != "ask_email":
        return _step(flow, "wrong_step")
    try:
        email = stored_address(typed)
    except InvalidEmailAddress:
        return _step(flow, "invalid_email")
    _update(flow, email=email)
    existing = _user_by_email(db, tenant.slug, email)
    return _send_code(db, tenant, hmac_key, flow, email, "new_email",
                      template="link_identity_code" if existing else "activation_code")


def resend_code(db: Session, tenant: TenantConfig, hmac_key: str, flow: Flow) -> Step:
    """``enter_code``: a new code to the same address, after the tenant's cooldown."""
    if flow.state != "enter_code":
        return _step(flow, "wrong_step")
    last = flow.data.get("last_sent_at", 0)
    if utcnow().timestamp() - last < tenant.resend_cooldown_seconds:
        return _step(flow, "resend_too_soon")
    code_for = flow.data["code_for"]
    target = flow.data["code_target"]
    template = flow.data.get("code_template", "link_identity_code")
    return _send_code(db, tenant, hmac_key, flow, target, code_for, template=template)


def choose_code_proof(db: Session, tenant: TenantConfig, hmac_key: str, flow: Flow) -> Step:
    """``prove``: the user asks for a code at the existing account's address instead."""
    if flow.state != "prove":
        return _step(flow, "wrong_step")
    user = db.get(User, flow.data["existing_user_id"])
    if user is None or not user.email:
        return _step(flow, "wrong_step")
    return _send_code(db, tenant, hmac_key, flow, user.email, "prove",
                      template="link_identity_code")


def submit_code(
    db: Session, tenant: TenantConfig, hmac_key: str, flow: Flow, typed: str,
    source: str | None,
) -> Step:
    """``enter_code``: a right code proves the mailbox, then the journey goes on."""
    if flow.state != "enter_code":
        return _step(flow, "wrong_step")
    outcome = _check_code(db, tenant, hmac_key, flow, typed)
    if outcome != "ok":
        audit.record(db, "link_code_failed", tenant=tenant.slug, actor_type="anonymous",
                     source_address=source, reason=outcome, outcome="refused",
                     provider=flow.data["provider"])
        # A locked address reads like a spent code: too many tries; a new code, later.
        return _step(flow, "code_spent" if outcome == "locked" else outcome)
    code_for = flow.data["code_for"]
    if code_for == "profile_email":
        user = db.get(User, flow.data["user_id"])
        if user is None:
            return _step(flow, "wrong_step")
        user.email = flow.data["code_target"]
        user.email_verified = True
        _update(flow, state="done")
        return _done(flow, user)
    if code_for == "prove":
        user = db.get(User, flow.data["existing_user_id"])
    else:
        email = flow.data["code_target"]
        user = _user_by_email(db, tenant.slug, email)
        if user is None:
            user = _create_user(db, tenant, flow, email)
    if user is None:
        return _step(flow, "wrong_step")
    if user.status == "disabled":
        return Step("refused", flow, error="disabled")
    if user.status == "pending":
        # The code proved the address; that is what activation asks for. A password chosen
        # before (by whoever registered the address) does not survive: pre-registration
        # takeover. The owner sets one later through "forgot password".
        activate_by_mailbox_proof(db, tenant, user, source, method="upstream_code")
    return _after_user(db, tenant, hmac_key, flow, user, source)


def submit_password(
    db: Session, tenant: TenantConfig, hmac_key: str, flow: Flow, password: str,
    source: str | None, public_url: str,
) -> Step:
    """``prove``: the existing account's password, counted against its lockout.

    The attempt is reserved and committed before the hash is checked (see broker.attempts).
    """
    if flow.state != "prove":
        return _step(flow, "wrong_step")
    user = db.get(User, flow.data["existing_user_id"])
    if user is None or not user.password_hash:
        return _step(flow, "no_password")
    rule = rule_from_config(tenant.lockout)
    reservation = reserve_login_attempt(db, user.id, rule)
    db.commit()
    if not reservation.allowed:
        _audit_proof_failure(db, tenant, user, source, flow, "account locked")
        return _step(flow, "locked")
    if not verify_password(tenant, user.password_hash, password):
        locked_until = record_login_failure(db, user.id, rule)
        _audit_proof_failure(db, tenant, user, source, flow, "wrong password")
        if locked_until is not None and reservation.last_attempt:
            audit.record(db, "account_locked", tenant=tenant.slug, target_user_id=user.id,
                         source_address=source, outcome="locked",
                         reason=f"{tenant.lockout.max_attempts} failed password attempts",
                         locked_until=locked_until.isoformat())
            send_unlock_link(db, tenant, user, locked_until=locked_until, public_url=public_url)
        return _step(flow, "locked" if locked_until is not None else "wrong_password")
    record_login_success(db, user.id)
    db.refresh(user)
    if user.status != "active":
        return Step("refused", flow, error="disabled")
    return _after_user(db, tenant, hmac_key, flow, user, source)


def save_profile(
    db: Session, tenant: TenantConfig, hmac_key: str, flow: Flow, *, name: str, email: str,
    phone: str,
) -> Step:
    """``profile``: keep the edited name and phone; a changed email is confirmed by a code."""
    if flow.state != "profile":
        return _step(flow, "wrong_step")
    user = db.get(User, flow.data["user_id"])
    if user is None:
        return _step(flow, "wrong_step")
    values = {"name": one_line(name), "email": email.strip(), "phone": phone.strip()}
    _update(flow, prefill=values)
    normalised_phone = None
    if values["phone"]:
        try:
            normalised_phone = normalize_phone(values["phone"], tenant.country)
        except InvalidPhoneNumber:
            return _step(flow, "invalid_phone")
    new_email = None
    if values["email"]:
        try:
            new_email = stored_address(values["email"])
        except InvalidEmailAddress:
            return _step(flow, "invalid_email")
    if new_email and new_email != user.email:
        holder = _user_by_email(db, tenant.slug, new_email)
        if holder is not None and holder.id != user.id:
            return _step(flow, "email_taken")
    user.name = values["name"][:200] or user.name
    user.phone = normalised_phone or user.phone
    if new_email and new_email != user.email:
        return _send_code(db, tenant, hmac_key, flow, new_email, "profile_email",
                          template="activation_code")
    _update(flow, state="done")
    return _done(flow, user)


def finish(db: Session, flow: Flow) -> None:
    """The journey is over (the caller has opened the session): its state goes."""
    db.execute(delete(Flow).where(Flow.id == flow.id))


# --- linking from the profile, and unlinking ---------------------------------------------------


def link_to_user(
    db: Session, tenant: TenantConfig, hmac_key: str, user: User, identity: UpstreamIdentity,
    source: str | None,
) -> Step:
    """A logged-in user connects another upstream login; refused when someone else has it."""
    linked = _linked_identity(db, tenant.slug, identity.provider, identity.subject)
    if linked is not None:
        if linked.user_id == user.id:
            return Step("done", user=user, amr=[identity.amr], acr=identity.acr)
        audit.record(db, "identity_linked", tenant=tenant.slug, actor_type="user",
                     actor_id=user.id, target_user_id=user.id, source_address=source,
                     reason="linked to another account", outcome="refused",
                     provider=identity.provider)
        return Step("refused", error="linked_elsewhere")
    digest = (national_id_hmac(hmac_key, identity.national_id, tenant.country)
              if identity.national_id else None)
    _link(db, tenant, user, identity.provider, identity.subject, _email_or_none(identity.email),
          _full_name(identity), digest, source)
    return Step("done", user=user, amr=[identity.amr], acr=identity.acr)


def identities_of(db: Session, user: User) -> list[FederatedIdentity]:
    return list(db.scalars(
        select(FederatedIdentity)
        .where(FederatedIdentity.user_id == user.id)
        .order_by(FederatedIdentity.linked_at)
    ))


def unlink_identity(
    db: Session, tenant: TenantConfig, user: User, identity_id: int, source: str | None
) -> str:
    """``ok``, ``not_found`` or ``last_method``: a user keeps at least one way to log in."""
    linked = db.get(FederatedIdentity, identity_id)
    if linked is None or linked.user_id != user.id or linked.tenant != tenant.slug:
        return "not_found"
    others = db.scalar(
        select(func.count(FederatedIdentity.id)).where(
            FederatedIdentity.user_id == user.id, FederatedIdentity.id != linked.id
        )
    ) or 0
    if not user.password_hash and others == 0:
        audit.record(db, "identity_unlinked", tenant=tenant.slug, actor_type="user",
                     actor_id=user.id, target_user_id=user.id, source_address=source,
                     reason="last login method", outcome="refused", provider=linked.provider)
        return "last_method"
    audit.record(db, "identity_unlinked", tenant=tenant.slug, actor_type="user",
                 actor_id=user.id, target_user_id=user.id, source_address=source,
                 provider=linked.provider, identity_id=linked.id)
    db.delete(linked)
    db.flush()
    return "ok"


# --- steps --------------------------------------------------------------------------------------


def _step(flow: Flow, error: str = "") -> Step:
    data = flow.data
    if flow.state == "enter_code":
        context = {"target": data.get("code_target", ""), "code_for": data.get("code_for")}
    elif flow.state == "prove":
        context = {"email": data.get("existing_email", ""),
                   "has_password": data.get("existing_has_password", False)}
    elif flow.state == "profile":
        context = {"prefill": data.get("prefill", {}), "accounts": data.get("accounts", []),
                   "show_support": data.get("show_support", False)}
    else:
        context = {"name": data.get("name", ""), "email": data.get("email", "")}
    context["provider"] = data.get("provider", "")
    return Step(flow.state, flow, error=error, amr=list(data.get("amr", [])),
                acr=data.get("acr", "low"), context=context)


def _done(flow: Flow, user: User) -> Step:
    second_factor = bool(flow.data.get("second_factor"))
    return Step("done", flow, user=user, amr=list(flow.data["amr"]), acr=flow.data["acr"],
                second_factor=second_factor,
                link=_identity_to_link(flow) if second_factor else None)


def _ask_for_proof(flow: Flow, user: User) -> Step:
    if user.status == "disabled":
        return Step("refused", flow, error="disabled")
    _update(flow, state="prove", existing_user_id=user.id, existing_email=user.email,
            existing_has_password=bool(user.password_hash))
    return _step(flow)


def _after_user(
    db: Session, tenant: TenantConfig, hmac_key: str, flow: Flow, user: User,
    source: str | None,
) -> Step:
    """The user is known and has proven what it takes: link, then bind by national id.

    An account that existed before this journey and has a second factor keeps needing it:
    the email code or password proved one factor only."""
    if user.id != flow.data.get("created_user_id") and second_factor_needed(tenant, user):
        # The identity is linked only after the TOTP step (link_after_second_factor): linked
        # now, the next login through this upstream would go straight in, skipping it.
        _update(flow, second_factor=True)
    else:
        _link(db, tenant, user, **_identity_to_link(flow), source=source)
    data = flow.data
    _audit_login(db, tenant, user, source, data["provider"])
    sealed = data.get("national_id_sealed")
    if not (sealed and tenant.binding.national_id_match and data["provider"] in STRONG_EIDS):
        _update(flow, state="done", national_id_sealed=None)
        return _done(flow, user)
    national_id = _unseal(flow.id, sealed)
    result = bind_by_national_id(db, tenant, hmac_key, user, national_id, source)
    prefill = {
        "name": result.prefill.get("name") or user.name,
        "email": result.prefill.get("email") or user.email or "",
        "phone": result.prefill.get("phone") or user.phone or "",
    }
    _update(flow, state="profile", national_id_sealed=None, user_id=user.id, prefill=prefill,
            accounts=result.accounts, show_support=result.show_support)
    return _step(flow)


# --- codes --------------------------------------------------------------------------------------


def _code_digest(hmac_key: str, flow_id: str, code: str) -> str:
    """Keyed and bound to the journey: a code is worth nothing in another flow."""
    return keyed_hmac(hmac_key, f"{flow_id}\x00{code}", purpose="link_identity_code")


def code_attempt_key(hmac_key: str, tenant: str, email: str) -> str:
    """The counter of code guesses at one address across journeys; keyed, holds no email."""
    digest = keyed_hmac(hmac_key, f"{tenant}\x00{email}", purpose="first-login-code-email")
    return f"first_login_code:{digest}"


def _send_code(
    db: Session, tenant: TenantConfig, hmac_key: str, flow: Flow, target: str, code_for: str,
    *, template: str,
) -> Step:
    if not reserve_attempt(db, f"first_login_sends:{flow.id}", SENDS_RULE).allowed:
        return _step(flow, "too_many_codes")
    code = new_numeric_code(6)
    now = utcnow()
    minutes = tenant.activation_code_ttl_minutes
    verification = Verification(
        tenant=tenant.slug,
        user_id=flow.data.get("existing_user_id") if code_for == "prove" else None,
        purpose=CODE_PURPOSE,
        method="code",
        target=target,
        secret_digest=_code_digest(hmac_key, flow.id, code),
        max_attempts=tenant.activation_max_tries,
        payload={"flow": flow.id, "code_for": code_for},
        expires_at=now + timedelta(minutes=minutes),
    )
    db.add(verification)
    db.flush()
    context: dict[str, Any] = {"code": code, "minutes": minutes}
    if template == "link_identity_code":
        context["provider"] = provider_label(flow.data["provider"])
    send_email(db, tenant, target, template, tenant.default_locale, **context)
    _update(flow, state="enter_code", verification_id=verification.id, code_for=code_for,
            code_target=target, code_template=template, last_sent_at=now.timestamp())
    return _step(flow)


def _check_code(
    db: Session, tenant: TenantConfig, hmac_key: str, flow: Flow, typed: str
) -> str:
    """``ok``, ``wrong_code``, ``code_spent`` (expired or out of tries: ask for a new one) or
    ``locked`` (too many wrong codes at this address, from any journey).

    The try is taken from the address's counter and committed before the code is compared (a
    guess counts even if the request dies), then from the code's own ``attempts``; both are
    conditional UPDATEs, so the limits hold across processes.
    """
    key = code_attempt_key(hmac_key, tenant.slug, flow.data.get("code_target", ""))
    rule = activation_rule(tenant)
    if not reserve_attempt(db, key, rule).allowed:
        db.commit()
        return "locked"
    db.commit()
    outcome = _check_flow_code(db, hmac_key, flow, typed)
    if outcome == "ok":
        record_success(db, key)
    else:
        record_failure(db, key, rule)  # a lock it set refuses the next guess
    return outcome


def _check_flow_code(db: Session, hmac_key: str, flow: Flow, typed: str) -> str:
    verification_id = flow.data.get("verification_id")
    now = utcnow()
    counted = db.execute(
        update(Verification)
        .where(
            Verification.id == verification_id,
            Verification.consumed_at.is_(None),
            Verification.expires_at > now,
            Verification.attempts < Verification.max_attempts,
        )
        .values(attempts=Verification.attempts + 1)
        .returning(Verification.secret_digest)
    ).first()
    if counted is None:
        return "code_spent"
    candidate = _code_digest(hmac_key, flow.id, "".join(typed.split()))
    if not digests_match(candidate, counted[0]):
        return "wrong_code"
    consumed = db.execute(
        update(Verification)
        .where(Verification.id == verification_id, Verification.consumed_at.is_(None))
        .values(consumed_at=now)
    ).rowcount
    return "ok" if consumed == 1 else "code_spent"


# --- rows ---------------------------------------------------------------------------------------


def _linked_identity(
    db: Session, tenant: str, provider: str, subject: str
) -> FederatedIdentity | None:
    return db.scalar(select(FederatedIdentity).where(
        FederatedIdentity.tenant == tenant,
        FederatedIdentity.provider == provider,
        FederatedIdentity.subject == subject,
    ))


def _user_by_email(db: Session, tenant: str, email: str) -> User | None:
    return db.scalar(select(User).where(User.tenant == tenant, User.email == email))


def _create_user(db: Session, tenant: TenantConfig, flow: Flow, email: str) -> User:
    user = User(
        tenant=tenant.slug,
        subject=new_token(24),
        email=email,
        email_verified=True,
        name=flow.data.get("name", "")[:200],
        status="active",
    )
    db.add(user)
    db.flush()
    _update(flow, created_user_id=user.id)
    audit.record(db, "user_created", tenant=tenant.slug, actor_type="user", actor_id=user.id,
                 target_user_id=user.id, reason="first upstream login",
                 provider=flow.data["provider"])
    return user


def _identity_to_link(flow: Flow) -> dict[str, Any]:
    """The upstream identity of a first-login journey, as ``_link`` takes it."""
    data = flow.data
    return {"provider": data["provider"], "subject": data["subject"],
            "email": data.get("upstream_email"), "name": data.get("name", ""),
            "national_digest": data.get("national_id_hmac")}


def link_after_second_factor(
    db: Session, tenant: TenantConfig, user: User, identity: dict[str, Any], source: str | None,
) -> None:
    """The TOTP step of a journey that found an existing account is done: link the upstream
    identity (``Step.link``) now. Should another journey have linked it meanwhile, that link
    stands: an identity belongs to one account."""
    if _linked_identity(db, tenant.slug, identity["provider"], identity["subject"]) is None:
        _link(db, tenant, user, **identity, source=source)


def _link(
    db: Session, tenant: TenantConfig, user: User, provider: str, subject: str,
    email: str | None, name: str, national_digest: str | None, source: str | None,
) -> FederatedIdentity:
    now = utcnow()
    linked = FederatedIdentity(
        tenant=tenant.slug,
        user_id=user.id,
        provider=provider,
        subject=subject,
        email=email,
        display_name=(name or email or provider_label(provider))[:200],
        national_id_hmac=national_digest,
        linked_at=now,
        last_login_at=now,
    )
    db.add(linked)
    db.flush()
    audit.record(db, "identity_linked", tenant=tenant.slug, actor_type="user", actor_id=user.id,
                 target_user_id=user.id, source_address=source, provider=provider,
                 identity_id=linked.id)
    return linked


def _update(flow: Flow, state: str | None = None, **values: Any) -> None:
    """JSON columns notice reassignment, not mutation in place."""
    flow.data = {**flow.data, **values}
    if state is not None:
        flow.state = state


def _full_name(identity: UpstreamIdentity) -> str:
    """The upstream's name claim, on one line (policies.names): the upstream's user chose it."""
    if identity.name:
        return one_line(identity.name)
    return one_line(" ".join(p for p in (identity.given_name, identity.family_name) if p))


def _email_or_none(email: str | None) -> str | None:
    if not email:
        return None
    try:
        return stored_address(email)
    except InvalidEmailAddress:
        return None


def _audit_login(
    db: Session, tenant: TenantConfig, user: User, source: str | None, provider: str
) -> None:
    audit.record(db, "login_succeeded", tenant=tenant.slug, actor_type="user", actor_id=user.id,
                 target_user_id=user.id, source_address=source, method=provider)


def _audit_failure(
    db: Session, tenant: TenantConfig, user_id: int | None, source: str | None, provider: str,
    reason: str,
) -> None:
    audit.record(db, "upstream_login_failed", tenant=tenant.slug,
                 actor_type="user" if user_id else "anonymous", actor_id=user_id,
                 target_user_id=user_id, source_address=source, reason=reason,
                 outcome="refused", provider=provider, code=reason)


def _audit_proof_failure(
    db: Session, tenant: TenantConfig, user: User, source: str | None, flow: Flow, reason: str
) -> None:
    audit.record(db, "login_failed", tenant=tenant.slug, actor_type="anonymous",
                 target_user_id=user.id, source_address=source, reason=reason,
                 outcome="refused", method="password", linking=flow.data["provider"])


# --- the sealed national id ---------------------------------------------------------------------


def _seal(flow_id: str, national_id: str) -> str:
    """The national id, readable only by this flow while it runs (``broker.crypto``)."""
    return crypto.seal(national_id, purpose=f"first-login-national-id:{flow_id}")


def _unseal(flow_id: str, sealed: str) -> str:
    try:
        return crypto.open_sealed(sealed, purpose=f"first-login-national-id:{flow_id}")
    except crypto.SealError:
        return ""
