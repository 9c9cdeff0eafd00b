"""What support staff may do to a customer's account, each step audited exactly once.

Every action goes through :func:`perform`: the user must exist, the staff member must be allowed
to act on the user's tenant with this action (a refusal is audited, outcome ``refused``), and
the staff member must say why. Then the action runs and leaves one audit record with the staff
member, the user, the tenant, the source address, the reason and the outcome (``ok``, or
``failed`` when the account's state does not allow it, e.g. activation for an active user).
Input that is not an action at all (no reason, a malformed customer number) is refused before
anything happens and leaves no record.

Staff never set or see a customer's password: they can only send the owner a reset link.
Runs in the caller's transaction; the view commits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from flows.activation import issue_activation
from flows.binding import grant_binding, unbind
from flows.password_reset import revoke_refresh_tokens, send_reset_link
from flows.totp import attempt_key as totp_attempt_key
from flows.unlock import unlock_by_support
from policies.binding import ROLES as BINDING_ROLES
from policies.binding import normalise_customer_number
from policies.staff import (
    ALL_TENANTS,
    USER_ACTIONS,
    check_reason,
    covers_tenant,
    may_act,
    may_manage_staff,
)

from .. import audit, login_session
from ..attempts import unlock as unlock_counter
from ..config import BrokerConfig, TenantConfig
from ..customers.digests import proof_hmac
from ..messaging.compose import (
    InvalidEmailAddress,
    InvalidPhoneNumber,
    SmsLimitReached,
    send_email,
    send_sms,
)
from ..models import AuditEvent, Binding, CustomerAccount, RecoveryCode, Staff, User, utcnow
from ..security import new_numeric_code
from .auth import NewStaff, create_staff, end_all_staff_sessions, normalise_staff_email

PIN_DIGITS = 6
PIN_CHANNELS = ("email", "sms")

# The audit event each action leaves (ok, failed or refused).
ACTION_EVENTS: dict[str, str] = {
    "unlock": "account_unlocked",
    "resend_activation": "activation_resent",
    "send_password_reset": "password_reset_sent",
    "reset_totp": "totp_reset",
    "disable": "account_disabled",
    "enable": "account_enabled",
    "bind_customer": "customer_bound",
    "unbind_customer": "customer_unbound",
    "revoke_sessions": "sessions_revoked",
    "send_binding_pin": "binding_pin_sent",
}
ACTIONS: tuple[str, ...] = tuple(USER_ACTIONS)

# Words a customer reads in their profile for each support action.
ACTION_LABELS: dict[str, str] = {
    "unlock": "Account unlocked",
    "resend_activation": "Activation sent again",
    "send_password_reset": "Password reset link sent",
    "reset_totp": "Authenticator app (TOTP) reset",
    "disable": "Account disabled",
    "enable": "Account enabled",
    "bind_customer": "Customer account added",
    "unbind_customer": "Customer account removed",
    "revoke_sessions": "Signed out everywhere",
    "send_binding_pin": "New PIN sent for a customer account",
}
EVENT_ACTIONS = {event: action for action, event in ACTION_EVENTS.items()}


@dataclass(frozen=True)
class Actor:
    """The staff member acting, and from where (for the audit record)."""

    staff: Staff
    source_address: str | None


@dataclass(frozen=True)
class ActionResult:
    """``outcome``: ok, failed (the account's state did not allow it; audited), refused (not
    allowed for this staff member; audited), invalid (bad input; nothing done, not audited),
    not_found (no such user)."""

    outcome: str
    error: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"

    @property
    def http_status(self) -> int:
        return {"ok": 200, "failed": 409, "refused": 403, "invalid": 400, "not_found": 404}[
            self.outcome
        ]


@dataclass(frozen=True)
class _Done:
    """What a handler reports; ``audited`` when the flow it called wrote the record itself."""

    outcome: str = "ok"
    error: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    audited: bool = False


@dataclass(frozen=True)
class _Context:
    db: Session
    config: BrokerConfig
    tenant: TenantConfig
    actor: Actor
    user: User
    reason: str
    params: dict[str, Any]


class _BadInput(ValueError):
    """Input that is not a usable request: nothing is done, nothing audited."""


def perform(
    db: Session,
    config: BrokerConfig,
    actor: Actor,
    action: str,
    user_id: int,
    *,
    reason: str | None,
    params: dict[str, Any] | None = None,
) -> ActionResult:
    """Run one support action on ``user_id``; see the module docstring for the checks."""
    if action not in ACTION_EVENTS:
        return ActionResult("invalid", "unknown_action")
    user = db.get(User, user_id)
    tenant = config.tenant(user.tenant) if user is not None else None
    if user is None or tenant is None:
        return ActionResult("not_found", "no_such_user")
    staff = actor.staff
    decision = may_act(staff.roles, staff.tenants, action, user.tenant)
    if not decision.allowed:
        _record(db, actor, action, user, reason, "refused", {"refusal": decision.reason})
        return ActionResult("refused", decision.reason)
    reason_check = check_reason(reason)
    if not reason_check.allowed:
        return ActionResult("invalid", reason_check.reason)
    context = _Context(
        db, config, tenant, actor, user, (reason or "").strip(), dict(params or {})
    )
    try:
        done = _HANDLERS[action](context)
    except _BadInput as error:
        return ActionResult("invalid", str(error))
    if not done.audited:
        details = dict(done.details)
        if done.error:
            details["error"] = done.error
        _record(db, actor, action, user, context.reason, done.outcome, details)
    db.flush()
    return ActionResult(done.outcome, done.error, done.details)


def _record(
    db: Session, actor: Actor, action: str, user: User, reason: str | None, outcome: str,
    details: dict[str, Any],
) -> None:
    audit.record(
        db, ACTION_EVENTS[action], tenant=user.tenant, actor_type="staff",
        actor_id=actor.staff.id, target_user_id=user.id, source_address=actor.source_address,
        reason=(reason or "").strip() or None, outcome=outcome, action=action, **details,
    )


# --- The actions -------------------------------------------------------------------------


def _unlock(ctx: _Context) -> _Done:
    unlock_by_support(
        ctx.db, ctx.tenant, ctx.user.id, staff_id=ctx.actor.staff.id, reason=ctx.reason,
        source_address=ctx.actor.source_address,
    )
    unlock_counter(ctx.db, totp_attempt_key(ctx.user.id))
    return _Done(audited=True)


def _resend_activation(ctx: _Context) -> _Done:
    if ctx.user.status != "pending":
        return _Done("failed", "not_pending")
    if not ctx.user.email:
        return _Done("failed", "no_email")
    try:
        issue_activation(
            ctx.db, ctx.tenant, ctx.user, hmac_key=ctx.config.hmac_key,
            secret_key=ctx.config.secret_key, public_url=ctx.config.public_url,
        )
    except InvalidEmailAddress:
        return _Done("failed", "invalid_email")
    return _Done(details={"method": ctx.tenant.activation})


def _send_password_reset(ctx: _Context) -> _Done:
    if ctx.user.status == "disabled":
        return _Done("failed", "account_disabled")
    if not ctx.user.email:
        return _Done("failed", "no_email")
    if not send_reset_link(ctx.db, ctx.tenant, ctx.user, public_url=ctx.config.public_url):
        return _Done("failed", "recently_sent")
    return _Done()


def _reset_totp(ctx: _Context) -> _Done:
    had_totp = ctx.user.totp_secret is not None
    ctx.user.totp_secret = None
    ctx.user.totp_last_step = None
    removed = ctx.db.execute(delete(RecoveryCode).where(RecoveryCode.user_id == ctx.user.id))
    ctx.db.expire(ctx.user, ["recovery_codes"])
    unlock_counter(ctx.db, totp_attempt_key(ctx.user.id))
    return _Done(details={
        "had_totp": had_totp, "recovery_codes_removed": int(removed.rowcount or 0),
    })


def _sign_out_everywhere(db: Session, user_id: int) -> dict[str, int]:
    sessions = login_session.end_all_for_user(db, user_id)
    tokens = revoke_refresh_tokens(db, user_id)
    return {"sessions_ended": sessions, "tokens_revoked": tokens}


def _disable(ctx: _Context) -> _Done:
    if ctx.user.status == "disabled":
        return _Done("failed", "already_disabled")
    previous = ctx.user.status
    ctx.user.status = "disabled"
    return _Done(details={"previous_status": previous, **_sign_out_everywhere(ctx.db, ctx.user.id)})


def _enable(ctx: _Context) -> _Done:
    if ctx.user.status != "disabled":
        return _Done("failed", "not_disabled")
    # Someone who never proved their email (or logged in upstream) is pending, not active.
    proven = ctx.user.email_verified or bool(ctx.user.identities)
    ctx.user.status = "active" if proven else "pending"
    return _Done(details={"status": ctx.user.status})


def _customer_account(ctx: _Context) -> CustomerAccount | None:
    number = normalise_customer_number(str(ctx.params.get("customer_number") or ""))
    if not number or len(number) > 64:
        raise _BadInput("customer_number_required")
    return ctx.db.scalar(
        select(CustomerAccount).where(
            CustomerAccount.tenant == ctx.user.tenant, CustomerAccount.number == number
        )
    )


def _bind_customer(ctx: _Context) -> _Done:
    role = str(ctx.params.get("role") or "owner")
    if role not in BINDING_ROLES:
        raise _BadInput("unknown_role")
    account = _customer_account(ctx)
    if account is None:
        return _Done("failed", "no_such_customer_account")
    binding = grant_binding(ctx.db, ctx.user, account.id, role, "support")
    return _Done(details={"customer_account_id": account.id, "role": binding.role})


def _unbind_customer(ctx: _Context) -> _Done:
    account = _customer_account(ctx)
    binding = None
    if account is not None:
        binding = ctx.db.scalar(
            select(Binding).where(
                Binding.user_id == ctx.user.id, Binding.customer_account_id == account.id
            )
        )
    if binding is None:
        return _Done("failed", "not_bound")
    result = unbind(
        ctx.db, ctx.tenant, binding, actor_staff=ctx.actor.staff,
        source_address=ctx.actor.source_address, reason=ctx.reason,
    )
    return _Done("ok" if result.ok else "failed", result.reason, audited=True)


def _revoke_sessions(ctx: _Context) -> _Done:
    return _Done(details=_sign_out_everywhere(ctx.db, ctx.user.id))


def _send_binding_pin(ctx: _Context) -> _Done:
    """A fresh single-use PIN to the contact on record of the customer account (never to an
    address the caller gives), stored as a keyed HMAC with the tenant's expiry."""
    channel = str(ctx.params.get("channel") or "")
    if channel and channel not in PIN_CHANNELS:
        raise _BadInput("unknown_channel")
    account = _customer_account(ctx)
    if account is None:
        return _Done("failed", "no_such_customer_account")
    if not channel:
        channel = "email" if account.email else "sms"
    destination = account.email if channel == "email" else account.phone
    if not destination:
        return _Done("failed", "no_contact_on_record", {"channel": channel})
    pin = new_numeric_code(PIN_DIGITS)
    days = ctx.tenant.binding.pin_valid_days
    message: dict[str, Any] = {
        "accounts": [{"number": account.number, "pin": pin, "name": account.name,
                      "address": account.address_label}],
        "pin_valid_days": days, "customer_numbers": [account.number], "valid_days": days,
    }
    locale = ctx.user.locale or ctx.tenant.default_locale
    details = {"channel": channel, "customer_account_id": account.id}
    try:
        if channel == "email":
            send_email(ctx.db, ctx.tenant, destination, "forgot_customer_number", locale, **message)
        else:
            send_sms(ctx.db, ctx.tenant, destination, "forgot_customer_number", locale,
                     limits=ctx.config.messaging.sms, **message)
    except SmsLimitReached:
        return _Done("failed", "sms_limited", details)
    except (InvalidEmailAddress, InvalidPhoneNumber):
        return _Done("failed", "contact_on_record_unusable", details)
    account.pin_hmac = proof_hmac(ctx.config.hmac_key, "pin", pin)
    account.pin_expires_at = utcnow() + timedelta(days=days)
    return _Done(details=details)


