"""Tariff validation and lookups, against the shipped tariffs and small inline ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from protocols.clock import parse_time
from protocols.control.errors import TariffError
from protocols.control.tariff import (
    Period,
    Tariff,
    load_tariff,
    load_tariffs,
    tariff_from_mapping,
    valley_start,
)

TARIFFS = Path(__file__).resolve().parents[2] / "config" / "tariffs"


def at(local: str) -> float:
    """Unix seconds of a Shanghai wall-clock time."""
    return parse_time(local + "+08:00")


@pytest.fixture(scope="module")
def shanghai() -> Tariff:
    return load_tariff(TARIFFS / "shanghai-two-part.toml")


@pytest.fixture(scope="module")
def sichuan() -> Tariff:
    return load_tariff(TARIFFS / "sichuan-2023.toml")


def test_shipped_tariffs_load_without_warnings() -> None:
    tariffs = load_tariffs(TARIFFS)
    assert set(tariffs) == {"shanghai-two-part", "single-part", "sichuan-2023"}
    for t in tariffs.values():
        assert t.price_warnings() == []


@pytest.mark.parametrize(
    ("local", "period", "price"),
    [
        ("2024-07-15T07:59:59", Period.FLAT, 0.62),
        ("2024-07-15T08:00:00", Period.PEAK, 1.116),
        ("2024-07-15T12:30:00", Period.CRITICAL_PEAK, 1.3392),
        ("2024-07-15T14:00:00", Period.PEAK, 1.116),
        ("2024-07-15T15:00:00", Period.FLAT, 0.62),
        ("2024-07-15T20:59:00", Period.PEAK, 1.116),
        ("2024-07-15T21:30:00", Period.FLAT, 0.62),
        ("2024-07-15T22:00:00", Period.VALLEY, 0.248),
        ("2024-07-16T05:59:00", Period.VALLEY, 0.248),
        ("2024-12-20T12:30:00", Period.PEAK, 1.116),  # winter: no critical peak
        ("2024-04-10T10:00:00", Period.PEAK, 0.992),  # shoulder: milder peak
        ("2024-04-10T02:00:00", Period.VALLEY, 0.31),
    ],
)
def test_shanghai_period_and_price(
    shanghai: Tariff, local: str, period: Period, price: float
) -> None:
    assert shanghai.period_at(at(local)) is period
    assert shanghai.price_at(at(local)) == pytest.approx(price)


def test_shanghai_summer_ratio_is_4_5_to_1(shanghai: Tariff) -> None:
    prices = shanghai.day_prices(at("2024-08-01T12:00:00"))
    assert prices[Period.PEAK] / prices[Period.VALLEY] == pytest.approx(4.5)
    assert prices[Period.CRITICAL_PEAK] / prices[Period.PEAK] == pytest.approx(1.2)


@pytest.mark.parametrize(
    ("local", "period"),
    [
        ("2024-03-01T06:59:00", Period.VALLEY),
        ("2024-03-01T07:00:00", Period.FLAT),
        ("2024-03-01T10:00:00", Period.PEAK),
        ("2024-03-01T12:00:00", Period.FLAT),
        ("2024-03-01T15:00:00", Period.PEAK),
        ("2024-03-01T21:00:00", Period.FLAT),
        ("2024-03-01T23:00:00", Period.VALLEY),
    ],
)
def test_sichuan_periods(sichuan: Tariff, local: str, period: Period) -> None:
    assert sichuan.period_at(at(local)) is period


def test_sichuan_ratio(sichuan: Tariff) -> None:
    p = sichuan.day_prices(at("2024-03-01T00:00:00"))
    flat = p[Period.FLAT]
    assert (p[Period.PEAK] / flat, p[Period.VALLEY] / flat) == pytest.approx((1.6, 0.4))


@pytest.mark.parametrize(
    ("local", "next_local"),
    [
        ("2024-07-15T07:00:00", "2024-07-15T08:00:00"),
        ("2024-07-15T08:00:00", "2024-07-15T12:00:00"),
        ("2024-07-15T13:00:00", "2024-07-15T14:00:00"),
        ("2024-07-15T22:30:00", "2024-07-16T06:00:00"),  # the valley runs over midnight
        # into the shoulder season: still valley, but the price changes at midnight
        ("2024-09-30T23:00:00", "2024-10-01T00:00:00"),
        ("2024-09-30T21:30:00", "2024-09-30T22:00:00"),
    ],
)
def test_next_change(shanghai: Tariff, local: str, next_local: str) -> None:
    assert shanghai.next_change(at(local)) == at(next_local)


def test_next_change_across_season_price_change(shanghai: Tariff) -> None:
    # Sep 30 valley (0.248) continues into Oct 1 valley (0.31): the price changes at midnight.
    t = at("2024-09-30T23:00:00")
    segs = shanghai.segments(t, at("2024-10-01T06:00:00"))
    assert [(s.period, s.price, s.hours) for s in segs] == [
        (Period.VALLEY, 0.248, 1.0),
        (Period.VALLEY, 0.31, 6.0),
    ]


def test_segments_split_an_interval_by_period(shanghai: Tariff) -> None:
    segs = shanghai.segments(at("2024-07-15T11:30:00"), at("2024-07-15T15:30:00"))
    assert [(s.period, s.hours) for s in segs] == [
        (Period.PEAK, 0.5),
        (Period.CRITICAL_PEAK, 2.0),
        (Period.PEAK, 1.0),
        (Period.FLAT, 0.5),
    ]
    assert shanghai.segments(10.0, 10.0) == []
    with pytest.raises(TariffError):
        shanghai.segments(10.0, 5.0)


def test_a_day_covers_24_hours(shanghai: Tariff) -> None:
    segs = shanghai.segments(at("2024-07-15T00:00:00"), at("2024-07-16T00:00:00"))
    assert sum(s.hours for s in segs) == pytest.approx(24)
    hours = {p: sum(s.hours for s in segs if s.period is p) for p in Period}
    assert hours == {
        Period.CRITICAL_PEAK: 2,
        Period.PEAK: 8,
        Period.FLAT: 6,
        Period.VALLEY: 8,
    }


def _weekend_tariff() -> dict[str, Any]:
    return {
        "name": "wk",
        "seasons": [
            {
                "name": "all",
                "months": list(range(1, 13)),
                "prices": {"peak": 1.0, "flat": 0.5, "valley": 0.2},
                "schedules": [
                    {"days": "weekday", "peak": ["08:00-20:00"], "valley": ["20:00-08:00"]},
                    {"days": "weekend", "flat": ["00:00-24:00"]},
                ],
            }
        ],
    }


@pytest.mark.parametrize(
    ("local", "period"),
    [
        ("2024-07-12T10:00:00", Period.PEAK),  # Friday
        ("2024-07-13T10:00:00", Period.FLAT),  # Saturday
        ("2024-07-14T23:00:00", Period.FLAT),  # Sunday night
        ("2024-07-15T01:00:00", Period.VALLEY),  # Monday early
    ],
)
def test_weekday_and_weekend_schedules(local: str, period: Period) -> None:
    t = tariff_from_mapping(_weekend_tariff())
    assert t.period_at(at(local)) is period


def test_weekend_boundary_is_a_change() -> None:
    t = tariff_from_mapping(_weekend_tariff())
    # Friday 20:00 valley until Saturday 00:00, then flat all weekend until Monday 00:00.
    assert t.next_change(at("2024-07-12T21:00:00")) == at("2024-07-13T00:00:00")
    assert t.next_change(at("2024-07-13T01:00:00")) == at("2024-07-15T00:00:00")


def _one_season(schedule: dict[str, Any], prices: dict[str, float] | None = None) -> dict[str, Any]:
    return {
        "name": "t",
        "seasons": [
            {
                "name": "s",
                "months": list(range(1, 13)),
                "prices": prices or {"peak": 1.0, "flat": 0.5, "valley": 0.2},
                "schedules": [schedule],
            }
        ],
    }


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_one_season({"peak": ["08:00-20:00"], "valley": ["20:00-07:00"]}), "07:00"),
        (_one_season({"peak": ["08:00-21:00"], "valley": ["20:00-08:00"]}), "overlaps"),
        (_one_season({"peak": ["8-20"], "valley": ["20:00-08:00"]}), "HH:MM"),
        (_one_season({"peak": ["08:00-08:00"], "valley": ["20:00-08:00"]}), "empty"),
        (_one_season({"peak": ["08:00-25:00"], "valley": ["20:00-08:00"]}), "outside"),
        (
            _one_season({"critical_peak": ["08:00-20:00"], "valley": ["20:00-08:00"]}),
            "no price for ['critical_peak']",
        ),
        (
            _one_season({"days": "weekday", "flat": ["00:00-24:00"]}),
            "one 'weekday' and one 'weekend'",
        ),
        (
            {
                "name": "t",
                "seasons": [
                    {
                        "name": "s",
                        "months": [1, 2, 3],
                        "prices": {"flat": 0.5},
                        "schedules": [{"flat": ["00:00-24:00"]}],
                    }
                ],
            },
            "months [4, 5, 6, 7, 8, 9, 10, 11, 12] belong to no season",
        ),
        (
            {
                "name": "t",
                "seasons": [
                    {
                        "name": s,
                        "months": list(range(1, 13)) if s == "a" else [7],
                        "prices": {"flat": 0.5},
                        "schedules": [{"flat": ["00:00-24:00"]}],
                    }
                    for s in ("a", "b")
                ],
            },
            "month 7 is in both",
        ),
    ],
)
def test_invalid_tariffs_are_refused_with_a_clear_error(data: dict[str, Any], message: str) -> None:
    with pytest.raises(TariffError, match="<tariff>") as info:
        tariff_from_mapping(data)
    assert message in str(info.value)


def test_odd_price_order_warns_but_loads() -> None:
    t = tariff_from_mapping(
        _one_season(
            {"peak": ["08:00-20:00"], "valley": ["20:00-08:00"]},
            {"peak": 0.3, "flat": 0.5, "valley": 0.2},
        )
    )
    assert t.price_warnings() == ["season 's': peak price 0.3 is below flat price 0.5"]


def test_load_tariff_reports_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\nseasons = []\n')
    with pytest.raises(TariffError, match=r"bad\.toml: seasons"):
        load_tariff(bad)
    broken = tmp_path / "broken.toml"
    broken.write_text("name = \n")
    with pytest.raises(TariffError, match=r"broken\.toml"):
        load_tariff(broken)


@pytest.mark.parametrize(
    ("now", "start"),
    [
        ("2025-07-02T02:00:00", "2025-07-01T22:00:00"),  # after midnight: the valley began 22:00
        ("2025-07-01T23:30:00", "2025-07-01T22:00:00"),
        ("2025-07-02T05:59:00", "2025-07-01T22:00:00"),
    ],
)
def test_valley_start_joins_the_midnight_split(shanghai: Tariff, now: str, start: str) -> None:
    assert valley_start(shanghai, at(now)) == at(start)
