"""Typed SQLAlchemy 2.0 models. Every change here needs an Alembic revision in migrations/."""

from .base import ROW_ID_MAX, Base, utcnow
from .customers import Binding, CustomerAccount, CustomerInvoice, Invitation
from .identity import (
    AttemptCounter,
    FederatedIdentity,
    Flow,
    LoginSession,
    RecoveryCode,
    Tenant,
    User,
    Verification,
)
from .oidc import AuthorizationCode, SigningKey, Token
from .operations import AuditEvent, OutboxMessage, Staff, StaffSession

__all__ = [
    "utcnow",
    "ROW_ID_MAX",
    "AttemptCounter",
    "AuditEvent",
    "AuthorizationCode",
    "Base",
    "Binding",
    "CustomerAccount",
    "CustomerInvoice",
    "FederatedIdentity",
    "Flow",
    "Invitation",
    "LoginSession",
    "OutboxMessage",
    "RecoveryCode",
    "SigningKey",
    "Staff",
    "StaffSession",
    "Tenant",
    "Token",
    "User",
    "Verification",
]
