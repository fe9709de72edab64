"""Leases as tables: which command holds or releases which key, lapse, restore order."""

from __future__ import annotations

from typing import Any

import pytest

from agent.leases import LeaseBook, effect, restore_order, safe_default
from protocols.messages import (
    AcSetpoint,
    BatteryAuto,
    BreakerSet,
    Charge,
    Dormant,
    Params,
    PeakShave,
    RectifierEco,
    Wake,
)


@pytest.mark.parametrize(
    ("params", "hold", "release"),
    [
        (PeakShave(1000), ("battery",), ()),
        (Charge(1000, 90), ("battery",), ()),
        (BatteryAuto(), (), ("battery",)),
        (Dormant((5,), True, 2), ("dormant",), ()),
        (Wake(), (), ("dormant", "ac", "rectifier", "breaker.*")),
        (AcSetpoint(27), ("ac",), ()),
        (AcSetpoint(25), (), ("ac",)),
        (BreakerSet(5, False), ("breaker.5",), ()),
        (BreakerSet(5, True), (), ("breaker.5",)),
        (RectifierEco(True), ("rectifier",), ()),
        (RectifierEco(False), (), ("rectifier",)),
    ],
)
def test_effect(params: Params, hold: tuple[str, ...], release: tuple[str, ...]) -> None:
    assert effect(params, ac_default_c=25.0) == (hold, release)


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("battery", BatteryAuto()),
        ("dormant", Wake()),
        ("ac", AcSetpoint(25.0)),
        ("rectifier", RectifierEco(False)),
        ("breaker.7", BreakerSet(7, True)),
    ],
)
def test_safe_defaults(key: str, expected: Params) -> None:
    assert safe_default(key, ac_default_c=25.0) == expected


def test_unknown_key_refused() -> None:
    with pytest.raises(ValueError):
        safe_default("toaster", ac_default_c=25.0)


def test_lease_grant_renew_lapse_release() -> None:
    book = LeaseBook()
    kw: dict[str, Any] = {"ac_default_c": 25.0}
    book.apply(PeakShave(1000), command_id="a", seq=1, now=0.0, lease_s=60, **kw)
    book.apply(BreakerSet(5, False), command_id="b", seq=2, now=10.0, lease_s=30, **kw)
    assert book.next_expiry() == 40.0
    assert [x.key for x in book.lapsed(39.9)] == []
    assert [x.key for x in book.lapsed(40.0)] == ["breaker.5"]
    book.apply(PeakShave(1500), command_id="c", seq=3, now=50.0, lease_s=60, **kw)  # renewal
    assert [x.key for x in book.lapsed(100.0)] == ["breaker.5"]
    assert book.leases["battery"].command_id == "c"
    book.release(["breaker.5"])
    book.apply(BatteryAuto(), command_id="d", seq=4, now=60.0, lease_s=60, **kw)
    assert book.held() == []


def test_wake_releases_every_breaker_and_order_is_safest_first() -> None:
    book = LeaseBook()
    kw: dict[str, Any] = {"ac_default_c": 25.0}
    steps: list[Params] = [
        BreakerSet(6, False),
        AcSetpoint(28),
        PeakShave(1),
        Dormant((5,), True, 1),
    ]
    for i, p in enumerate(steps):
        book.apply(p, command_id=str(i), seq=i, now=0.0, lease_s=10, **kw)
    assert restore_order(book.held()) == ["battery", "dormant", "ac", "breaker.6"]
    book.apply(Wake(), command_id="w", seq=9, now=1.0, lease_s=10, **kw)
    assert [x.key for x in book.held()] == ["battery"]
