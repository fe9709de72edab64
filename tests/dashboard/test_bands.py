"""Chart bands: tariff periods clipped to the range, dormant windows from applied commands."""

from __future__ import annotations

from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from aggregator.dashboard.bands import Band, dormant_windows, tariff_bands
from aggregator.storage import CommandRecord
from protocols.control.tariff import load_tariff

TARIFFS = Path(__file__).resolve().parents[2] / "config" / "tariffs"
SH = ZoneInfo("Asia/Shanghai")
MIN = 60_000


def ms(y: int, mo: int, d: int, h: int, mi: int) -> int:
    return int(datetime(y, mo, d, h, mi, tzinfo=SH).timestamp() * 1000)


def test_tariff_bands_follow_the_local_schedule_and_clip_to_the_range() -> None:
    tariff = load_tariff(TARIFFS / "shanghai-two-part.toml")
    t0, t1 = ms(2026, 3, 2, 5, 30), ms(2026, 3, 2, 9, 0)  # a shoulder-season Monday
    assert tariff_bands(tariff, t0, t1) == [
        Band(t0, ms(2026, 3, 2, 6, 0), "valley", 0.31),
        Band(ms(2026, 3, 2, 6, 0), ms(2026, 3, 2, 8, 0), "flat", 0.62),
        Band(ms(2026, 3, 2, 8, 0), t1, "peak", 0.992),
    ]
    assert tariff_bands(tariff, t1, t0) == []


def test_tariff_bands_cover_a_day_without_gaps() -> None:
    tariff = load_tariff(TARIFFS / "shanghai-two-part.toml")
    t0 = ms(2026, 8, 1, 0, 0)
    bands = tariff_bands(tariff, t0, t0 + 86_400_000)
    assert bands[0].start_ms == t0 and bands[-1].end_ms == t0 + 86_400_000
    assert all(a.end_ms == b.start_ms for a, b in pairwise(bands))
    assert "critical_peak" in {b.kind for b in bands}  # summer 12-14


def cmd(
    seq: int, action: str, at: int, *, status: str = "applied", lease_s: float = 3600, **params: Any
) -> CommandRecord:
    return CommandRecord(
        id=f"c{seq}",
        site="s1",
        seq=seq,
        action=action,
        params=params,
        issued_ms=at - 100,
        expires_ms=at + MIN,
        lease_s=lease_s,
        issued_by="planner",
        sent_ms=at - 90,
        status=status,
        ack_ms=at,
    )


T = 1_800_000_000_000


@pytest.mark.parametrize(
    ("commands", "expected"),
    [
        # Woken by site.wake.
        ([cmd(1, "site.dormant", T), cmd(2, "site.wake", T + 30 * MIN)], [(T, T + 30 * MIN)]),
        # Ended by its own `until`.
        ([cmd(1, "site.dormant", T, until=T + 10 * MIN)], [(T, T + 10 * MIN)]),
        # The lease ran out.
        ([cmd(1, "site.dormant", T, lease_s=600)], [(T, T + 10 * MIN)]),
        # Still dormant: up to now.
        ([cmd(1, "site.dormant", T)], [(T, T + 45 * MIN)]),
        # Renewals make one window.
        (
            [cmd(1, "site.dormant", T, lease_s=900), cmd(2, "site.dormant", T + 10 * MIN)],
            [(T, T + 45 * MIN)],
        ),
        # Rejected or unacknowledged commands and other actions change nothing.
        (
            [
                cmd(1, "site.dormant", T, status="rejected"),
                cmd(2, "site.dormant", T, status="sent"),
                cmd(3, "battery.peak_shave", T, discharge_limit_w=1000.0),
            ],
            [],
        ),
    ],
)
def test_dormant_windows(commands: list[CommandRecord], expected: list[tuple[int, int]]) -> None:
    now = T + 45 * MIN
    got = dormant_windows(reversed(commands), T - 60 * MIN, T + 120 * MIN, now)
    assert [(b.start_ms, b.end_ms) for b in got] == expected
    assert all(b.kind == "dormant" for b in got)


def test_dormant_windows_are_clipped_to_the_range() -> None:
    got = dormant_windows([cmd(1, "site.dormant", T)], T + 5 * MIN, T + 20 * MIN, T + 45 * MIN)
    assert got == [Band(T + 5 * MIN, T + 20 * MIN, "dormant")]
    later = dormant_windows([cmd(1, "site.dormant", T)], T + 50 * MIN, T + 60 * MIN, T + 45 * MIN)
    assert later == []