_HANDLERS: dict[str, Callable[[_Context], _Done]] = {
    "unlock": _unlock,
    "resend_activation": _resend_activation,
    "send_password_reset": _send_password_reset,
    "reset_totp": _reset_totp,
    "disable": _disable,
    "enable": _enable,
    "bind_customer": _bind_customer,
    "unbind_customer": _unbind_customer,
    "revoke_sessions": _revoke_sessions,
    "send_binding_pin": _send_binding_pin,
}


# --- Managing staff ------------------------------------------------------------------------


@dataclass(frozen=True)
class StaffResult:
    outcome: str
    error: str = ""
    created: NewStaff | None = None
    staff: Staff | None = None

    @property
    def http_status(self) -> int:
        return {"ok": 200, "failed": 409, "refused": 403, "invalid": 400, "not_found": 404}[
            self.outcome
        ]


def _staff_tenant(tenants: list[str]) -> str | None:
    """The audit record's tenant for a staff change: the one tenant, when there is one."""
    return tenants[0] if len(tenants) == 1 and tenants[0] != ALL_TENANTS else None


def add_staff_member(
    db: Session,
    actor: Actor,
    *,
    email: str,
    name: str,
    roles: list[str],
    tenants: list[str],
    reason: str | None,
) -> StaffResult:
    """A tenant administrator adds a colleague; the password and TOTP URI are shown once."""
    decision = may_manage_staff(actor.staff.roles, actor.staff.tenants, roles, tenants)
    if not decision.allowed and decision.reason in ("role_not_allowed", "tenant_not_allowed"):
        audit.record(
            db, "staff_created", tenant=_staff_tenant(tenants), actor_type="staff",
            actor_id=actor.staff.id, source_address=actor.source_address,
            reason=(reason or "").strip() or None, outcome="refused", refusal=decision.reason,
            roles=roles, tenants=tenants,
        )
        return StaffResult("refused", decision.reason)
    if not decision.allowed:
        return StaffResult("invalid", decision.reason)
    reason_check = check_reason(reason)
    if not reason_check.allowed:
        return StaffResult("invalid", reason_check.reason)
    address = normalise_staff_email(email)
    if "@" not in address or len(address) > 320:
        return StaffResult("invalid", "invalid_email")
    if db.scalar(select(Staff.id).where(Staff.email == address)) is not None:
        return StaffResult("failed", "email_taken")
    created = create_staff(
        db, email=address, name=name, roles=roles, tenants=tenants, created_by=actor.staff.id
    )
    audit.record(
        db, "staff_created", tenant=_staff_tenant(tenants), actor_type="staff",
        actor_id=actor.staff.id, source_address=actor.source_address, reason=reason.strip(),
        staff_id=created.staff.id, roles=roles, tenants=tenants,
    )
    return StaffResult("ok", created=created, staff=created.staff)


