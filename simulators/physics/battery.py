"""A 48 V battery: an LFP pack with its BMS, or a lead-acid string.

State of charge is counted in ampere-hours (charge enters with the coulombic efficiency, discharge
leaves whole); the terminal voltage is the open-circuit voltage at that SOC plus I·R, so energy
put in at a higher voltage than it comes out at, plus the coulombic loss, is the round-trip loss
(≈ 95 % LFP, ≈ 80 % lead-acid). Charge acceptance tapers near full (constant-voltage phase);
below the cut-off voltage or at empty the low-voltage disconnect opens.

Modes are what the agent commands through the BMS profile: AUTO (float) recharges at the
charge limit whenever the pack is below full; CHARGE charges to a target SOC at a power limit;
DISCHARGE (peak shaving) carries the load up to a power limit, the rectifiers supply the rest.
Whatever the mode, when the mains fails the pack carries the whole DC load.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass, field
from enum import IntEnum

from simulators.spec import BatterySpec, Chemistry

# Open-circuit voltage per cell against SOC (%), from published LFP and VRLA curves.
_OCV: dict[Chemistry, tuple[tuple[float, float], ...]] = {
    Chemistry.LFP: (
        (0, 2.80), (5, 3.10), (10, 3.20), (20, 3.25), (30, 3.28), (40, 3.29), (50, 3.30),
        (60, 3.31), (70, 3.325), (80, 3.335), (90, 3.35), (95, 3.38), (100, 3.45),
    ),
    Chemistry.LEAD_ACID: (
        (0, 1.94), (10, 1.96), (20, 1.98), (30, 2.00), (40, 2.02), (50, 2.04), (60, 2.06),
        (70, 2.08), (80, 2.10), (90, 2.12), (100, 2.15),
    ),
}  # fmt: skip

CELLS = {Chemistry.LFP: 16, Chemistry.LEAD_ACID: 24}
NOMINAL_V_PER_CELL = {Chemistry.LFP: 3.2, Chemistry.LEAD_ACID: 2.0}
CUTOFF_V_PER_CELL = {Chemistry.LFP: 2.7, Chemistry.LEAD_ACID: 1.75}
COULOMBIC = {Chemistry.LFP: 0.99, Chemistry.LEAD_ACID: 0.92}
CYCLES_TO_80 = {Chemistry.LFP: 4000.0, Chemistry.LEAD_ACID: 300.0}
TAPER_FROM = {Chemistry.LFP: 95.0, Chemistry.LEAD_ACID: 80.0}
FULL_SOC = 99.9
THERMAL_TAU_S = 2 * 3600.0
HEAT_CAPACITY_J_PER_K_AH = 1200.0  # whole pack, per Ah of capacity


class BatteryMode(IntEnum):
    """BMS operating modes; the integer is the register code."""

    AUTO = 0  # auto / float: recharge whenever below full
    CHARGE = 1
    DISCHARGE = 2  # peak shave


# The upper SOC of each segment of the curves, to find a segment by bisection.
_OCV_UPPER = {chem: [s for s, _ in pts[1:]] for chem, pts in _OCV.items()}


def ocv_per_cell(chem: Chemistry, soc: float) -> float:
    pts = _OCV[chem]
    soc = min(100.0, max(0.0, soc))
    i = bisect_left(_OCV_UPPER[chem], soc)  # the first segment that ends at or above `soc`
    if i == len(pts) - 1:
        return pts[-1][1]
    (s0, v0), (s1, v1) = pts[i], pts[i + 1]
    return v0 + (v1 - v0) * (soc - s0) / (s1 - s0)


def nominal_voltage(chemistry: Chemistry) -> float:
    """A 48 V-class pack's nominal voltage: 16 LFP cells (51.2 V) or 24 lead-acid cells (48 V)."""
    return NOMINAL_V_PER_CELL[chemistry] * CELLS[chemistry]


