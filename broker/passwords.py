"""argon2id password hashing with each tenant's parameters.

Hashers are built once per parameter set and kept; a hash made with older parameters is
reported as needing a rehash, which the login flow does right after a successful verify.
"""

from __future__ import annotations

from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from .config import TenantConfig


@lru_cache(maxsize=64)
def _hasher(time_cost: int, memory_kib: int, parallelism: int) -> PasswordHasher:
    return PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism)


def hasher_for(tenant: TenantConfig) -> PasswordHasher:
    return _hasher(tenant.argon2_time_cost, tenant.argon2_memory_kib, tenant.argon2_parallelism)


def hash_password(tenant: TenantConfig, password: str) -> str:
    return hasher_for(tenant).hash(password)


def verify_password(tenant: TenantConfig, stored_hash: str | None, password: str) -> bool:
    """True when ``password`` matches. With no stored hash, a dummy verify keeps the time equal."""
    hasher = hasher_for(tenant)
    try:
        matched = hasher.verify(stored_hash or dummy_hash(tenant), password)
        return matched and stored_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(tenant: TenantConfig, stored_hash: str) -> bool:
    return hasher_for(tenant).check_needs_rehash(stored_hash)


@lru_cache(maxsize=64)
def _dummy(time_cost: int, memory_kib: int, parallelism: int) -> str:
    return _hasher(time_cost, memory_kib, parallelism).hash("no such user: equal-time verify")


def dummy_hash(tenant: TenantConfig) -> str:
    """A hash with the tenant's parameters, verified when there is no user, so that timing
    does not reveal whether an email is registered."""
    return _dummy(tenant.argon2_time_cost, tenant.argon2_memory_kib, tenant.argon2_parallelism)