def set_staff_disabled(
    db: Session, actor: Actor, staff_id: int, *, disabled: bool, reason: str | None
) -> StaffResult:
    """Disable (ending their sessions) or re-enable a colleague within one's own tenants."""
    target = db.get(Staff, staff_id)
    if target is None:
        return StaffResult("not_found", "no_such_staff")
    event = "staff_disabled" if disabled else "staff_enabled"
    decision = may_manage_staff(actor.staff.roles, actor.staff.tenants, target.roles or [
        "support_agent"], target.tenants)
    if decision.allowed and target.id == actor.staff.id:
        decision = type(decision)(False, "not_yourself")
    if not decision.allowed:
        audit.record(
            db, event, tenant=_staff_tenant(target.tenants), actor_type="staff",
            actor_id=actor.staff.id, source_address=actor.source_address,
            reason=(reason or "").strip() or None, outcome="refused", refusal=decision.reason,
            staff_id=target.id,
        )
        return StaffResult("refused", decision.reason)
    reason_check = check_reason(reason)
    if not reason_check.allowed:
        return StaffResult("invalid", reason_check.reason)
    target.disabled = disabled
    ended = end_all_staff_sessions(db, target.id) if disabled else 0
    audit.record(
        db, event, tenant=_staff_tenant(target.tenants), actor_type="staff",
        actor_id=actor.staff.id, source_address=actor.source_address, reason=reason.strip(),
        staff_id=target.id, sessions_ended=ended,
    )
    return StaffResult("ok", staff=target)


def visible_staff(db: Session, viewer: Staff) -> list[Staff]:
    """Staff whose every tenant the viewer covers (an administrator sees their own team)."""
    rows = db.scalars(select(Staff).order_by(Staff.email))
    return [s for s in rows if all(covers_tenant(viewer.tenants, t) for t in s.tenants or [])]


# --- What the customer sees ----------------------------------------------------------------


def support_actions_for(db: Session, user_id: int, limit: int = 50) -> list[dict[str, Any]]:
    """Support actions taken on the user's own account, newest first, for their profile.

    Only what was done (outcome ok) and why; not which staff member did it.
    """
    rows = db.scalars(
        select(AuditEvent)
        .where(
            AuditEvent.target_user_id == user_id,
            AuditEvent.actor_type == "staff",
            AuditEvent.outcome == "ok",
        )
        .order_by(AuditEvent.at.desc(), AuditEvent.id.desc())
        .limit(limit)
    )
    actions = []
    for row in rows:
        action = (row.details or {}).get("action") or EVENT_ACTIONS.get(row.event, row.event)
        actions.append({
            "at": row.at, "event": row.event, "action": action,
            "label": ACTION_LABELS.get(action, row.event.replace("_", " ")), "reason": row.reason,
        })
    return actions
