"""KeyService: who a secret belongs to, written seldom, and when the API is open."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from parley.domain.errors import BudgetExceededError
from parley.domain.keys import (
    DEVELOPMENT,
    ApiKey,
    BudgetPeriod,
    KeyLimits,
    KeyService,
    Principal,
    Role,
)
from parley.testing import MemoryKeys


class Clock:
    def __init__(self) -> None:
        self.wall = datetime(2026, 12, 5, tzinfo=UTC)
        self.seconds = 0.0

    def now(self) -> datetime:
        return self.wall

    def monotonic(self) -> float:
        return self.seconds

    def advance(self, seconds: float) -> None:
        self.wall += timedelta(seconds=seconds)
        self.seconds += seconds


def _service(store: MemoryKeys, clock: Clock, **options: object) -> KeyService:
    return KeyService(store, clock.now, clock=clock.monotonic, **options)  # type: ignore[arg-type]


async def test_each_bootstrap_key_acts_as_its_own_admin() -> None:
    keys = _service(MemoryKeys(), Clock(), bootstrap_secrets=("one", "two"))
    assert await keys.authenticate("two") == Principal("bootstrap-2", Role.ADMIN)
    assert await keys.authenticate("one") == Principal("bootstrap-1", Role.ADMIN)
    assert await keys.authenticate("three") is None
    assert not await keys.is_open()


async def test_last_used_is_written_at_most_once_a_minute() -> None:
    store, clock = MemoryKeys(), Clock()
    keys = _service(store, clock)
    _, secret = await keys.create("shop", Role.CLIENT)
    writes = 0
    touch = store.touch

    async def counted(name: str, when: datetime) -> None:
        nonlocal writes
        writes += 1
        await touch(name, when)

    store.touch = counted  # type: ignore[method-assign]
    for _ in range(5):
        assert await keys.authenticate(secret) == Principal("shop", Role.CLIENT)
        clock.advance(10)
    assert writes == 1
    clock.advance(60)
    await keys.authenticate(secret)
    assert writes == 2
    assert store.keys["shop"].last_used_at == clock.now()


async def test_a_first_key_made_elsewhere_closes_the_api_within_the_recheck() -> None:
    store, clock = MemoryKeys(), Clock()
    here, elsewhere = _service(store, clock), _service(store, clock)
    assert await here.is_open()
    await elsewhere.create("first", Role.ADMIN)
    assert await here.is_open()  # read less than a second ago
    clock.advance(1.0)
    assert not await here.is_open()


async def test_production_is_never_open_and_a_revoked_key_is_no_one() -> None:
    store, clock = MemoryKeys(), Clock()
    assert not await _service(store, clock, open_allowed=False).is_open()
    keys = _service(store, clock)
    assert await keys.is_open()
    assert DEVELOPMENT.owner_scope is None
    _, secret = await keys.create("gone", Role.AGENT)
    await keys.revoke("gone")
    assert await keys.authenticate(secret) is None
    assert Principal("c", Role.CLIENT).owner_scope == "c"
    assert Principal("a", Role.AGENT).owner_scope is None


@pytest.mark.parametrize(
    ("period", "start", "end"),
    [
        (BudgetPeriod.DAY, datetime(2026, 12, 31, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)),
        (BudgetPeriod.WEEK, datetime(2026, 12, 28, tzinfo=UTC), datetime(2027, 1, 4, tzinfo=UTC)),
        (BudgetPeriod.MONTH, datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)),
    ],
)
def test_a_budget_period_starts_and_resets_on_utc_calendar_boundaries(
    period: BudgetPeriod, start: datetime, end: datetime
) -> None:
    moment = datetime(2026, 12, 31, 23, 59, tzinfo=UTC)  # a Thursday
    assert (period.start(moment), period.end(moment)) == (start, end)


async def test_spend_counts_only_the_days_of_the_current_period() -> None:
    """Yesterday's spend is outside today's budget, inside this month's."""
    store, clock = MemoryKeys(), Clock()
    keys = _service(store, clock)
    daily = KeyLimits(budget_usd=1.0, budget_period=BudgetPeriod.DAY)
    key, _ = await keys.create("shop", Role.CLIENT, daily)
    today = clock.now().date()
    store.spend["shop"] = {today - timedelta(days=1): 700_000_000, today: 400_000_000}
    spend = await keys.spend(key)
    assert spend.usd == pytest.approx(0.4)
    assert spend.remaining_usd == pytest.approx(0.6)
    monthly, _ = await keys.create("monthly", Role.CLIENT)
    store.spend["monthly"] = store.spend["shop"]
    spends = await keys.spends([key, monthly])
    assert spends["shop"] == spend
    assert spends["monthly"].usd == pytest.approx(1.1)
    cap = keys.spend_cap(key.principal)
    assert cap is not None
    assert (cap.key_name, cap.since, cap.limit_nanos) == ("shop", today, 1_000_000_000)
    cap.check(999_999_999, clock.now())
    with pytest.raises(BudgetExceededError) as refused:
        cap.check(1_000_000_000, clock.now())
    assert refused.value.resets_at == datetime(2026, 12, 6, tzinfo=UTC)
    assert refused.value.retry_after_seconds == 86_400
    assert keys.spend_cap(monthly.principal) is None  # no budget: nothing to check


