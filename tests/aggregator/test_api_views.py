"""Pure API summaries: key points, active mode, query limits."""

from __future__ import annotations

from typing import Any

import pytest

from aggregator.api.views import (
    KeyPoints,
    Mode,
    active_mode,
    key_points,
    readings_query_problems,
)
from aggregator.storage import CommandRecord
from protocols.types import Quality, Reading, Value

NOW = 10_000_000


def latest(*items: tuple[str, str, Value, Quality]) -> dict[tuple[str, str], Reading]:
    return {(d, p): Reading(1, d, p, v, q) for d, p, v, q in items}


G = Quality.GOOD


@pytest.mark.parametrize(
    ("readings", "expected"),
    [
        ((), KeyPoints()),
        (
            (("r1", "load_current", -80.0, G), ("r1", "dc_voltage", -53.5, G)),
            KeyPoints(load_w=80 * 53.5),
        ),
        (
            (
                ("r1", "load_current", 10.0, G),
                ("r1", "dc_voltage", 50.0, G),
                ("r2", "load_current", 20.0, G),
                ("r2", "dc_voltage", 50.0, G),
                ("r3", "load_current", 99.0, G),  # no voltage: not counted
            ),
            KeyPoints(load_w=1500.0),
        ),
        (
            (("m", "import_power", 2000.0, G), ("m2", "import_power", 500.0, Quality.STALE)),
            KeyPoints(grid_import_w=2500.0),
        ),
        (
            (
                ("b1", "soc", 40.0, G),
                ("b2", "soc", 60.0, G),
                ("b3", "soc", None, Quality.COMM_ERROR),
            ),
            KeyPoints(soc=50.0),
        ),
        (
            (
                ("a1", "room_temp", 24.0, G),
                ("a2", "room_temp", 31.0, G),
                ("a3", "room_temp", 99.0, Quality.OUT_OF_RANGE),
            ),
            KeyPoints(room_temp_c=31.0),
        ),
    ],
)
def test_key_points(
    readings: tuple[tuple[str, str, Value, Quality], ...], expected: KeyPoints
) -> None:
    assert key_points(latest(*readings)) == expected


def cmd(
    seq: int,
    action: str,
    *,
    status: str = "applied",
    issued: int = NOW - 1000,
    lease_s: float = 60,
    ack: int | None = None,
    params: dict[str, Any] | None = None,
) -> CommandRecord:
    return CommandRecord(
        f"id{seq}", "s", seq, action, params or {}, issued, issued + 5000, lease_s, "t",
        issued, status, ack if ack is not None else issued + 30,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("commands", "mode"),
    [
        ([], Mode.NORMAL),
        ([cmd(1, "battery.peak_shave")], Mode.PEAK_SHAVING),
        ([cmd(1, "battery.charge")], Mode.CHARGING),
        ([cmd(1, "site.dormant")], Mode.DORMANT),
        ([cmd(1, "site.dormant"), cmd(2, "site.wake", issued=NOW - 500)], Mode.NORMAL),
        ([cmd(1, "battery.peak_shave"), cmd(2, "ac.setpoint", issued=NOW - 10)], Mode.PEAK_SHAVING),
        ([cmd(1, "battery.charge"), cmd(2, "battery.peak_shave", status="rejected")],
         Mode.CHARGING),
        ([cmd(1, "battery.peak_shave", status="sent")], Mode.NORMAL),
        ([cmd(1, "battery.peak_shave", issued=NOW - 61_000, ack=NOW - 61_000)], Mode.NORMAL),
        ([cmd(1, "site.dormant", params={"until": NOW - 1})], Mode.NORMAL),
        ([cmd(1, "site.dormant", params={"until": NOW + 1})], Mode.DORMANT),
        # Order of the input does not matter; seq breaks ties in issue time.
        ([cmd(3, "battery.charge", issued=NOW - 100), cmd(2, "battery.auto", issued=NOW - 100)],
         Mode.CHARGING),
    ],
)  # fmt: skip
def test_active_mode(commands: list[CommandRecord], mode: Mode) -> None:
    assert active_mode(commands, NOW) is mode


DAY = 86_400_000


@pytest.mark.parametrize(
    ("t0", "t1", "step", "limit", "problems"),
    [
        (0, DAY, None, 1000, []),
        (0, 7 * DAY, None, 10_000, []),
        (0, 7 * DAY + 1, None, 10, ["raw readings span at most 7 days"]),
        (0, 400 * DAY, 900, 10, []),
        (0, 400 * DAY, 86_400, 10, []),
        (0, DAY, 600, 10, ["multiple of 900"]),
        (0, DAY, -900, 10, ["multiple of 900"]),
        (5, 5, None, 10, ["must be after"]),
        (0, DAY, None, 10_001, ["limit must be within 1..10000"]),
        (0, 401 * DAY, 1000, 0, ["multiple of 900", "rollups span at most 400", "limit must"]),
    ],
)
def test_readings_query_problems(
    t0: int, t1: int, step: int | None, limit: int, problems: list[str]
) -> None:
    found = readings_query_problems(t0, t1, step, limit)
    assert len(found) == len(problems)
    for text, fragment in zip(found, problems, strict=True):
        assert fragment in text
