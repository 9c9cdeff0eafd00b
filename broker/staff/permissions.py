"""The staff rules of ``policies.staff`` applied to a staff member and the configured tenants."""

from __future__ import annotations

from policies.staff import STAFF_MANAGERS, StaffDecision, covers_tenant, may_act, may_view

from ..config import BrokerConfig
from ..models import Staff


def tenants_of(staff: Staff, config: BrokerConfig) -> list[str]:
    """The configured tenants this staff member may act on, in config order."""
    return [slug for slug in config.tenants if covers_tenant(staff.tenants or [], slug)]


def can_act(staff: Staff, action: str, tenant: str) -> StaffDecision:
    return may_act(staff.roles or [], staff.tenants or [], action, tenant)


def can_view(staff: Staff, tenant: str) -> StaffDecision:
    return may_view(staff.tenants or [], tenant)


def can_manage_staff(staff: Staff) -> bool:
    return bool(STAFF_MANAGERS.intersection(staff.roles or []))


def staff_json(staff: Staff) -> dict[str, object]:
    """A staff member as the API shows them: no hash, no TOTP secret."""
    return {
        "id": staff.id,
        "email": staff.email,
        "name": staff.name,
        "roles": list(staff.roles or []),
        "tenants": list(staff.tenants or []),
        "disabled": staff.disabled,
        "created_at": staff.created_at.isoformat() if staff.created_at else None,
        "last_login_at": staff.last_login_at.isoformat() if staff.last_login_at else None,
    }
