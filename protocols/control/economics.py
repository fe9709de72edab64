"""Battery economics: does a peak-shaving cycle earn more than the battery life it burns?

A kWh discharged in the peak saves `peak_price` and costs `valley_price / round_trip` to put
back; it also wears the pack. With a throughput model (a pack delivers about
cycle_life × DoD × capacity kWh in its life, whatever the daily depth), the wear of one kWh is
`price_per_kwh / (cycle_life × DoD × SOH)`. Lead-acid life roughly halves per 8–10 °C above
20 °C (DOMAIN.md), so a hot shelter makes its cycles dearer still.

Figures from DOMAIN.md: LFP 4,000 cycles at 80 % DoD; lead-acid ≈ 300 cycles at 80 % DoD.
Prices are per kWh of nameplate capacity (illustrative defaults: LFP 800, lead-acid 500 CNY).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple

from protocols.control.errors import ControlError


class Chemistry(StrEnum):
    LFP = "lfp"
    LEAD_ACID = "lead_acid"


@dataclass(frozen=True, slots=True)
class ChemistryDefaults:
    cycle_life: float  # cycles to end of life at `rated_dod`
    rated_dod: float  # 0..1
    price_per_kwh: float  # currency per kWh of nameplate capacity
    round_trip_efficiency: float  # energy out / energy in, cells and charger
    life_halving_c: float | None  # °C above 20 °C that halve the cycle life; None: no derating
    end_of_life_soh: float  # SOH % at which the pack is due for replacement


CHEMISTRY_DEFAULTS: dict[Chemistry, ChemistryDefaults] = {
    Chemistry.LFP: ChemistryDefaults(4000, 0.8, 800.0, 0.92, None, 80.0),
    Chemistry.LEAD_ACID: ChemistryDefaults(300, 0.8, 500.0, 0.80, 9.0, 80.0),
}

REFERENCE_TEMPERATURE_C = 20.0


@dataclass(frozen=True, slots=True)
class Battery:
    """A site's pack as the economics see it; unset figures take the chemistry's defaults."""

    chemistry: Chemistry = Chemistry.LFP
    soh_pct: float = 100.0
    temperature_c: float = 25.0
    cycle_life: float | None = None
    rated_dod: float | None = None
    price_per_kwh: float | None = None
    round_trip_efficiency: float | None = None
    life_halving_c: float | None = field(default=None)
    end_of_life_soh: float | None = None

    @property
    def defaults(self) -> ChemistryDefaults:
        return CHEMISTRY_DEFAULTS[self.chemistry]

    def resolved(self) -> ChemistryDefaults:
        """The figures in force: explicit values over the chemistry's defaults."""
        d = self.defaults
        return ChemistryDefaults(
            cycle_life=self.cycle_life if self.cycle_life is not None else d.cycle_life,
            rated_dod=self.rated_dod if self.rated_dod is not None else d.rated_dod,
            price_per_kwh=self.price_per_kwh if self.price_per_kwh is not None else d.price_per_kwh,
            round_trip_efficiency=(
                self.round_trip_efficiency
                if self.round_trip_efficiency is not None
                else d.round_trip_efficiency
            ),
            life_halving_c=self.life_halving_c
            if self.life_halving_c is not None
            else d.life_halving_c,
            end_of_life_soh=(
                self.end_of_life_soh if self.end_of_life_soh is not None else d.end_of_life_soh
            ),
        )


def derated_cycle_life(
    cycle_life: float, temperature_c: float, life_halving_c: float | None
) -> float:
    """Cycle life at `temperature_c`: halves per `life_halving_c` °C above 20 °C."""
    if life_halving_c is None or temperature_c <= REFERENCE_TEMPERATURE_C:
        return cycle_life
    if life_halving_c <= 0:
        raise ControlError(f"life_halving_c must be > 0, got {life_halving_c}")
    factor: float = 0.5 ** ((temperature_c - REFERENCE_TEMPERATURE_C) / life_halving_c)
    return cycle_life * factor


@dataclass(frozen=True, slots=True)
class CycleFigures:
    """Per kWh discharged in the peak, in the tariff's currency."""

    peak_price: float
    valley_price: float
    spread: float  # peak − valley
    recharge_cost: float  # valley / round-trip efficiency
    saving: float  # peak − recharge cost
    cycle_life: float  # after temperature derating
    wear_cost: float  # battery life consumed
    net: float  # saving − wear cost


class Verdict(NamedTuple):
    """`worth_cycling`'s answer; unpacks as (worth, reason, figures)."""

    worth: bool
    reason: str
    figures: CycleFigures


def cycle_figures(battery: Battery, *, peak_price: float, valley_price: float) -> CycleFigures:
    r = battery.resolved()
    if r.cycle_life <= 0 or not 0 < r.rated_dod <= 1 or not 0 < r.round_trip_efficiency <= 1:
        raise ControlError(f"impossible battery figures {r}")
    life = derated_cycle_life(r.cycle_life, battery.temperature_c, r.life_halving_c)
    soh = max(battery.soh_pct, 1.0) / 100.0
    wear = r.price_per_kwh / (life * r.rated_dod * soh)
    recharge = valley_price / r.round_trip_efficiency
    saving = peak_price - recharge
    return CycleFigures(
        peak_price=peak_price,
        valley_price=valley_price,
        spread=peak_price - valley_price,
        recharge_cost=recharge,
        saving=saving,
        cycle_life=life,
        wear_cost=wear,
        net=saving - wear,
    )


def worth_cycling(
    battery: Battery,
    *,
    peak_price: float,
    valley_price: float,
    min_spread: float = 0.0,
    min_margin: float = 0.0,
) -> Verdict:
    """Whether shifting a kWh from valley to peak pays for the wear, and why (or why not).

    `min_spread`: smallest gross peak−valley spread worth acting on; `min_margin`: smallest net
    gain per kWh after losses and wear.
    """
    f = cycle_figures(battery, peak_price=peak_price, valley_price=valley_price)
    eol = battery.resolved().end_of_life_soh
    chem = battery.chemistry.value
    if battery.soh_pct <= eol:
        return Verdict(
            False, f"{chem} pack at SOH {battery.soh_pct:.0f} % is at end of life ({eol:.0f} %)", f
        )
    if f.spread < min_spread:
        return Verdict(False, f"spread {f.spread:.3f} is below the minimum {min_spread:.3f}", f)
    if f.net <= min_margin:
        return Verdict(
            False,
            f"{chem}: saving {f.saving:.3f}/kWh does not cover wear {f.wear_cost:.3f}/kWh "
            f"({f.cycle_life:.0f} cycles at {battery.temperature_c:.0f} °C)",
            f,
        )
    return Verdict(
        True,
        f"{chem}: saving {f.saving:.3f}/kWh exceeds wear {f.wear_cost:.3f}/kWh "
        f"(net {f.net:.3f}/kWh)",
        f,
    )


__all__ = [
    "CHEMISTRY_DEFAULTS",
    "Battery",
    "Chemistry",
    "ChemistryDefaults",
    "CycleFigures",
    "Verdict",
    "cycle_figures",
    "derated_cycle_life",
    "worth_cycling",
]
