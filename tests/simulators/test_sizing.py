"""Battery sizing for generated sites: a drawn pack grows until the backup leaves room."""

from __future__ import annotations

import pytest

from protocols.control.reserve import reserve_soc
from simulators.physics.battery import nominal_voltage
from simulators.sizing import MAX_SITE_AH, sized_capacity_ah, strings
from simulators.spec import Chemistry


@pytest.mark.parametrize(
    ("drawn", "chem", "soh", "load_w", "expected"),
    [
        (400.0, Chemistry.LFP, 100.0, 2000.0, 400.0),  # big enough: kept
        (200.0, Chemistry.LFP, 100.0, 4000.0, 450.0),  # 400 Ah: 71.7 %; 450 Ah: 64.8 %
        (200.0, Chemistry.LEAD_ACID, 70.0, 4500.0, 750.0),  # two strings
        (200.0, Chemistry.LEAD_ACID, 50.0, 6000.0, MAX_SITE_AH),  # cannot: the largest pack
    ],
)
def test_sized_capacity(
    drawn: float, chem: Chemistry, soh: float, load_w: float, expected: float
) -> None:
    cap = sized_capacity_ah(
        drawn, chemistry=chem, soh_pct=soh, peak_load_w=load_w, backup_hours=3.0,
        max_reserve_pct=70.0,
    )  # fmt: skip
    assert cap == expected
    wh = cap * nominal_voltage(chem)
    if cap < MAX_SITE_AH:
        assert reserve_soc(load_w, wh, soh_pct=soh) <= 70.0
    if cap > drawn:  # the step before was not enough
        assert reserve_soc(load_w, (cap - 50.0) * nominal_voltage(chem), soh_pct=soh) > 70.0


@pytest.mark.parametrize(("ah", "n"), [(100, 1), (400, 1), (450, 2), (800, 2)])
def test_strings(ah: float, n: int) -> None:
    assert strings(ah) == n
