"""A person's rights over their account (GDPR articles 15, 17 and 20): export and erasure.

- :func:`export_account` is the "download my data" answer: a JSON-ready dict of what the broker
  holds about the user, in the user's own words. Never a digest, a secret or another person's
  data: no password hash, TOTP secret, code or token digests, no national identity HMAC, no
  email or name of another user (an account shared by delegation shows roles, not people).
- :func:`erase_account` deletes the account and every row that names the person, in the
  caller's transaction. The audit log keeps its records of the account, pseudonymised: they
  carry the user id only, and any email, name or phone in their reasons or details is replaced.
  It returns the portals that held tokens, so the caller tells them by back-channel logout
  once the transaction is committed (a portal must never hear of a deletion that rolled back).

Used by the profile pages (the user), the support console (staff, with a reason) and
``broker purge`` (unactivated and inactive accounts).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from markupsafe import escape
from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session, defer

from broker import audit
from broker.config import TenantConfig
from broker.models import (
    AttemptCounter,
    AuditEvent,
    AuthorizationCode,
    Binding,
    CustomerAccount,
    FederatedIdentity,
    Flow,
    Invitation,
    LoginSession,
    OutboxMessage,
    RecoveryCode,
    Token,
    User,
    Verification,
    utcnow,
)

from .activation import attempt_key as activation_attempt_key
from .password_login import unknown_email_key
from .totp import attempt_key as totp_attempt_key

EXPORT_FORMAT = "broker-account-export/1"
RECENT_EVENTS_DAYS = 365
MAX_EVENTS = 500
ERASED = "[erased]"
CONSENT_EVENT = "privacy_policy_accepted"
# Audit events of the account the export may show in full (reason and source address):
# they describe what the person did or what was done to their account, never someone else.
_ACTOR_LABELS = {"user": "you", "staff": "support", "system": "system",
                 "anonymous": "someone (not logged in)"}


# --- Export ----------------------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def export_account(
    db: Session, tenant: TenantConfig, user: User, *, now: datetime | None = None
) -> dict[str, Any]:
    """Everything the broker keeps about ``user`` that is theirs to see, JSON-ready."""
    now = now or utcnow()
    return {
        "format": EXPORT_FORMAT,
        "exported_at": now.isoformat(),
        "utility": {"id": tenant.slug, "name": tenant.name},
        "profile": _profile(user),
        "login_methods": _login_methods(db, user),
        "linked_identities": _identities(db, user),
        "customer_accounts": _customer_accounts(db, user),
        "invitations_sent": _invitations_sent(db, user),
        "consents": _consents(db, user),
        "sessions": _sessions(db, user, now),
        "portals": _portals(db, user),
        "messages": _messages(db, user),
        "security_events": _security_events(db, user, now),
        "support_actions": _support_actions(db, user),
    }


def _profile(user: User) -> dict[str, Any]:
    return {
        "subject": user.subject,
        "email": user.email,
        "email_verified": user.email_verified,
        "name": user.name,
        "phone": user.phone,
        "language": user.locale,
        "registration_type": user.registration_type,
        "status": user.status,
        "electronic_bills": user.ebill_opt_in,
        "created_at": _iso(user.created_at),
        "last_login_at": _iso(user.last_login_at),
        "password_changed_at": _iso(user.password_changed_at),
        "locked_until": _iso(user.locked_until),
    }


def _login_methods(db: Session, user: User) -> dict[str, Any]:
    codes_left = db.scalar(
        select(func.count(RecoveryCode.id)).where(
            RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None)
        )
    ) or 0
    return {
        "password": user.password_hash is not None,
        "authenticator_app": user.totp_secret is not None,
        "recovery_codes_left": codes_left,
    }


def _identities(db: Session, user: User) -> list[dict[str, Any]]:
    rows = db.scalars(
        select(FederatedIdentity)
        .where(FederatedIdentity.user_id == user.id)
        .order_by(FederatedIdentity.linked_at, FederatedIdentity.id)
    )
    return [
        {
            "provider": row.provider,
            "subject": row.subject,
            "email": row.email,
            "display_name": row.display_name,
            "linked_at": _iso(row.linked_at),
            "last_login_at": _iso(row.last_login_at),
        }
        for row in rows
    ]


def _customer_accounts(db: Session, user: User) -> list[dict[str, Any]]:
    """Number, kind and role: not the register's name or address, which may be a relative's."""
    rows = db.execute(
        select(CustomerAccount.number, CustomerAccount.kind, Binding.role, Binding.proof,
               Binding.created_at)
        .join(Binding, Binding.customer_account_id == CustomerAccount.id)
        .where(Binding.user_id == user.id)
        .order_by(CustomerAccount.number)
    ).all()
    return [
        {"number": number, "kind": kind, "role": role, "proof": proof, "since": _iso(since)}
        for number, kind, role, proof, since in rows
    ]


def _invitations_sent(db: Session, user: User) -> list[dict[str, Any]]:
    """Invitations the user sent; the invitee's address is theirs, not the user's: left out."""
    rows = db.execute(
        select(CustomerAccount.number, Invitation.created_at, Invitation.expires_at,
               Invitation.accepted_at)
        .join(CustomerAccount, CustomerAccount.id == Invitation.customer_account_id)
        .where(Invitation.inviter_user_id == user.id)
        .order_by(Invitation.created_at)
    ).all()
    return [
        {"customer_account": number, "sent_at": _iso(sent), "expires_at": _iso(expires),
         "accepted": accepted is not None}
        for number, sent, expires, accepted in rows
    ]


def _consents(db: Session, user: User) -> dict[str, Any]:
    history = db.execute(
        select(AuditEvent.at, AuditEvent.details)
        .where(AuditEvent.target_user_id == user.id, AuditEvent.event == CONSENT_EVENT)
        .order_by(AuditEvent.at)
    ).all()
    return {
        "privacy_policy": {
            "version": user.privacy_version,
            "accepted_at": _iso(user.privacy_accepted_at),
            "history": [
                {"version": (details or {}).get("version"), "accepted_at": _iso(at)}
                for at, details in history
            ],
        },
        "electronic_bills": {"opted_in": user.ebill_opt_in},
    }


def _sessions(db: Session, user: User, now: datetime) -> list[dict[str, Any]]:
    rows = db.scalars(
        select(LoginSession)
        .where(LoginSession.user_id == user.id, LoginSession.revoked_at.is_(None),
               LoginSession.expires_at > now)
        .order_by(LoginSession.created_at)
    )
    return [
        {"started_at": _iso(row.auth_time), "methods": list(row.amr), "level": row.acr,
         "remember_me": row.remember, "expires_at": _iso(row.expires_at)}
        for row in rows
    ]


def _portals(db: Session, user: User) -> list[dict[str, Any]]:
    rows = db.execute(
        select(Token.client_id, func.max(Token.issued_at))
        .where(Token.user_id == user.id)
        .group_by(Token.client_id)
        .order_by(Token.client_id)
    ).all()
    return [{"portal": client_id, "last_signed_in_at": _iso(at)} for client_id, at in rows]


def _messages(db: Session, user: User) -> list[dict[str, Any]]:
    """What was sent to the user: channel, subject, time. Not the body: it carries codes."""
    recipients = [value for value in (user.email, user.phone) if value]
    if not recipients:
        return []
    rows = db.scalars(
        select(OutboxMessage)
        .options(defer(OutboxMessage.body_text), defer(OutboxMessage.body_html))
        .where(OutboxMessage.tenant == user.tenant, OutboxMessage.recipient.in_(recipients))
        .order_by(OutboxMessage.created_at, OutboxMessage.id)
    )
    return [
        {"channel": row.channel, "to": row.recipient, "subject": row.subject,
         "created_at": _iso(row.created_at), "status": row.status, "sent_at": _iso(row.sent_at)}
        for row in rows
    ]


def _actor(row: AuditEvent, user: User) -> str:
    if row.actor_type == "user" and row.actor_id not in (None, str(user.id)):
        return "another user"
    return _ACTOR_LABELS.get(row.actor_type, row.actor_type)


def _security_events(db: Session, user: User, now: datetime) -> list[dict[str, Any]]:
    rows = db.scalars(
        select(AuditEvent)
        .where(AuditEvent.target_user_id == user.id,
               AuditEvent.at >= now - timedelta(days=RECENT_EVENTS_DAYS))
        .order_by(AuditEvent.at.desc(), AuditEvent.id.desc())
        .limit(MAX_EVENTS)
    )
    return [
        {"at": _iso(row.at), "event": row.event, "outcome": row.outcome, "by": _actor(row, user),
         "source_address": row.source_address if _actor(row, user) == "you" else None}
        for row in rows
    ]


def _support_actions(db: Session, user: User) -> list[dict[str, Any]]:
    """What support did to the account and why; not which staff member (their data)."""
    rows = db.scalars(
        select(AuditEvent)
        .where(AuditEvent.target_user_id == user.id, AuditEvent.actor_type == "staff")
        .order_by(AuditEvent.at.desc(), AuditEvent.id.desc())
        .limit(MAX_EVENTS)
    )
    return [
        {"at": _iso(row.at), "action": (row.details or {}).get("action") or row.event,
         "outcome": row.outcome, "reason": row.reason}
        for row in rows
    ]


# --- Consent -----------------------------------------------------------------------------------


def consent_due(tenant: TenantConfig, user: User) -> bool:
    """The user accepted an earlier privacy-policy version than the one the tenant publishes.

    An account with no acceptance on record (made by an upstream login, by support or by a
    test fixture) is not stopped here: the broker never showed it a policy to compare with.
    """
    return (user.privacy_version is not None
            and user.privacy_version != tenant.privacy_policy_version)


def accept_privacy_policy(
    db: Session, tenant: TenantConfig, user: User, *, source_address: str | None,
    now: datetime | None = None,
) -> None:
    """Store the accepted version and when, with an audit record as the consent's evidence."""
    user.privacy_version = tenant.privacy_policy_version
    user.privacy_accepted_at = now or utcnow()
    audit.record(db, CONSENT_EVENT, tenant=tenant.slug, actor_type="user", actor_id=user.id,
                 target_user_id=user.id, source_address=source_address,
                 version=tenant.privacy_policy_version)


