"""Who among support staff may do what, for which utility.

Pure rules over a staff member's roles and tenant list. ``support_agent`` helps customers of its
tenants; ``tenant_admin`` may also disable or enable accounts and manage staff of its tenants.
A tenant list holding ``"*"`` covers every tenant (the operator's first administrator).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

ROLES: tuple[str, ...] = ("support_agent", "tenant_admin")
ALL_TENANTS = "*"
MAX_REASON_LENGTH = 1000

# Each action on a customer's account, and the roles that may take it.
USER_ACTIONS: dict[str, frozenset[str]] = {
    "unlock": frozenset(ROLES),
    "resend_activation": frozenset(ROLES),
    "send_password_reset": frozenset(ROLES),
    "reset_totp": frozenset(ROLES),
    "disable": frozenset({"tenant_admin"}),
    "enable": frozenset({"tenant_admin"}),
    "bind_customer": frozenset(ROLES),
    "unbind_customer": frozenset(ROLES),
    "revoke_sessions": frozenset(ROLES),
    "send_binding_pin": frozenset(ROLES),
}
STAFF_MANAGERS = frozenset({"tenant_admin"})


@dataclass(frozen=True)
class StaffDecision:
    """``reason`` when refused: unknown_action, role_not_allowed, tenant_not_allowed,
    reason_required, reason_too_long, unknown_role, no_tenants."""

    allowed: bool
    reason: str = ""


def covers_tenant(staff_tenants: Iterable[str], tenant: str | None) -> bool:
    tenants = set(staff_tenants)
    return ALL_TENANTS in tenants or (tenant is not None and tenant in tenants)


def may_act(
    roles: Sequence[str], staff_tenants: Sequence[str], action: str, tenant: str
) -> StaffDecision:
    """May this staff member take ``action`` on a user of ``tenant``? The tenant comes first:
    a staff member learns nothing about what they could do at a utility that is not theirs."""
    allowed_roles = USER_ACTIONS.get(action)
    if allowed_roles is None:
        return StaffDecision(False, "unknown_action")
    if not covers_tenant(staff_tenants, tenant):
        return StaffDecision(False, "tenant_not_allowed")
    if not allowed_roles.intersection(roles):
        return StaffDecision(False, "role_not_allowed")
    return StaffDecision(True)


def may_view(staff_tenants: Sequence[str], tenant: str) -> StaffDecision:
    if not covers_tenant(staff_tenants, tenant):
        return StaffDecision(False, "tenant_not_allowed")
    return StaffDecision(True)


def may_manage_staff(
    roles: Sequence[str], staff_tenants: Sequence[str], new_roles: Sequence[str],
    new_tenants: Sequence[str],
) -> StaffDecision:
    """A tenant administrator may create staff only within its own tenants (no escalation:
    ``"*"`` only from someone who holds ``"*"``)."""
    if not STAFF_MANAGERS.intersection(roles):
        return StaffDecision(False, "role_not_allowed")
    if not new_roles or any(role not in ROLES for role in new_roles):
        return StaffDecision(False, "unknown_role")
    if not new_tenants:
        return StaffDecision(False, "no_tenants")
    for tenant in new_tenants:
        if tenant == ALL_TENANTS and ALL_TENANTS not in staff_tenants:
            return StaffDecision(False, "tenant_not_allowed")
        if not covers_tenant(staff_tenants, tenant):
            return StaffDecision(False, "tenant_not_allowed")
    return StaffDecision(True)


def check_reason(reason: str | None) -> StaffDecision:
    """Every action carries why it was taken, in the staff member's words."""
    text = (reason or "").strip()
    if not text:
        return StaffDecision(False, "reason_required")
    if len(text) > MAX_REASON_LENGTH:
        return StaffDecision(False, "reason_too_long")
    return StaffDecision(True)