@dataclass
class Battery:
    spec: BatterySpec
    soc: float = field(init=False)
    soh: float = field(init=False)
    temp_c: float = field(init=False)
    mode: BatteryMode = BatteryMode.AUTO
    charge_limit_a: float = field(init=False)
    discharge_limit_a: float = field(init=False)
    charge_power_limit_w: float = 3000.0
    discharge_power_limit_w: float = 3000.0
    target_soc: float = 100.0
    min_soc: float = field(init=False)
    connected: bool = True  # False once the low-voltage disconnect has opened
    # Outputs of the last step.
    current_a: float = 0.0  # + charge, - discharge, at the terminals
    voltage: float = 0.0
    power_w: float = 0.0
    loss_w: float = 0.0
    ah_throughput: float = 0.0
    ah_discharged: float = 0.0
    log: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        s = self.spec
        c = s.capacity_ah
        lfp = s.chemistry is Chemistry.LFP
        self.soc = s.initial_soc
        self.soh = s.soh
        self.temp_c = s.initial_temp_c
        self.charge_limit_a = s.charge_limit_a or (0.3 if lfp else 0.1) * c
        self.discharge_limit_a = s.discharge_limit_a or (1.0 if lfp else 0.5) * c
        self.min_soc = s.min_soc
        self.cells = CELLS[s.chemistry]
        self.resistance = s.internal_resistance_ohm or (3.0 if lfp else 5.0) / c
        # A step asks for the open-circuit voltage several times at one SOC: keep the last.
        self._ocv_soc = math.nan
        self._ocv = 0.0
        self.voltage = self.ocv()

    # -- figures -----------------------------------------------------------------------
    @property
    def capacity_ah(self) -> float:
        """Usable capacity now, shrunk by ageing."""
        return self.spec.capacity_ah * self.soh / 100.0

    @property
    def cutoff_v(self) -> float:
        return CUTOFF_V_PER_CELL[self.spec.chemistry] * self.cells

    @property
    def energy_kwh(self) -> float:
        """Energy stored above empty, at nominal voltage."""
        return self.capacity_ah * self.soc / 100.0 * self.nominal_v / 1000.0

    @property
    def nominal_v(self) -> float:
        return nominal_voltage(self.spec.chemistry)

    def ocv(self) -> float:
        if self.soc != self._ocv_soc:
            self._ocv = ocv_per_cell(self.spec.chemistry, self.soc) * self.cells
            self._ocv_soc = self.soc
        return self._ocv

    def terminal_voltage(self, current_a: float) -> float:
        return self.ocv() + current_a * self.resistance

    def acceptance_a(self) -> float:
        """The most charge current the pack takes now: the limit, tapering near full."""
        if self.soc >= FULL_SOC:
            return 0.0
        start = TAPER_FROM[self.spec.chemistry]
        if self.soc <= start:
            return self.charge_limit_a
        frac = (100.0 - self.soc) / (100.0 - start)
        return max(0.02 * self.spec.capacity_ah, self.charge_limit_a * frac)

    def max_discharge_a(self) -> float:
        return self.discharge_limit_a if self.connected and self.soc > 0.0 else 0.0

    def float_current_a(self) -> float:
        """A full lead-acid string keeps drawing a small float current (lost as heat and gas)."""
        if self.spec.chemistry is Chemistry.LEAD_ACID and self.soc >= FULL_SOC:
            return 0.001 * self.spec.capacity_ah
        return 0.0

    def wanted_power_w(self, load_w: float, bus_v: float) -> float:
        """What the mode asks of the pack while the mains is up, in watts (+ charge)."""
        match self.mode:
            case BatteryMode.AUTO:
                return (self.acceptance_a() or self.float_current_a()) * bus_v
            case BatteryMode.CHARGE:
                if self.soc >= self.target_soc:
                    return 0.0
                return min(self.acceptance_a() * bus_v, self.charge_power_limit_w)
            case BatteryMode.DISCHARGE:
                if self.soc <= self.min_soc or not self.connected:
                    return 0.0
                v = self.terminal_voltage(-self.discharge_limit_a)
                return -min(self.discharge_limit_a * v, self.discharge_power_limit_w, load_w)
        return 0.0

    # -- stepping ----------------------------------------------------------------------
    def apply(self, current_a: float, dt: float, *, room_c: float) -> None:
        """Pass `current_a` (+ charge) through the pack for `dt` seconds."""
        if not self.connected and current_a < 0:
            current_a = 0.0
        if current_a > 0 and not self.connected:
            self.connected = True
            self.log.append("battery reconnected (charging)")
        chem = self.spec.chemistry
        cap = self.capacity_ah
        float_only = current_a > 0 and self.soc >= FULL_SOC
        ocv = self.ocv()
        self.current_a = current_a
        self.voltage = ocv + current_a * self.resistance
        self.power_w = self.voltage * current_a
        stored_ah = 0.0 if float_only else current_a * dt / 3600.0
        if stored_ah > 0:
            stored_ah *= COULOMBIC[chem]
        self.soc = min(100.0, max(0.0, self.soc + stored_ah / cap * 100.0))
        joule = current_a * current_a * self.resistance
        if current_a > 0:
            self.loss_w = joule + (ocv * current_a * (1 - COULOMBIC[chem]) if not float_only else 0)
            if float_only:
                self.loss_w = self.power_w
        else:
            self.loss_w = joule
        # Ageing: equivalent full cycles, faster when hot (lead-acid halves per ≈ 9 °C above 20).
        throughput = abs(current_a) * dt / 3600.0
        self.ah_throughput += throughput
        if current_a < 0:
            self.ah_discharged += throughput
        cycles = throughput / (2.0 * self.spec.capacity_ah)
        heat = 2.0 ** (max(0.0, self.temp_c - 20.0) / 9.0)
        self.soh = max(0.0, self.soh - cycles * 20.0 / CYCLES_TO_80[chem] * heat)
        # Temperature: relaxes to the room, warmed by the I²R loss.
        heat_cap = HEAT_CAPACITY_J_PER_K_AH * self.spec.capacity_ah
        k = 1.0 - math.exp(-dt / THERMAL_TAU_S)
        self.temp_c += (room_c - self.temp_c) * k + joule * dt / heat_cap
        if current_a < 0 and (self.soc <= 0.0 or self.voltage <= self.cutoff_v):
            self.connected = False
            self.log.append(
                f"battery low-voltage disconnect at SOC {self.soc:.1f} %, {self.voltage:.1f} V"
            )

    def cell_voltages(self) -> tuple[float, float]:
        """(min, max) cell voltage: a spread that grows at both ends of the SOC range."""
        v = self.voltage / self.cells
        spread = 0.004 + 0.03 * (max(0.0, 10.0 - self.soc) + max(0.0, self.soc - 95.0)) / 10.0
        return v - spread, v + spread

    def current_for_power(self, power_w: float) -> float:
        """Terminal current that delivers `power_w` (+ charge) at the pack's terminals.

        Solves P = (OCV + I·R)·I for I; a discharge beyond the pack's maximum power gives the
        current at maximum power.
        """
        ocv = self.ocv()
        r = self.resistance
        disc = ocv * ocv + 4.0 * r * power_w
        if disc < 0:
            return -ocv / (2.0 * r)
        return (-ocv + math.sqrt(disc)) / (2.0 * r)


__all__ = [
    "CELLS",
    "NOMINAL_V_PER_CELL",
    "Battery",
    "BatteryMode",
    "nominal_voltage",
    "ocv_per_cell",
]
