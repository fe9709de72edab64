"""Block planning: fewest requests within max_block / max_gap, checked against brute force."""

from __future__ import annotations

import itertools
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.blocks import plan_blocks, plan_profile, plan_table
from protocols.codec import encode_image
from protocols.errors import ConfigError
from protocols.profiles import PointDef, Table, load_profile
from protocols.types import Quality, Reading


def pt(name: str, address: int, type_: str = "u16", table: str = "holding") -> PointDef:
    return PointDef.model_validate(
        {"name": name, "address": address, "table": table, "type": type_, "word_order": None}
    )


def brute_force_min_reads(points: list[PointDef], max_block: int, max_gap: int) -> int:
    """Fewest read ranges covering every point, searched over every candidate range.

    Independent of the planner's argument: a candidate is any range [s, e) from a point's start
    to a point's end, at most `max_block` long, splitting no point, whose every run of unmapped
    registers is at most `max_gap`. Try 1, 2, … ranges until some set covers every point.
    """
    mapped = {a for p in points for a in range(p.address, p.end)}
    starts = sorted({p.address for p in points})
    ends = sorted({p.end for p in points})
    candidates: list[frozenset[str]] = []
    for s in starts:
        for e in ends:
            if not 0 < e - s <= max_block:
                continue
            if any(p.address < s < p.end or p.address < e < p.end for p in points):
                continue
            run = longest = 0
            for a in range(s, e):
                run = 0 if a in mapped else run + 1
                longest = max(longest, run)
            if longest > max_gap:
                continue
            candidates.append(frozenset(p.name for p in points if s <= p.address and p.end <= e))
    everything = {p.name for p in points}
    for k in range(1, len(points) + 1):
        for combo in itertools.combinations(set(candidates), k):
            if set().union(*combo) == everything:
                return k
    raise AssertionError("no cover found")


@st.composite
def layouts(draw: st.DrawFn) -> tuple[list[PointDef], int, int]:
    n = draw(st.integers(1, 7))
    points: list[PointDef] = []
    addr = draw(st.integers(0, 3))
    for i in range(n):
        type_ = draw(st.sampled_from(["u16", "u16", "s16", "u32", "f32"]))
        points.append(pt(f"p{i}", addr, type_))
        addr = points[-1].end + draw(st.integers(0, 5))
    max_block = draw(st.integers(2, 12))
    max_gap = draw(st.integers(0, 4))
    return points, max_block, max_gap


@settings(max_examples=300, deadline=None)
@given(layouts())
def test_greedy_plan_is_optimal_against_brute_force(
    layout: tuple[list[PointDef], int, int],
) -> None:
    points, max_block, max_gap = layout
    blocks = plan_table(points, table=Table.HOLDING, max_block=max_block, max_gap=max_gap)
    assert len(blocks) == brute_force_min_reads(points, max_block, max_gap)
    # and the plan itself is valid: every point exactly once, limits kept, no split points
    covered = [p.name for b in blocks for p in b.points]
    assert sorted(covered) == sorted(p.name for p in points)
    mapped = {a for p in points for a in range(p.address, p.end)}
    for b in blocks:
        assert b.count <= max_block
        assert b.start == b.points[0].address and b.end == max(p.end for p in b.points)
        gaps = [a for a in range(b.start, b.end) if a not in mapped]
        runs = [len(list(g)) for _, g in itertools.groupby(enumerate(gaps), lambda t: t[1] - t[0])]
        assert max(runs, default=0) <= max_gap


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # holding 0x100..0x103 + input 0x00..0x11 (gap 0x0D..0x0F = 3 ≤ 4)
        ("rectifier_ampere_apc4812", [("holding", 0x100, 4), ("input", 0x0, 18)]),
        # max_gap 0: 0x0001 unmapped splits voltage from the rest; cells contiguous with min/max
        (
            "battery_lianfa_lf48100",
            [
                ("holding", 0x0000, 1),
                ("holding", 0x0002, 7),
                ("holding", 0x0022, 18),
                ("holding", 0x100B, 3),
                ("holding", 0x1100, 4),
            ],
        ),
        ("battery_strata_bsm4", [("input", 0x00, 21), ("input", 0x20, 8)]),
        (
            "breaker_breakwell_sb8",
            [("input", 0x0, 2), ("input", 0x100, 62), ("coil", 1, 8), ("discrete", 0, 9)],
        ),
        ("meter_gridline_gm1", [("input", 0, 14), ("discrete", 0, 1)]),
        (
            "aircon_coolgate_gw1",
            [("holding", 1, 5), ("input", 3, 4), ("coil", 0, 1), ("discrete", 0, 1)],
        ),
    ],
)
def test_shipped_profiles_plan_exactly(name: str, expected: list[tuple[str, int, int]]) -> None:
    profile = load_profile(name)
    blocks = plan_profile(profile)
    assert [(b.table.value, b.start, b.count) for b in blocks] == expected
    for table in Table:
        pts = [p for p in profile.points if p.table is table]
        if pts and not table.is_bits and len(pts) <= 20:
            n = brute_force_min_reads(pts, profile.device.max_block, profile.device.max_gap)
            assert sum(b.table is table for b in blocks) == n


