"""Is a cycle worth its wear? Hand-computed figures per chemistry."""

from __future__ import annotations

import pytest

from protocols.control.economics import Battery, Chemistry, derated_cycle_life, worth_cycling

LFP = Battery(Chemistry.LFP)
LEAD = Battery(Chemistry.LEAD_ACID, temperature_c=20)


@pytest.mark.parametrize(
    ("battery", "peak", "valley", "kwargs", "worth", "wear", "net", "reason"),
    [
        # LFP, Shanghai summer: wear 800/(4000·0.8) = 0.25; saving 1.116 − 0.248/0.92 = 0.8464
        (LFP, 1.116, 0.248, {}, True, 0.25, 0.59643, "exceeds wear"),
        # LFP, single-part: saving 0.84 − 0.385/0.92 = 0.4215, net 0.1715: just pays
        (LFP, 0.84, 0.385, {}, True, 0.25, 0.17152, "exceeds wear"),
        # lead-acid at 20 °C: wear 500/(300·0.8) = 2.083 > saving 1.116 − 0.248/0.8 = 0.806
        (LEAD, 1.116, 0.248, {}, False, 2.08333, 0.806 - 2.08333, "does not cover wear"),
        # lead-acid at 29 °C: life halves to 150 cycles, wear 4.1667
        (
            Battery(Chemistry.LEAD_ACID, temperature_c=29),
            1.116,
            0.248,
            {},
            False,
            4.16667,
            0.806 - 4.16667,
            "150 cycles",
        ),
        # the figures decide, not the label: a very cheap lead-acid pack pays
        (
            Battery(Chemistry.LEAD_ACID, temperature_c=20, price_per_kwh=100),
            1.116,
            0.248,
            {},
            True,
            0.41667,
            0.806 - 0.41667,
            "exceeds wear",
        ),
        # LFP at SOH 80 % is at end of life: leave it alone
        (Battery(Chemistry.LFP, soh_pct=80), 1.116, 0.248, {}, False, 0.3125, None, "end of life"),
        # LFP at SOH 90 %: wear 800/(4000·0.8·0.9) = 0.2778
        (Battery(Chemistry.LFP, soh_pct=90), 1.116, 0.248, {}, True, 0.27778, None, "exceeds"),
        (LFP, 1.116, 0.248, {"min_spread": 1.0}, False, 0.25, None, "below the minimum"),
        (LFP, 1.116, 0.248, {"min_margin": 0.6}, False, 0.25, None, "does not cover"),
        (LFP, 0.5, 0.45, {}, False, 0.25, 0.5 - 0.45 / 0.92 - 0.25, "does not cover"),
    ],
)
def test_worth_cycling_table(
    battery: Battery,
    peak: float,
    valley: float,
    kwargs: dict[str, float],
    worth: bool,
    wear: float,
    net: float | None,
    reason: str,
) -> None:
    ok, why, figures = worth_cycling(battery, peak_price=peak, valley_price=valley, **kwargs)
    assert ok is worth
    assert reason in why
    assert figures.wear_cost == pytest.approx(wear, rel=1e-4)
    if net is not None:
        assert figures.net == pytest.approx(net, rel=1e-3)
    assert figures.spread == pytest.approx(peak - valley)


@pytest.mark.parametrize(
    ("temp", "halving", "expected"),
    [
        (20, 9.0, 300),
        (15, 9.0, 300),
        (29, 9.0, 150),
        (38, 9.0, 75),
        (40, None, 300),
        (30, 10.0, 150),
    ],
)
def test_temperature_derating(temp: float, halving: float | None, expected: float) -> None:
    assert derated_cycle_life(300, temp, halving) == pytest.approx(expected)
