"""Callers as principals: named API keys with a role, stored as digests, and the
development mode where no key exists. No HTTP and no SQL here."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from parley.domain.errors import (
    DatabaseUnavailableError,
    InvalidKeyNameError,
    KeyExistsError,
    KeyNotFoundError,
)
from parley.domain.models import NANOS_PER_USD
from parley.domain.ports import KeyChanges, KeyStore, SpendCap

# What every secret starts with: scanners (and people) can tell a Parley key on sight.
SECRET_PREFIX = "parley_"
# Names are admin-made, go into logs and one day a metric label: short and plain.
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
# "Last used" is written at most this often per key: a write per request costs more than
# the precision is worth.
LAST_USED_RESOLUTION = timedelta(minutes=1)
# Keys kept in memory per replica, at most (then dropped all together and read again):
# more than any deployment has, few enough that the memory is bounded.
MAX_CACHED_KEYS = 10_000
# The names the keys from PARLEY_API_KEYS act under: the first is bootstrap-1, and so on
# (names made with ``create`` cannot take this form).
BOOTSTRAP_PREFIX = "bootstrap-"


class Role(StrEnum):
    CLIENT = "client"  # reads goals; its own conversations and their messages
    AGENT = "agent"  # a human agent: reads every conversation (the handoff comes next)
    ADMIN = "admin"  # everything: goals, keys, every conversation


class BudgetPeriod(StrEnum):
    """A budget's period, in UTC: it resets at midnight, on Monday, on the 1st."""

    DAY = "day"
    WEEK = "week"
    MONTH = "month"

    def start(self, now: datetime) -> datetime:
        midnight = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        if self is BudgetPeriod.DAY:
            return midnight
        if self is BudgetPeriod.WEEK:
            return midnight - timedelta(days=midnight.weekday())
        return midnight.replace(day=1)

    def end(self, now: datetime) -> datetime:
        """When the period ``now`` is in resets."""
        start = self.start(now)
        if self is BudgetPeriod.DAY:
            return start + timedelta(days=1)
        if self is BudgetPeriod.WEEK:
            return start + timedelta(weeks=1)
        return (start + timedelta(days=32)).replace(day=1)


def to_nanos(usd: float) -> int:
    return round(usd * NANOS_PER_USD)


def to_usd(nanos: int) -> float:
    return nanos / NANOS_PER_USD


@dataclass(frozen=True, slots=True)
class KeyLimits:
    """What a key may spend and how fast it may call; None: no limit of that kind."""

    budget_usd: float | None = None
    # The period spend is counted over (and shown for, with or without a budget).
    budget_period: BudgetPeriod = BudgetPeriod.MONTH
    rpm: int | None = None  # requests a minute
    tpm: int | None = None  # LLM tokens a minute (prompt and completion)


