"""Shared pieces for the customer register, binding, delegation and forgot-PIN tests."""

from __future__ import annotations

import csv
import io
from typing import Any

from sqlalchemy.orm import Session

from broker import db as database
from broker.config import BrokerConfig
from broker.customers.importer import COLUMNS, import_stream
from broker.models import Tenant, User
from broker.security import new_token

from .conftest import make_config


def customer_rows(count: int, *, start: int = 100000) -> list[dict[str, Any]]:
    """``count`` Norwegian-looking customers with every proof filled in."""
    return [
        {
            "customer_number": str(start + i),
            "kind": "company" if i % 10 == 0 else "private",
            "name": f"Kari Nordmann {i}",
            "address": f"Fjordveien {i}, 2000 Lillestrøm",
            "email": f"Kunde{i}@Example.NO",
            "phone": f"+47 9{i % 10000000:07d}",
            "national_id": f"{i % 1000000:06d}-{i % 10000:04d}",
            "pin": f"{(i * 7919) % 1000000:06d}",
            "bill_code": f"BC-{i:06d}",
            "invoice_numbers": [f"F{i}01", f"F{i}02"],
        }
        for i in range(count)
    ]


def as_csv(rows: list[dict[str, Any]], columns: tuple[str, ...] = COLUMNS) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        invoices = row.get("invoice_numbers")
        flat = {**row}
        if isinstance(invoices, list):
            flat["invoice_numbers"] = ";".join(invoices)
        writer.writerow(flat)
    return buffer.getvalue()


class Broker:
    """A migrated database with the demo tenants, and a session factory on it."""

    def __init__(self, database_url: str) -> None:
        self.config: BrokerConfig = make_config(database_url)
        self.engine = database.make_engine(database_url)
        self.sessions = database.make_sessionmaker(self.engine)
        with database.transaction(self.sessions) as db:
            for slug, tenant in self.config.tenants.items():
                db.add(Tenant(slug=slug, name=tenant.name))

    @property
    def hmac_key(self) -> str:
        return self.config.hmac_key

    def tenant(self, slug: str):  # type: ignore[no-untyped-def]
        return self.config.tenants[slug]

    def load(self, slug: str, rows: list[dict[str, Any]]):  # type: ignore[no-untyped-def]
        return import_stream(
            self.engine, self.tenant(slug), self.hmac_key, io.StringIO(as_csv(rows)), "csv"
        )

    def session(self) -> Session:
        return self.sessions()

    def add_user(self, db: Session, slug: str, email: str, **fields: Any) -> User:
        user = User(
            tenant=slug, subject=new_token(16), email=email, email_verified=True,
            status="active", **fields,
        )
        db.add(user)
        db.flush()
        return user

    def close(self) -> None:
        self.engine.dispose()