# --- What deleting would do to shared customer accounts ---------------------------------------


@dataclass(frozen=True)
class LastOwnerAccount:
    """A customer account the user is the only owner of: its delegates lose access too."""

    customer_account_id: int
    number: str
    delegates: int


def last_owner_accounts(db: Session, user: User) -> list[LastOwnerAccount]:
    """Accounts that would be left without an owner; shown before the user confirms."""
    owned = db.execute(
        select(CustomerAccount.id, CustomerAccount.number)
        .join(Binding, Binding.customer_account_id == CustomerAccount.id)
        .where(Binding.user_id == user.id, Binding.role == "owner")
        .order_by(CustomerAccount.number)
    ).all()
    found = []
    for account_id, number in owned:
        counts = dict(
            db.execute(
                select(Binding.role, func.count(Binding.id))
                .where(Binding.customer_account_id == account_id)
                .group_by(Binding.role)
            ).all()
        )
        if counts.get("owner", 0) == 1:
            found.append(LastOwnerAccount(account_id, number, counts.get("delegate", 0)))
    return found


# --- Erasure -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Erasure:
    """What went. ``portals`` held tokens for ``subject``: tell them by back-channel logout."""

    user_id: int
    subject: str
    portals: set[str] = field(default_factory=set)
    removed: dict[str, int] = field(default_factory=dict)


