"""Callers as principals: named API keys with a role, stored as digests, and the
development mode where no key exists. No HTTP and no SQL here."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from parley.domain.errors import (
    DatabaseUnavailableError,
    InvalidKeyNameError,
    KeyExistsError,
    KeyNotFoundError,
)
from parley.domain.ports import KeyStore

# What every secret starts with: scanners (and people) can tell a Parley key on sight.
SECRET_PREFIX = "parley_"
# Names are admin-made, go into logs and one day a metric label: short and plain.
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
# "Last used" is written at most this often per key: a write per request costs more than
# the precision is worth.
LAST_USED_RESOLUTION = timedelta(minutes=1)
# The names the keys from PARLEY_API_KEYS act under: the first is bootstrap-1, and so on
# (names made with ``create`` cannot take this form).
BOOTSTRAP_PREFIX = "bootstrap-"


class Role(StrEnum):
    CLIENT = "client"  # reads goals; its own conversations and their messages
    AGENT = "agent"  # a human agent: reads every conversation (the handoff comes next)
    ADMIN = "admin"  # everything: goals, keys, every conversation


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts as."""

    name: str | None  # the key's name; None in development mode (no keys at all)
    role: Role

    @property
    def owner_scope(self) -> str | None:
        """The owner whose conversations alone this principal sees; None: every one."""
        return self.name if self.role is Role.CLIENT else None


# Development mode: no key exists, anyone may do anything (refused in production).
DEVELOPMENT = Principal(name=None, role=Role.ADMIN)


@dataclass(frozen=True, slots=True)
class ApiKey:
    name: str
    role: Role
    digest: str  # SHA-256 of the secret, hex: the secret itself is never stored
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None

    @property
    def principal(self) -> Principal:
        return Principal(name=self.name, role=self.role)


def digest(secret: str) -> str:
    """A secret's digest. Secrets carry 256 random bits, so a plain hash is as strong as a
    slow one (a slow hash protects guessable passwords, not random tokens)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def check_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name) or name.startswith(BOOTSTRAP_PREFIX):
        raise InvalidKeyNameError(
            "key name must be 1-63 characters of a-z, 0-9, '.', '_' and '-',"
            f" starting with a letter or digit, and not {BOOTSTRAP_PREFIX}..."
        )
    return name


class KeyService:
    """Creates, lists and revokes keys, and tells who a presented secret belongs to."""

    def __init__(
        self,
        keys: KeyStore,
        now: Callable[[], datetime],
        *,
        bootstrap_secrets: tuple[str, ...] = (),
        open_allowed: bool = True,
        clock: Callable[[], float] = time.monotonic,
        open_recheck_seconds: float = 1.0,
    ) -> None:
        self._keys = keys
        self._now = now
        self._bootstrap = tuple(digest(secret) for secret in bootstrap_secrets)
        self._clock = clock
        self._open_recheck = open_recheck_seconds
        # Once any key has existed, the API stays closed: revoking the last key does
        # not open it to everyone.
        self._closed = bool(self._bootstrap) or not open_allowed
        self._open_checked_at: float | None = None

    async def create(self, name: str, role: Role) -> tuple[ApiKey, str]:
        """The new key and its secret, which is shown once and never stored."""
        secret = new_secret()
        key = ApiKey(
            name=check_name(name), role=role, digest=digest(secret), created_at=self._now()
        )
        if not await self._keys.add(key):
            raise KeyExistsError(name)
        self._closed = True
        return key, secret

    async def list(self) -> list[ApiKey]:
        return await self._keys.all()

    async def get(self, name: str) -> ApiKey:
        key = await self._keys.get(name)
        if key is None:
            raise KeyNotFoundError(name)
        return key

    async def revoke(self, name: str) -> ApiKey:
        """Revoked at once for every replica (each request reads its key). Revoking a
        revoked key changes nothing."""
        key = await self._keys.revoke(name, self._now())
        if key is None:
            raise KeyNotFoundError(name)
        return key

    async def any_exist(self) -> bool:
        """Whether any key exists or existed: one from PARLEY_API_KEYS or one made."""
        return bool(self._bootstrap) or await self._keys.any_exist()

    async def is_open(self) -> bool:
        """Development mode: no key was ever made (nor given in PARLEY_API_KEYS), and open
        mode is allowed (not in production). Read again at most every
        ``open_recheck_seconds``: a first key made on another replica closes this one
        within that."""
        if self._closed:
            return False
        now = self._clock()
        if self._open_checked_at is None or now - self._open_checked_at >= self._open_recheck:
            try:
                self._closed = await self._keys.any_exist()
            except DatabaseUnavailableError:
                if self._open_checked_at is None:
                    raise
                # What was last read stands: the request meets the outage itself.
            self._open_checked_at = now
        return not self._closed

    async def authenticate(self, secret: str) -> Principal | None:
        """The principal a secret is the key of, or None (unknown or revoked)."""
        presented = digest(secret)
        # Every bootstrap digest is compared, so timing says nothing of which matched.
        matched = [hmac.compare_digest(presented, known) for known in self._bootstrap]
        if any(matched):
            return Principal(name=f"{BOOTSTRAP_PREFIX}{matched.index(True) + 1}", role=Role.ADMIN)
        key = await self._keys.by_digest(presented)
        if key is None or key.revoked_at is not None:
            return None
        if not hmac.compare_digest(presented, key.digest):  # the store's match, re-checked
            return None
        now = self._now()
        if key.last_used_at is None or now - key.last_used_at >= LAST_USED_RESOLUTION:
            await self._keys.touch(key.name, now)
        return key.principal
