"""Demand-response allocation and staggered recharge."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.control.errors import ControlError
from protocols.control.fleet import (
    DrSite,
    ImportHistory,
    RechargeNeed,
    allocate,
    stagger,
    valley_ceiling,
)

H = 3600.0


def three(max_a: float = 5000) -> list[DrSite]:
    return [
        DrSite("a", 3000, 6000, max_a),
        DrSite("b", 3000, 3000, 5000),
        DrSite("c", 3000, 0, 5000),  # at its reserve: cannot help
    ]


@pytest.mark.parametrize(
    ("sites", "cap_w", "hours", "shares", "required", "shortfall"),
    [
        # 9 kW baseline, cap 6 kW: 3 kW shared 2:1 by energy above reserve
        (three(), 6000, 2, {"a": 2000, "b": 1000, "c": 0}, 3000, 0),
        # cap 4 kW: 5 kW needed; b holds 1.5 kW for 2 h (3 kWh), a its load 3 kW; 0.5 kW short
        (three(), 4000, 2, {"a": 3000, "b": 1500, "c": 0}, 5000, 500),
        # a's battery limit binds at 1 kW; the rest moves to b
        (three(max_a=1000), 7000, 1, {"a": 1000, "b": 1000, "c": 0}, 2000, 0),
        # a one-hour event lets b give more (3 kWh over 1 h)
        (three(), 4000, 1, {"a": 3000, "b": 2000, "c": 0}, 5000, 0),
        # cap above the baseline: nothing to do
        (three(), 10000, 2, {"a": 0, "b": 0, "c": 0}, 0, 0),
        # import differs from load (a site that was charging): baseline counts import
        (
            [DrSite("a", 2000, 10000, 5000, import_w=4000), DrSite("b", 2000, 10000, 5000)],
            4000,
            1,
            {"a": 1000, "b": 1000},
            2000,
            0,
        ),
    ],
)
def test_allocation_table(
    sites: list[DrSite],
    cap_w: float,
    hours: float,
    shares: dict[str, float],
    required: float,
    shortfall: float,
) -> None:
    a = allocate(sites, cap_w, hours * H)
    assert a.shares == pytest.approx(shares)
    assert a.required_w == pytest.approx(required)
    assert a.shortfall_w == pytest.approx(shortfall)
    assert a.feasible is (shortfall == 0)
    if a.feasible:
        assert a.expected_import_w == pytest.approx(min(cap_w, a.baseline_w))


def test_allocation_rejects_nonsense() -> None:
    with pytest.raises(ControlError):
        allocate(three(), 1000, 0)
    with pytest.raises(ControlError):
        allocate([DrSite("a", 1, 1, 1), DrSite("a", 1, 1, 1)], 0, 60)


sites_st = st.lists(
    st.builds(
        DrSite,
        site=st.uuids().map(str),
        load_w=st.floats(0, 10_000),
        energy_above_reserve_wh=st.floats(0, 20_000),
        max_discharge_w=st.floats(0, 10_000),
    ),
    max_size=15,
    unique_by=lambda s: s.site,
)


@settings(max_examples=300, deadline=None)
@given(sites=sites_st, cap_w=st.floats(0, 100_000), duration_s=st.floats(60, 6 * H))
def test_allocation_properties(sites: list[DrSite], cap_w: float, duration_s: float) -> None:
    a = allocate(sites, cap_w, duration_s)
    for s in sites:
        share = a.shares[s.site]
        assert -1e-9 <= share <= s.capability_w(duration_s) + 1e-6
        assert share <= s.max_discharge_w + 1e-6 and share <= s.load_w + 1e-6
        # never more energy over the event than the site holds above its reserve
        assert share * duration_s / H <= s.energy_above_reserve_wh + 1e-3
    assert a.allocated_w <= a.required_w + 1e-6
    capable = sum(s.capability_w(duration_s) for s in sites if s.energy_above_reserve_wh > 0)
    if capable >= a.required_w:
        assert a.allocated_w == pytest.approx(a.required_w, abs=1e-3)
        assert a.feasible
    else:
        assert a.shortfall_w == pytest.approx(a.required_w - capable, abs=1e-3)


NEEDS = [
    RechargeNeed("a", 10_000, 5000),
    RechargeNeed("b", 5000, 5000),
    RechargeNeed("c", 2000, 2000),
]


@pytest.mark.parametrize(
    ("ceiling", "deadline", "slots", "finish", "late"),
    [
        # 7 kW: a alone first (5 kW), b and c together once a is done
        (
            7000,
            None,
            {"a": (0, 2 * H, 5000), "b": (2 * H, 3 * H, 5000), "c": (2 * H, 3 * H, 2000)},
            3 * H,
            (),
        ),
        (7000, 2.5 * H, None, 3 * H, ("b", "c")),
        # 10 kW: a and b at once, c when b is done
        (
            10000,
            None,
            {"a": (0, 2 * H, 5000), "b": (0, 1 * H, 5000), "c": (1 * H, 2 * H, 2000)},
            2 * H,
            (),
        ),
        # 3 kW: every site is slowed to the ceiling at most, one after another
        (
            3000,
            None,
            {
                "a": (0, 10 / 3 * H, 3000),
                "b": (10 / 3 * H, 5 * H, 3000),
                "c": (5 * H, 6 * H, 2000),
            },
            6 * H,
            (),
        ),
    ],
)
def test_stagger_table(
    ceiling: float,
    deadline: float | None,
    slots: dict[str, tuple[float, float, float]] | None,
    finish: float,
    late: tuple[str, ...],
) -> None:
    plan = stagger(NEEDS, 0.0, ceiling, deadline=deadline)
    if slots is not None:
        got = {s.site: (s.start, s.end, s.charge_w) for s in plan.slots}
        assert got.keys() == slots.keys()
        for site, expected in slots.items():
            assert got[site] == pytest.approx(expected), site
    assert plan.finish == pytest.approx(finish)
    assert plan.late == late


def test_stagger_skips_sites_with_nothing_to_charge() -> None:
    plan = stagger([RechargeNeed("a", 0, 5000), RechargeNeed("b", 100, 0)], 0.0, 1000)
    assert plan.slots == ()
    with pytest.raises(ControlError):
        stagger(NEEDS, 0.0, 0)


@settings(max_examples=200, deadline=None)
@given(
    needs=st.lists(
        st.builds(
            RechargeNeed,
            site=st.uuids().map(str),
            energy_wh=st.floats(0, 20_000),
            max_charge_w=st.one_of(st.just(0.0), st.floats(100, 8000)),
        ),
        max_size=20,
        unique_by=lambda n: n.site,
    ),
    ceiling=st.floats(500, 30_000),
)
def test_stagger_never_exceeds_the_ceiling(needs: list[RechargeNeed], ceiling: float) -> None:
    plan = stagger(needs, 1000.0, ceiling)
    for slot in plan.slots:
        assert plan.power_at(slot.start) <= ceiling + 1e-6  # power only rises at a start
        assert slot.start >= 1000.0
    by_site = {n.site: n for n in needs}
    for slot in plan.slots:
        n = by_site[slot.site]
        assert slot.charge_w <= n.max_charge_w + 1e-9
        assert slot.charge_w * (slot.end - slot.start) / H == pytest.approx(
            n.energy_wh, rel=1e-5, abs=1e-6
        )
    wanted = {n.site for n in needs if n.energy_wh > 1e-9 and n.max_charge_w > 1e-9}
    assert {s.site for s in plan.slots} == wanted


def test_valley_ceiling_spread_headroom_and_finish() -> None:
    """Spread over the valley, lowered to the headroom under the day's peak, never below what
    still finishes inside the valley."""
    needs = [RechargeNeed("a", 20_000, 5000), RechargeNeed("b", 20_000, 5000)]
    # 40 kWh over 8 h × 0.8 = 6250 W; no history: the spread.
    assert valley_ceiling(needs, 8.0) == pytest.approx(6250)
    # Headroom 0.9 × 60 kW − 50 kW = 4 kW... but 40 kWh / 8 h = 5 kW must fit the valley.
    assert valley_ceiling(needs, 8.0, peak_w=60_000, night_w=50_000) == pytest.approx(5000)
    # Headroom 0.9 × 80 kW − 60 kW − 12 kW already planned = 0... still the finishing power.
    assert valley_ceiling(needs, 8.0, peak_w=80_000, night_w=60_000, planned_w=12_000) == 5000
    # Ample headroom: the spread stands.
    assert valley_ceiling(needs, 8.0, peak_w=100_000, night_w=50_000) == pytest.approx(6250)
    assert valley_ceiling(needs, 8.0, peak_w=60_000, night_w=48_500) == pytest.approx(5500)


def test_import_history_day_peak_needs_a_day() -> None:
    h = ImportHistory()
    t0 = 1_750_000_000.0 // 3600 * 3600
    for k in range(0, 23 * 60, 10):  # every 10 minutes for 23 h
        h = h.add(t0 + k * 60, 50_000 + (20_000 if k == 600 else 0))
    assert len(h.hours) == 23  # one entry per hour
    assert h.peak_w(t0 + 10 * 3600) is None  # only 10 h of history
    assert h.peak_w(t0 + 23 * 3600) == 70_000
    # A day later the 10:00 peak has aged out.
    later = h.add(t0 + 36 * 3600, 40_000)
    assert later.peak_w(t0 + 36 * 3600) == 50_000