def test_max_block_splits_a_long_run_and_never_splits_a_32_bit_point() -> None:
    points = [pt(f"r{i}", i) for i in range(9)] + [pt("wide", 9, "u32")]  # 0..10
    blocks = plan_table(points, table=Table.HOLDING, max_block=5, max_gap=0)
    assert [(b.start, b.count) for b in blocks] == [(0, 5), (5, 4), (9, 2)]
    assert len(plan_table(points, table=Table.HOLDING, max_block=125, max_gap=0)) == 1
    with pytest.raises(ConfigError, match="exceed max_block"):
        plan_table(points, table=Table.HOLDING, max_block=1, max_gap=0)


def test_coils_use_their_own_limit() -> None:
    coils = [pt(f"c{i}", i * 2, "bool", "coil") for i in range(10)]  # 0..18, gaps of 1
    assert len(plan_blocks(coils, max_block=2, max_coil_block=100, max_gap=1)) == 1
    assert len(plan_blocks(coils, max_block=100, max_coil_block=5, max_gap=1)) == 4
    assert len(plan_blocks(coils, max_block=100, max_coil_block=100, max_gap=0)) == 10


def test_plan_only_named_points() -> None:
    profile = load_profile("battery_lianfa_lf48100")
    blocks = plan_profile(profile, ["soc", "soh", "target_soc"])
    assert [(b.start, b.count) for b in blocks] == [(3, 2), (0x1103, 1)]


def test_block_readings_and_comm_failure() -> None:
    profile = load_profile("rectifier_ampere_apc4812")
    values: dict[str, Any] = {"dc_voltage": 53.5, "temperature": 150.0, "ac_input_power": 3100}
    image = encode_image(profile, values)
    block = next(b for b in plan_profile(profile) if b.table is Table.INPUT)
    words = [int(image[Table.INPUT].get(a, 0)) for a in range(block.start, block.end)]
    readings = {r.point: r for r in block.readings(words, t=1_700_000_000_000, device="rect1")}
    assert readings["dc_voltage"] == Reading(1_700_000_000_000, "rect1", "dc_voltage", 53.5)
    assert readings["temperature"].quality is Quality.OUT_OF_RANGE
    assert readings["ac_input_power"].value == 3100
    failed = block.failed(t=5, device="rect1")
    assert len(failed) == len(block.points)
    assert all(r.value is None and r.quality is Quality.COMM_ERROR for r in failed)


def test_block_decoding_is_far_above_the_agent_target() -> None:
    """The agent needs ≥ 20,000 registers/s; a single core decodes far more (report in logs)."""
    profile = load_profile("breaker_breakwell_sb8")
    block = max(plan_profile(profile), key=lambda b: b.count)
    words = [0x1234] * block.count
    rounds = 2000
    t0 = time.perf_counter()
    for _ in range(rounds):
        block.decode(words)
    rate = rounds * block.count / (time.perf_counter() - t0)
    print(
        f"decode: {rate:,.0f} registers/s ({block.count}-register block, {len(block.points)} pts)"
    )
    assert rate > 20_000 * 10
