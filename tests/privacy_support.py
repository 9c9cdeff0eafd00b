"""Shared pieces of the privacy tests: people with data in every table, a logged-in browser,
a scan of every table for a person's values."""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from broker import audit, login_session
from broker.customers.digests import national_id_hmac
from broker.models import (
    Base,
    Binding,
    CustomerAccount,
    FederatedIdentity,
    LoginSession,
    OutboxMessage,
    RecoveryCode,
    Token,
    User,
    utcnow,
)
from broker.passwords import hash_password
from broker.security import sha256_hex

NO = "fjordvarme"
PASSWORD = "Tr0ll-Fjord-Sky"


def add_person(db, config, tenant: str, email: str, name: str, phone: str | None = None,  # type: ignore[no-untyped-def]
               *, password: bool = True, **fields: Any) -> User:
    user = User(tenant=tenant, subject=secrets.token_hex(16), email=email, email_verified=True,
                name=name, phone=phone, status="active", privacy_version="1",
                privacy_accepted_at=utcnow(), locale="en",
                password_hash=hash_password(config.tenants[tenant], PASSWORD) if password
                else None, **fields)
    db.add(user)
    db.flush()
    return user


def rich_account(app) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """Kari (owner, password, TOTP, a linked MitID, a token at the demo portal) and her
    brother Ola (a delegate on her customer account); both with audit records and mail."""
    state = app.extensions["broker"]
    config = state.config
    with state.sessions() as db, db.begin():
        kari = add_person(db, config, NO, "kari@example.no", "Kari Nordmann", "+4791234567",
                          totp_secret="JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP")
        ola = add_person(db, config, NO, "ola@example.no", "Ola Nordmann", "+4798765432")
        account = CustomerAccount(tenant=NO, number="700123", kind="private",
                                  name="Register Holder", address_label="Fjordveien 1")
        db.add(account)
        db.flush()
        db.add(Binding(user_id=kari.id, customer_account_id=account.id, role="owner",
                       proof="pin"))
        db.add(Binding(user_id=ola.id, customer_account_id=account.id, role="delegate",
                       proof="invitation", granted_by_user_id=kari.id))
        db.add(FederatedIdentity(tenant=NO, user_id=kari.id, provider="mitid",
                                 subject="mitid-uuid-4711", email="kari.mitid@example.no",
                                 display_name="Kari N. (MitID)",
                                 national_id_hmac=national_id_hmac(config.hmac_key,
                                                                   "010190-1234", "NO")))
        db.add(RecoveryCode(user_id=kari.id, code_hmac=sha256_hex("recovery")))
        now = utcnow()
        db.add(Token(tenant=NO, client_id="demo-portal", user_id=kari.id, family_id="fam1",
                     access_token_sha256=sha256_hex("access-kari"),
                     refresh_token_sha256=sha256_hex("refresh-kari"), scope="openid",
                     auth_time=now, access_expires_at=now + timedelta(minutes=10),
                     refresh_expires_at=now + timedelta(days=30)))
        db.add(OutboxMessage(tenant=NO, channel="email", recipient="kari@example.no",
                             subject="Activate", body_text="Hello Kari Nordmann, code 123456",
                             message_key=secrets.token_hex(8), status="sent", sent_at=now))
        db.add(OutboxMessage(tenant=NO, channel="email", recipient="ola@example.no",
                             subject="Invitation", body_text="Kari Nordmann invites you",
                             message_key=secrets.token_hex(8)))
        audit.record(db, "customer_bound", tenant=NO, actor_type="user", actor_id=kari.id,
                     target_user_id=kari.id, source_address="192.0.2.7",
                     customer_account_id=account.id, role="owner")
        audit.record(db, "password_reset_sent", tenant=NO, actor_type="staff", actor_id=1,
                     target_user_id=kari.id, source_address="198.51.100.1",
                     reason="Kari Nordmann called from +4791234567", action="send_password_reset",
                     note="asked via kari@example.no")
        audit.record(db, "profile_updated", tenant=NO, actor_type="user", actor_id=ola.id,
                     target_user_id=ola.id, source_address="203.0.113.9")
        ids = {"kari": kari.id, "ola": ola.id, "account": account.id,
               "kari_subject": kari.subject}
    return ids


def logged_in(app, client, user_id: int, *, minutes_ago: float = 0,  # type: ignore[no-untyped-def]
              tenant: str = NO) -> None:
    """Give the test client a session cookie, as if the user logged in ``minutes_ago``."""
    state = app.extensions["broker"]
    with state.sessions() as db, db.begin():
        user = db.get(User, user_id)
        login, token = login_session.start(db, state.config.tenants[tenant], user, amr=["pwd"])
        db.get(LoginSession, login.id).auth_time = utcnow() - timedelta(minutes=minutes_ago)
    client.set_cookie(login_session.cookie_name(tenant), token, path=f"/t/{tenant}")


def rows_naming(app, values: list[str]) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """Every row of every table whose text holds one of ``values`` (case-insensitive)."""
    found = []
    folded = [v.casefold() for v in values]
    with app.extensions["broker"].sessions() as db:
        for table in Base.metadata.sorted_tables:
            for row in db.execute(select(table)).all():
                text = repr(tuple(row)).casefold()
                for value in folded:
                    if value in text:
                        found.append((table.name, value))
    return found
