"""API keys in PostgreSQL: who may use the gateway, as which tenant, how fast, how urgently.

Only a SHA-256 of each key is stored. Keys are 32 random bytes, so a plain hash is enough: a
slow password hash protects guessable secrets, and these are not guessable. Every key of one
tenant shares the tenant's webhook secret, so a receiver verifies one secret per tenant.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass

from sqlalchemy import Engine, select, update
from sqlalchemy.exc import OperationalError

from infermq.errors import InvalidApiKey
from infermq.jobs import utcnow
from infermq.tables import api_keys
from stores.jobstore import database_unavailable

KEY_PREFIX = "imq_"


@dataclass(frozen=True)
class ApiKey:
    """A stored key as the gateway needs it (never the key itself)."""

    id: str
    tenant: str
    priority_ceiling: int
    rate_per_minute: int
    webhook_secret: str
    revoked: bool


@dataclass(frozen=True)
class CreatedKey:
    """A new key: ``secret`` is shown once and never stored."""

    id: str
    secret: str
    tenant: str
    webhook_secret: str


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(
    engine: Engine, tenant: str, priority_ceiling: int = 9, rate_per_minute: int = 600
) -> CreatedKey:
    """Creates a key for ``tenant`` (reusing the tenant's webhook secret if it has one).

    Raises:
        ServiceUnavailable: PostgreSQL cannot be reached.
    """
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    key_id = str(uuid.uuid4())
    try:
        with engine.begin() as connection:
            webhook_secret = connection.execute(
                select(api_keys.c.webhook_secret).where(api_keys.c.tenant == tenant).limit(1)
            ).scalar() or secrets.token_hex(32)
            connection.execute(api_keys.insert().values(
                id=key_id, key_hash=hash_key(secret), tenant=tenant,
                priority_ceiling=priority_ceiling, rate_per_minute=rate_per_minute,
                webhook_secret=webhook_secret,
            ))
    except OperationalError as e:
        raise database_unavailable(engine, e) from e
    return CreatedKey(key_id, secret, tenant, webhook_secret)


def revoke_key(engine: Engine, key_id_or_secret: str) -> bool:
    """Revokes a key named by its id or by the key itself; returns whether one was revoked."""
    condition = (api_keys.c.id == key_id_or_secret) | (
        api_keys.c.key_hash == hash_key(key_id_or_secret))
    with engine.begin() as connection:
        changed = connection.execute(
            update(api_keys).where(condition, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=utcnow()).returning(api_keys.c.id)
        ).first()
    return changed is not None


def find_key(engine: Engine, secret: str) -> ApiKey:
    """The stored key whose hash matches ``secret``.

    Raises:
        InvalidApiKey: no key matches.
        ServiceUnavailable: PostgreSQL cannot be reached.
    """
    try:
        with engine.connect() as connection:
            record = connection.execute(
                select(api_keys).where(api_keys.c.key_hash == hash_key(secret))
            ).first()
    except OperationalError as e:
        raise database_unavailable(engine, e) from e
    if record is None:
        raise InvalidApiKey("unknown API key: create one with `infermq keys create <tenant>`")
    return ApiKey(record.id, record.tenant, record.priority_ceiling, record.rate_per_minute,
                  record.webhook_secret, record.revoked_at is not None)


def tenant_webhook_secret(engine: Engine, tenant: str) -> str | None:
    """The tenant's webhook secret, or None when the tenant has no key."""
    with engine.connect() as connection:
        value = connection.execute(
            select(api_keys.c.webhook_secret).where(api_keys.c.tenant == tenant).limit(1)
        ).scalar()
    return str(value) if value is not None else None
