"""Reserve SOC and dispatchable energy, checked against DOMAIN.md's worked example."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.control.errors import ControlError
from protocols.control.reserve import dispatchable_wh, reserve_soc


def test_domain_example_dispatchable_energy() -> None:
    # 4 kW load, 19.2 kWh pack, 3 h reserve, 10 % floor, η 0.95 → ≈ 4.7 kWh/day.
    e = dispatchable_wh(100, 4000, 19200, backup_hours=3, floor_pct=10, efficiency=0.95)
    assert e == pytest.approx(19200 - 1920 - 4000 * 3 / 0.95)
    assert e / 1000 == pytest.approx(4.7, abs=0.06)


@pytest.mark.parametrize(
    ("load_w", "capacity_wh", "kwargs", "expected"),
    [
        (0, 19200, {}, 10.0),
        (4000, 19200, {}, 10 + 100 * (12000 / 0.95) / 19200),  # 75.79 %
        (4000, 19200, {"soh_pct": 80}, 10 + 100 * (12000 / 0.95) / 15360),  # 92.24 %
        (8000, 19200, {}, 100.0),  # the pack cannot hold the backup: clamp, never discharge
        (1000, 10000, {"backup_hours": 2, "floor_pct": 5, "efficiency": 1.0}, 25.0),
        (1000, 10000, {"backup_hours": 0, "floor_pct": 0}, 0.0),
        (-500, 10000, {}, 10.0),  # a negative reading is not a negative reserve
    ],
)
def test_reserve_soc_table(
    load_w: float, capacity_wh: float, kwargs: dict[str, float], expected: float
) -> None:
    assert reserve_soc(load_w, capacity_wh, **kwargs) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("soc", "expected_wh"),
    [
        (100, 19200 - 1920 - 12000 / 0.95),
        (80, 0.8 * 19200 - 1920 - 12000 / 0.95),
        (75, 0.0),  # below the 75.79 % reserve
        (0, 0.0),
    ],
)
def test_dispatchable_table(soc: float, expected_wh: float) -> None:
    assert dispatchable_wh(soc, 4000, 19200) == pytest.approx(expected_wh)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"capacity_wh": 0},
        {"capacity_wh": 1000, "soh_pct": 0},
        {"capacity_wh": 1000, "efficiency": 0},
        {"capacity_wh": 1000, "floor_pct": 120},
    ],
)
def test_bad_arguments_raise(kwargs: dict[str, float]) -> None:
    with pytest.raises(ControlError):
        reserve_soc(1000, **kwargs)


@given(
    soc=st.floats(0, 100),
    load=st.floats(0, 10_000),
    cap=st.floats(1_000, 50_000),
    hours=st.floats(0, 8),
)
def test_dispatchable_is_zero_exactly_at_or_below_reserve(
    soc: float, load: float, cap: float, hours: float
) -> None:
    r = reserve_soc(load, cap, backup_hours=hours)
    e = dispatchable_wh(soc, load, cap, backup_hours=hours)
    assert e >= 0
    if soc <= r:
        assert e == pytest.approx(0, abs=1e-6)
    else:
        assert e == pytest.approx((soc - r) / 100 * cap, rel=1e-6, abs=1e-6)
