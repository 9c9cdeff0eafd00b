"""What a broker process keeps in memory: config, database engine, per-tenant services.

Built once by the app factory; requests only read it. ``current()`` returns it inside a request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flask import current_app, g
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from .config import BrokerConfig, TenantConfig


@dataclass
class BrokerState:
    config: BrokerConfig
    engine: Engine
    sessions: sessionmaker[Session]
    services: dict[str, Any] = field(default_factory=dict)

    def tenant(self, slug: str) -> TenantConfig | None:
        return self.config.tenants.get(slug)


def current() -> BrokerState:
    return current_app.extensions["broker"]


def db() -> Session:
    """The request's database session, opened on first use and closed at teardown."""
    if "db" not in g:
        g.db = current().sessions()
    return g.db