class Changes:
    """A change feed: its epoch moves when told of a change; None: it cannot vouch."""

    def __init__(self) -> None:
        self.current: int | None = 0

    def epoch(self) -> int | None:
        return self.current


class CountedKeys(MemoryKeys):
    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self.during_read: list[object] = []  # run once, in the next read

    async def by_digest(self, digest: str) -> ApiKey | None:
        self.reads += 1
        for action in self.during_read:
            action()  # type: ignore[operator]
        self.during_read.clear()
        return await super().by_digest(digest)


def _following() -> tuple[CountedKeys, Clock, Changes, KeyService]:
    """A KeyService that keeps keys while ``Changes`` vouches, over a counted store."""
    store, clock, changes = CountedKeys(), Clock(), Changes()
    keys = _service(store, clock)
    keys.follow(changes)
    return store, clock, changes, keys


async def test_a_kept_key_is_read_again_only_once_the_feed_tells_of_a_change() -> None:
    store, clock, changes, keys = _following()
    _, secret = await keys.create("shop", Role.CLIENT, KeyLimits(rpm=60))
    for _ in range(3):
        assert await keys.authenticate(secret) == Principal("shop", Role.CLIENT, KeyLimits(rpm=60))
    assert store.reads == 1
    # Changed on another replica (the store shared): kept until the feed tells.
    await _service(store, clock).update_limits("shop", {"rpm": 5})
    changes.current = 1
    principal = await keys.authenticate(secret)
    assert principal is not None
    assert principal.limits.rpm == 5
    assert store.reads == 2
    await _service(store, clock).revoke("shop")
    changes.current = 2
    assert await keys.authenticate(secret) is None


async def test_keys_are_read_on_every_request_while_the_feed_cannot_vouch() -> None:
    store, clock, changes, keys = _following()
    _, secret = await keys.create("shop", Role.CLIENT)
    await keys.authenticate(secret)
    changes.current = None  # the listener lost its connection, or its ping is late
    await keys.authenticate(secret)
    await keys.authenticate(secret)
    assert store.reads == 3
    await _service(store, clock).revoke("shop")  # told to no one
    assert await keys.authenticate(secret) is None
    changes.current = 0  # back, with no change told since: what was kept is not trusted
    assert await keys.authenticate(secret) is None


async def test_a_key_changed_here_is_read_again_before_the_feed_tells() -> None:
    _store, _clock, _changes, keys = _following()
    _, secret = await keys.create("shop", Role.CLIENT)
    assert await keys.authenticate(secret) is not None
    await keys.revoke("shop")
    assert await keys.authenticate(secret) is None  # the feed's epoch unchanged


async def test_a_key_read_while_a_change_is_told_is_not_kept() -> None:
    """The read may have seen the key from before the change: kept, it would outlive it."""
    store, _clock, changes, keys = _following()
    _, secret = await keys.create("shop", Role.CLIENT)

    def told() -> None:
        changes.current = 1

    store.during_read.append(told)
    await keys.authenticate(secret)
    await keys.authenticate(secret)
    assert store.reads == 2


async def test_unknown_secrets_are_never_kept() -> None:
    store, _clock, _changes, keys = _following()
    await keys.create("shop", Role.CLIENT)
    for attempt in range(3):
        assert await keys.authenticate(f"parley_guess{attempt}") is None
    assert await keys.authenticate("parley_guess0") is None
    assert store.reads == 4
    _, later = await keys.create("later", Role.CLIENT)  # made after a miss: found at once
    assert await keys.authenticate(later) is not None


async def test_a_kept_key_records_its_last_use_at_most_once_a_minute() -> None:
    store, clock, _changes, keys = _following()
    _, secret = await keys.create("shop", Role.CLIENT)
    for _ in range(5):
        await keys.authenticate(secret)
        clock.advance(10)
    assert store.keys["shop"].last_used_at == datetime(2026, 12, 5, tzinfo=UTC)
    clock.advance(20)
    await keys.authenticate(secret)
    assert store.keys["shop"].last_used_at == clock.now()
    assert store.reads == 1
