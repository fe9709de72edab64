"""Rectifier ECO (module hibernation), decided as a real DC-plant controller does it.

Self-contained so the simulator's rectifier physics and the aggregator agree (DOMAIN.md):
- enter only while the system load is below the energy-saving point (default 45 % of the
  plant's capacity) and ECO is requested;
- leave on battery charging current above max(0.005·C, 5 A), discharging current above
  max(0.003·C, 2 A) (C = battery capacity in Ah), AC failure, any rectifier fault, or load
  back above the saving point;
- five entries/exits within an hour raise an alarm and lock ECO out for 24 h.

`eco_modules_on` says how many modules stay awake in ECO (enough for the load at the modules'
efficient loading, plus redundancy).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from protocols.control.errors import ControlError


@dataclass(frozen=True, slots=True)
class EcoParams:
    saving_point: float = 0.45  # fraction of plant capacity
    charge_coeff: float = 0.005  # × C (Ah) → A
    charge_min_a: float = 5.0
    discharge_coeff: float = 0.003
    discharge_min_a: float = 2.0
    max_transitions: int = 5
    transition_window_s: float = 3600.0
    lockout_s: float = 86400.0


@dataclass(frozen=True, slots=True)
class EcoInputs:
    """Measurements at one instant. `battery_current_a`: + charging, − discharging."""

    requested: bool
    load_w: float
    plant_capacity_w: float
    battery_current_a: float = 0.0
    battery_capacity_ah: float = 100.0
    ac_ok: bool = True
    rectifier_fault: bool = False


@dataclass(frozen=True, slots=True)
class EcoState:
    active: bool = False
    transitions: tuple[float, ...] = ()  # Unix seconds of recent entries and exits
    locked_until: float | None = None


@dataclass(frozen=True, slots=True)
class EcoResult:
    active: bool
    state: EcoState  # the state to carry to the next call
    reason: str
    alarm: bool = False  # True on the call that trips the lockout


def charge_exit_a(capacity_ah: float, p: EcoParams = EcoParams()) -> float:
    return max(p.charge_coeff * capacity_ah, p.charge_min_a)


def discharge_exit_a(capacity_ah: float, p: EcoParams = EcoParams()) -> float:
    return max(p.discharge_coeff * capacity_ah, p.discharge_min_a)


def _blocker(i: EcoInputs, p: EcoParams) -> str | None:
    """Why ECO must not be on now (None: nothing forbids it)."""
    if not i.ac_ok:
        return "AC failure"
    if i.rectifier_fault:
        return "rectifier fault"
    if i.battery_current_a > charge_exit_a(i.battery_capacity_ah, p):
        return f"battery charging at {i.battery_current_a:.1f} A"
    if -i.battery_current_a > discharge_exit_a(i.battery_capacity_ah, p):
        return f"battery discharging at {-i.battery_current_a:.1f} A"
    if i.load_w >= p.saving_point * i.plant_capacity_w:
        return (
            f"load {i.load_w:.0f} W is above the saving point "
            f"({p.saving_point:.0%} of {i.plant_capacity_w:.0f} W)"
        )
    if not i.requested:
        return "ECO not requested"
    return None


def decide_eco(
    state: EcoState, inputs: EcoInputs, now: float, params: EcoParams = EcoParams()
) -> EcoResult:
    """ECO on or off at `now`, the state to keep, and whether the lockout alarm trips now."""
    if inputs.plant_capacity_w <= 0:
        raise ControlError(f"plant capacity must be > 0 W, got {inputs.plant_capacity_w}")
    recent = tuple(t for t in state.transitions if now - t < params.transition_window_s)
    locked = state.locked_until is not None and now < state.locked_until
    locked_until = state.locked_until if locked else None
    blocker = "locked out after too many ECO transitions" if locked else _blocker(inputs, params)
    want = blocker is None
    if want == state.active:
        reason = "ECO on" if want else f"ECO off: {blocker}"
        return EcoResult(state.active, EcoState(state.active, recent, locked_until), reason)
    recent = (*recent, now)
    if len(recent) >= params.max_transitions:
        until = now + params.lockout_s
        return EcoResult(
            False,
            EcoState(False, recent, until),
            f"{len(recent)} ECO entries/exits within {params.transition_window_s / 3600:g} h: "
            f"alarm, ECO locked out for {params.lockout_s / 3600:g} h",
            alarm=True,
        )
    reason = "enter ECO" if want else f"leave ECO: {blocker}"
    return EcoResult(want, EcoState(want, recent, locked_until), reason)


def eco_modules_on(
    load_w: float,
    module_w: float,
    installed: int,
    *,
    redundancy: int = 1,
    best_fraction: float = 0.5,
) -> int:
    """Modules to keep awake in ECO: the load at `best_fraction` of each module's rating
    (where efficiency peaks), plus `redundancy`, at least one, at most `installed`."""
    if module_w <= 0 or installed < 1:
        raise ControlError("module_w must be > 0 and installed >= 1")
    needed = math.ceil(max(0.0, load_w) / (module_w * best_fraction)) if load_w > 0 else 0
    return max(1, min(installed, needed + redundancy))


__all__ = [
    "EcoInputs",
    "EcoParams",
    "EcoResult",
    "EcoState",
    "charge_exit_a",
    "decide_eco",
    "discharge_exit_a",
    "eco_modules_on",
]