NO_LIMITS = KeyLimits()


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts as."""

    name: str | None  # the key's name; None in development mode (no keys at all)
    role: Role
    limits: KeyLimits = field(default=NO_LIMITS)

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
    limits: KeyLimits = field(default=NO_LIMITS)

    @property
    def principal(self) -> Principal:
        return Principal(name=self.name, role=self.role, limits=self.limits)


@dataclass(frozen=True, slots=True)
class Spend:
    """A key's spend in its budget's current period."""

    usd: float
    period_start: datetime
    resets_at: datetime
    budget_usd: float | None

    @property
    def remaining_usd(self) -> float | None:
        return None if self.budget_usd is None else max(0.0, self.budget_usd - self.usd)


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
        # Keys kept by digest while the change feed vouches for them (``follow``).
        self._changes: KeyChanges | None = None
        self._cached: dict[str, ApiKey] = {}
        self._cached_stamp: tuple[int, int] | None = None
        self._changed_here = 0

    async def create(
        self, name: str, role: Role, limits: KeyLimits = NO_LIMITS
    ) -> tuple[ApiKey, str]:
        """The new key and its secret, which is shown once and never stored."""
        secret = new_secret()
        key = ApiKey(
            name=check_name(name),
            role=role,
            digest=digest(secret),
            created_at=self._now(),
            limits=limits,
        )
        if not await self._keys.add(key):
            raise KeyExistsError(name)
        self._closed = True
        return key, secret

    async def all(self) -> list[ApiKey]:
        return await self._keys.all()

    async def oldest_names(self, limit: int) -> list[str]:
        """The names of the first ``limit`` keys: the bootstrap ones, then those made
        first (the same list on every replica)."""
        bootstrap = [f"{BOOTSTRAP_PREFIX}{n}" for n in range(1, len(self._bootstrap) + 1)]
        made = sorted(await self._keys.all(), key=lambda key: (key.created_at, key.name))
        return [*bootstrap, *(key.name for key in made)][:limit]

    async def get(self, name: str) -> ApiKey:
        key = await self._keys.get(name)
        if key is None:
            raise KeyNotFoundError(name)
        return key

    async def update_limits(self, name: str, changes: Mapping[str, Any]) -> ApiKey:
        """Change some of a key's limits (None removes one): in effect on its next request,
        on every replica (see ``revoke``)."""
        key = await self.get(name)
        updated = await self._keys.set_limits(name, dataclasses.replace(key.limits, **changes))
        self._forget_kept_keys()
        if updated is None:
            raise KeyNotFoundError(name)
        return updated

    async def revoke(self, name: str) -> ApiKey:
        """Revoked at once on this replica; on the others at their next request on SQLite
        (the key epoch moves with it), and once told on PostgreSQL (a NOTIFY, milliseconds;
        see ``follow``). Revoking a revoked key changes nothing."""
        key = await self._keys.revoke(name, self._now())
        self._forget_kept_keys()
        if key is None:
            raise KeyNotFoundError(name)
        return key

    async def spend(self, key: ApiKey | Principal) -> Spend:
        """What ``key`` spent in its budget period so far (stored with each reply)."""
        now = self._now()
        period = key.limits.budget_period
        start = period.start(now)
        nanos = 0 if key.name is None else await self._keys.spent(key.name, start.date())
        return Spend(to_usd(nanos), start, period.end(now), key.limits.budget_usd)

    async def spends(self, keys: Sequence[ApiKey]) -> dict[str, Spend]:
        """Each key's spend in its own period, in one read."""
        now = self._now()
        earliest = min((BudgetPeriod.WEEK.start(now), BudgetPeriod.MONTH.start(now)))
        daily = await self._keys.spent_daily(earliest.date())
        spends = {}
        for key in keys:
            period = key.limits.budget_period
            start = period.start(now)
            nanos = sum(
                cost for day, cost in daily.get(key.name, {}).items() if day >= start.date()
            )
            spends[key.name] = Spend(to_usd(nanos), start, period.end(now), key.limits.budget_usd)
        return spends

    def spend_cap(self, principal: Principal) -> SpendCap | None:
        """The principal's budget for this period, for the transaction that opens its turn
        to check (before any LLM call: turns already under way finish, so the overshoot
        is bounded by them); None: no budget."""
        budget = principal.limits.budget_usd
        if budget is None or principal.name is None:
            return None
        now = self._now()
        period = principal.limits.budget_period
        return SpendCap(principal.name, period.start(now).date(), to_nanos(budget), period.end(now))

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
        key = await self._key(presented)
        if key is None or key.revoked_at is not None:
            return None
        if not hmac.compare_digest(presented, key.digest):  # the store's match, re-checked
            return None
        now = self._now()
        if key.last_used_at is None or now - key.last_used_at >= LAST_USED_RESOLUTION:
            await self._keys.touch(key.name, now)
            if presented in self._cached:
                self._cached[presented] = dataclasses.replace(key, last_used_at=now)
        return key.principal

    def follow(self, changes: KeyChanges | None) -> None:
        """Keep keys read while ``changes`` vouches that none changed (None: read every
        request's key)."""
        self._changes = changes
        self._cached.clear()

    def _stamp(self) -> tuple[int, int] | None:
        epoch = None if self._changes is None else self._changes.epoch()
        return None if epoch is None else (epoch, self._changed_here)

    async def _key(self, presented: str) -> ApiKey | None:
        """The key by its digest: kept from an earlier request while no key has changed
        since (on any replica, as far as the change feed can tell), read otherwise. Only
        keys found are kept: unknown secrets cannot fill the cache."""
        stamp = self._stamp()
        if stamp != self._cached_stamp:  # a change, or a lapse: nothing kept is trusted
            self._cached.clear()
            self._cached_stamp = stamp
        if stamp is not None:
            cached = self._cached.get(presented)
            if cached is not None:
                return cached
        key = await self._keys.by_digest(presented)
        # Kept only if nothing changed during the read: it may predate the change.
        if key is not None and stamp is not None and self._stamp() == stamp:
            if len(self._cached) >= MAX_CACHED_KEYS:
                self._cached.clear()
            self._cached[presented] = key
        return key

    def _forget_kept_keys(self) -> None:
        """A key changed here: every kept key is read again at once (other replicas drop
        theirs when the change feed tells them)."""
        self._changed_here += 1
        self._cached.clear()
