"""Support's side of a privacy request made by phone: export a customer's data, or erase the
account, with the staff member's reason, audited like every staff action.

Same checks as :func:`broker.staff.actions.perform`: the staff member must cover the user's
tenant and hold a role allowed the action (a refusal is audited, outcome ``refused``), and say
why (no reason: nothing happens, nothing is recorded). The data and the erasure are the ones
the customer gets in self-service (``flows.privacy``). Runs in the caller's transaction: the
console commits, then calls ``broker.views.privacy.tell_portals(tenant, erasure)`` so portals
holding tokens hear of the erasure by back-channel logout.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from flows.privacy import Erasure, erase_account, export_account
from policies.staff import ROLES, check_reason, covers_tenant

from .. import audit
from ..config import BrokerConfig
from ..models import User
from .actions import ActionResult, Actor

# Each privacy action, the roles that may take it, and the audit event it leaves.
PRIVACY_ACTIONS: dict[str, frozenset[str]] = {
    "export_data": frozenset(ROLES),
    "erase_account": frozenset(ROLES),
}
PRIVACY_EVENTS = {"export_data": "data_exported", "erase_account": "account_erased"}


def _checked(
    db: Session, config: BrokerConfig, actor: Actor, action: str, user_id: int,
    reason: str | None,
) -> tuple[ActionResult | None, User | None]:
    user = db.get(User, user_id)
    if user is None or config.tenant(user.tenant) is None:
        return ActionResult("not_found", "no_such_user"), None
    staff = actor.staff
    refusal = ""
    if not covers_tenant(staff.tenants or [], user.tenant):
        refusal = "tenant_not_allowed"
    elif not PRIVACY_ACTIONS[action].intersection(staff.roles or []):
        refusal = "role_not_allowed"
    if refusal:
        audit.record(db, PRIVACY_EVENTS[action], tenant=user.tenant, actor_type="staff",
                     actor_id=staff.id, target_user_id=user.id,
                     source_address=actor.source_address, reason=(reason or "").strip() or None,
                     outcome="refused", action=action, refusal=refusal)
        db.flush()
        return ActionResult("refused", refusal), None
    reason_check = check_reason(reason)
    if not reason_check.allowed:
        return ActionResult("invalid", reason_check.reason), None
    return None, user


def export_for_staff(
    db: Session, config: BrokerConfig, actor: Actor, user_id: int, *, reason: str | None
) -> tuple[ActionResult, dict[str, Any] | None]:
    """The customer's export, for support to send to the address on record."""
    problem, user = _checked(db, config, actor, "export_data", user_id, reason)
    if problem is not None or user is None:
        return problem or ActionResult("not_found", "no_such_user"), None
    data = export_account(db, config.tenants[user.tenant], user)
    audit.record(db, "data_exported", tenant=user.tenant, actor_type="staff",
                 actor_id=actor.staff.id, target_user_id=user.id,
                 source_address=actor.source_address, reason=(reason or "").strip(),
                 action="export_data")
    db.flush()
    return ActionResult("ok"), data


def erase_for_staff(
    db: Session, config: BrokerConfig, actor: Actor, user_id: int, *, reason: str | None
) -> tuple[ActionResult, Erasure | None]:
    """Erase the account as the customer asked; the reason is kept (names scrubbed)."""
    problem, user = _checked(db, config, actor, "erase_account", user_id, reason)
    if problem is not None or user is None:
        return problem or ActionResult("not_found", "no_such_user"), None
    erasure = erase_account(
        db, config.tenants[user.tenant], user, hmac_key=config.hmac_key, actor_type="staff",
        actor_id=actor.staff.id, reason=(reason or "").strip(),
        source_address=actor.source_address, cause="request_to_support",
    )
    db.flush()
    return ActionResult("ok", details={"removed": erasure.removed}), erasure