def erase_account(
    db: Session,
    tenant: TenantConfig,
    user: User,
    *,
    hmac_key: str,
    actor_type: str,
    actor_id: int | str | None,
    reason: str | None = None,
    source_address: str | None = None,
    cause: str = "request",
) -> Erasure:
    """Delete ``user`` and everything naming them; pseudonymise their audit records.

    ``actor_type`` is ``user`` (self-service), ``staff`` (with ``reason``) or ``system``
    (``broker purge``; ``cause`` says why: unactivated, inactive). Runs in the caller's
    transaction; the caller commits, then notifies ``Erasure.portals``.
    """
    removed: dict[str, int] = {}
    personal = _personal_values(db, user)
    portals = set(db.scalars(select(Token.client_id).where(Token.user_id == user.id).distinct()))

    def count(name: str, statement: Any) -> None:
        removed[name] = removed.get(name, 0) + int(db.execute(statement).rowcount or 0)

    _remove_bindings(db, tenant, user, removed, actor_type=actor_type, actor_id=actor_id)
    count("tokens", delete(Token).where(Token.user_id == user.id))
    count("authorization_codes",
          delete(AuthorizationCode).where(AuthorizationCode.user_id == user.id))
    count("login_sessions", delete(LoginSession).where(LoginSession.user_id == user.id))
    count("linked_identities",
          delete(FederatedIdentity).where(FederatedIdentity.user_id == user.id))
    count("recovery_codes", delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    contacts = [value for value in (user.email, user.phone) if value]
    count("verifications", delete(Verification).where(
        or_(Verification.user_id == user.id,
            (Verification.tenant == tenant.slug) & Verification.target.in_(contacts))))
    count("messages", delete(OutboxMessage).where(
        OutboxMessage.tenant == tenant.slug,
        or_(OutboxMessage.recipient.in_(contacts),
            OutboxMessage.id.in_(_notices_to_former_addresses(db, user.id)))))
    removed["messages"] += _scrub_messages_naming(db, tenant.slug, personal)
    count("invitations", delete(Invitation).where(
        Invitation.tenant == tenant.slug,
        or_(Invitation.email.in_(contacts),
            (Invitation.inviter_user_id == user.id) & Invitation.accepted_at.is_(None))))
    keys = [f"password-change:{user.id}", totp_attempt_key(user.id)]
    if user.email:
        keys += [activation_attempt_key(hmac_key, tenant.slug, user.email),
                 unknown_email_key(tenant.slug, user.email, hmac_key)]
    count("attempt_counters", delete(AttemptCounter).where(AttemptCounter.key.in_(keys)))
    removed["flows"] = _remove_flows(db, tenant.slug, user.id, personal)
    removed["audit_records_pseudonymised"] = _pseudonymise_audit(db, user.id, personal)
    audit.record(
        db, "account_erased", tenant=tenant.slug, actor_type=actor_type, actor_id=actor_id,
        target_user_id=user.id, source_address=source_address if actor_type != "user" else None,
        reason=_scrub_text(reason, personal) if reason else None, cause=cause,
        portals_notified=sorted(portals), **{k: v for k, v in removed.items() if v},
    )
    subject, user_id = user.subject, user.id
    db.execute(delete(User).where(User.id == user_id).execution_options(
        synchronize_session=False))
    db.expunge(user)
    return Erasure(user_id=user_id, subject=subject, portals=portals, removed=removed)


def _notices_to_former_addresses(db: Session, user_id: int) -> list[int]:
    """The mails that told the person's former addresses of a change (flows.profile): the
    address is in no row of the person's any more, only in those mails."""
    details = db.scalars(select(AuditEvent.details).where(
        AuditEvent.target_user_id == user_id, AuditEvent.event == "email_changed"))
    return [int(found["notice_message_id"]) for found in details
            if found and found.get("notice_message_id")]


def _personal_values(db: Session, user: User) -> list[str]:
    """The strings that name the person: to be found and replaced in what stays."""
    values = {user.email, user.name, user.phone}
    for email, name in db.execute(
        select(FederatedIdentity.email, FederatedIdentity.display_name)
        .where(FederatedIdentity.user_id == user.id)
    ):
        values.update((email, name))
    return sorted((v for v in values if v and len(v.strip()) >= 3), key=len, reverse=True)


def _remove_bindings(
    db: Session, tenant: TenantConfig, user: User, removed: dict[str, int], *,
    actor_type: str, actor_id: int | str | None,
) -> None:
    """The user's bindings go; where they were the last owner, the delegates' go too: a
    delegation is the owner's grant, and nobody would be left to manage it."""
    orphaned = {account.customer_account_id for account in last_owner_accounts(db, user)}
    delegates = list(db.scalars(
        select(Binding).where(Binding.customer_account_id.in_(orphaned),
                              Binding.role == "delegate", Binding.user_id != user.id)
    )) if orphaned else []
    for binding in delegates:
        audit.record(
            db, "customer_unbound", tenant=tenant.slug, actor_type=actor_type, actor_id=actor_id,
            target_user_id=binding.user_id, reason="last_owner_erased",
            customer_account_id=binding.customer_account_id, role=binding.role,
        )
        db.delete(binding)
    own = list(db.scalars(select(Binding).where(Binding.user_id == user.id)))
    for binding in own:
        db.delete(binding)
    db.flush()
    removed["bindings"] = len(own)
    removed["delegate_bindings"] = len(delegates)


def _mentions(value: Any, user_id: int, personal: list[str]) -> bool:
    if isinstance(value, dict):
        return any(
            (key in ("user_id", "link_user_id") and item == user_id)
            or _mentions(item, user_id, personal)
            for key, item in value.items()
        )
    if isinstance(value, list):
        return any(_mentions(item, user_id, personal) for item in value)
    if isinstance(value, str):
        folded = value.casefold()
        return any(p.casefold() in folded for p in personal)
    return False


def _remove_flows(db: Session, tenant: str, user_id: int, personal: list[str]) -> int:
    """Journeys in progress of this user (they live minutes; the table stays small)."""
    doomed = [
        flow.id for flow in db.scalars(select(Flow).where(Flow.tenant == tenant))
        if _mentions(flow.data, user_id, personal)
    ]
    if not doomed:
        return 0
    result = db.execute(delete(Flow).where(Flow.id.in_(doomed)).execution_options(
        synchronize_session=False))
    return int(result.rowcount or 0)


def _scrub_text(text: str, personal: list[str]) -> str:
    for value in personal:
        start = text.casefold().find(value.casefold())
        while start >= 0:
            text = text[:start] + ERASED + text[start + len(value):]
            start = text.casefold().find(value.casefold(), start + len(ERASED))
    return text


def _scrub(value: Any, personal: list[str]) -> Any:
    if isinstance(value, dict):
        return {key: _scrub(item, personal) for key, item in value.items()}
    if isinstance(value, list):
        return [_scrub(item, personal) for item in value]
    if isinstance(value, str):
        return _scrub_text(value, personal)
    return value


def _names_anyone(text: str, personal: list[str]) -> bool:
    folded = text.casefold()
    return any(value.casefold() in folded for value in personal)


def _scrub_messages_naming(db: Session, tenant: str, personal: list[str]) -> int:
    """Messages to other people that name the person (an invitation "from Kari"): an unsent
    one is dropped (a dead one too: support could send it again), a sent one keeps its record
    with the name replaced, also where the HTML part holds it escaped (O&#39;Brien)."""
    if not personal:
        return 0
    # Bodies are sealed, so the database can only match subjects; a body is opened and read
    # here. A delivered message's body is already gone (worker.REDACTED_BODY): only its
    # subject can name anyone, so only unsent messages are read whole.
    subject = func.lower(OutboxMessage.subject)
    candidates = db.scalars(select(OutboxMessage).where(
        OutboxMessage.tenant == tenant,
        or_(OutboxMessage.status != "sent", *[subject.contains(v.lower()) for v in personal])))
    rows = [message for message in candidates
            if _names_anyone(f"{message.subject} {message.body_text}", personal)]
    in_html = sorted({*personal, *(str(escape(value)) for value in personal)},
                     key=len, reverse=True)
    dropped = 0
    for message in rows:
        if message.status != "sent":
            db.delete(message)
            dropped += 1
            continue
        message.subject = _scrub_text(message.subject, personal)
        message.body_text = _scrub_text(message.body_text, personal)
        message.body_html = _scrub_text(message.body_html, in_html) if message.body_html else None
        message.last_error = None
    db.flush()
    return dropped


def _pseudonymise_audit(db: Session, user_id: int, personal: list[str]) -> int:
    """Replace the person's email, name and phone where the log's records of them hold any.

    The audit log is append-only for everything else (``broker.staff.audit_log``); this is
    the one rewrite the law asks for, done with a Core UPDATE by primary key.
    """
    if not personal:
        return 0
    table = AuditEvent.__table__
    rows = db.execute(
        select(table.c.id, table.c.reason, table.c.details).where(
            or_(table.c.target_user_id == user_id,
                (table.c.actor_type == "user") & (table.c.actor_id == str(user_id)))
        )
    ).all()
    changed = 0
    for row_id, reason, details in rows:
        new_reason = _scrub_text(reason, personal) if reason else reason
        new_details = _scrub(details or {}, personal)
        if new_reason != reason or new_details != (details or {}):
            db.execute(update(table).where(table.c.id == row_id)
                       .values(reason=new_reason, details=new_details))
            changed += 1
    return changed
