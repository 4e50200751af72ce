"""What a limit check found lately: kept a while, forgotten on demand, bounded."""

from __future__ import annotations

from parley.domain.recent_checks import RecentChecks
from tests.support.metrics import FakeClock


def test_a_check_is_fresh_for_its_seconds_until_forgotten() -> None:
    clock = FakeClock()
    checks = RecentChecks(1.0, clock=clock)
    assert not checks.fresh("shop")
    checks.remember("shop")
    clock.advance(0.9)
    assert checks.fresh("shop")
    clock.advance(0.2)
    assert not checks.fresh("shop")
    checks.remember("shop")
    checks.forget("shop")
    assert not checks.fresh("shop")


def test_many_identities_never_grow_it_past_its_bound() -> None:
    checks = RecentChecks(max_identities=100)
    for number in range(1000):
        checks.remember(f"10.0.{number // 256}.{number % 256}")
        assert len(checks) <= 100
    assert checks.fresh("10.0.3.231")  # the latest is kept
