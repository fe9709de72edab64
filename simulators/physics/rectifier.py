"""The rectifier plant: N modules of 50 A sharing the DC load, their losses, ECO hibernation.

Module losses follow the usual three-term model, `P_loss = P_rated·(a + b·x + c·x²)` with `x` the
module's load fraction: a fixed part (fans, control, magnetising), a part proportional to the
load and an I²R part. With the constants below the efficiency peaks at ≈ 96.6 % around 40–60 %
load and falls to ≈ 94 % at 10 % and ≈ 90 % at 5 % — which is why putting surplus modules to
sleep (ECO) saves energy at night.

Whether the plant may be in ECO is decided by the pure rules in `protocols.control.eco`, the same
ones the aggregator reasons with (DOMAIN.md: below the energy-saving point only; leave on
battery charge or discharge current, AC failure or a module fault; five entries/exits in an hour
lock ECO out for 24 h). This module applies the decision to the modules.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from protocols.control import eco
from simulators.spec import RectifierSpec

LOSS_A = 0.005
LOSS_B = 0.015
LOSS_C = 0.020


def module_efficiency(x: float) -> float:
    """Efficiency of one module at load fraction `x` (0 at no load)."""
    if x <= 0.0:
        return 0.0
    return x / (x + LOSS_A + LOSS_B * x + LOSS_C * x * x)


def module_loss_w(x: float, rated_w: float) -> float:
    return rated_w * (LOSS_A + LOSS_B * x + LOSS_C * x * x)


@dataclass
class RectifierPlant:
    spec: RectifierSpec
    float_voltage: float = field(init=False)
    current_limit_a: float = field(init=False)  # battery charge current limit
    eco_enable: bool = field(init=False)
    eco_save_point: float = field(init=False)
    failed: set[int] = field(default_factory=set)
    asleep: set[int] = field(default_factory=set)
    eco_state: eco.EcoState = field(default_factory=eco.EcoState)
    eco_alarm: bool = False
    eco_reason: str = ""
    # Outputs of the last step.
    mains: bool = True
    voltage: float = 0.0
    output_current_a: float = 0.0
    output_power_w: float = 0.0
    input_power_w: float = 0.0
    loss_w: float = 0.0
    module_current_a: float = 0.0
    dc_energy_kwh: float = 0.0
    log: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.float_voltage = self.spec.float_voltage
        self.current_limit_a = self.spec.current_limit_a
        self.eco_enable = self.spec.eco_enable
        self.eco_save_point = self.spec.eco_save_point
        self.voltage = self.float_voltage
        self._params = eco.EcoParams(saving_point=self.eco_save_point)

    @property
    def healthy(self) -> list[int]:
        return [i for i in range(self.spec.modules) if i not in self.failed]

    @property
    def awake(self) -> list[int]:
        return [i for i in self.healthy if i not in self.asleep]

    # The counts the physics asks for every step, without building the lists: `failed` holds
    # installed modules only and `asleep` healthy ones only (fail_module wakes what it fails).
    @property
    def healthy_count(self) -> int:
        return self.spec.modules - len(self.failed)

    @property
    def awake_count(self) -> int:
        return self.spec.modules - len(self.failed) - len(self.asleep)

    @property
    def eco_active(self) -> bool:
        return self.eco_state.active

    @property
    def eco_locked_out(self) -> bool:
        return self.eco_state.locked_until is not None

    def capacity_a(self) -> float:
        """What the awake modules can deliver now."""
        return self.awake_count * self.spec.module_rating_a

    @property
    def efficiency(self) -> float:
        return self.output_power_w / self.input_power_w if self.input_power_w > 0 else 0.0

    def fail_module(self, index: int) -> None:
        if index not in self.failed:
            self.failed.add(index)
            self.asleep.discard(index)
            self.log.append(f"rectifier module {index + 1} failed")

    def repair_module(self, index: int) -> None:
        if index in self.failed:
            self.failed.discard(index)
            self.log.append(f"rectifier module {index + 1} back in service")

    def deliver(self, current_a: float, voltage: float, *, mains: bool, dt: float) -> None:
        """Supply `current_a` at `voltage` for `dt` (the caller kept it within `capacity_a()`)."""
        self.voltage = voltage
        self.mains = mains
        if not mains:
            self.output_current_a = self.output_power_w = self.input_power_w = 0.0
            self.loss_w = self.module_current_a = 0.0
            return
        awake = self.awake_count
        current_a = max(0.0, current_a)
        rated_w = self.spec.module_rating_a * voltage
        per = current_a / awake if awake else 0.0
        loss = awake * module_loss_w(per / self.spec.module_rating_a, rated_w)
        loss += len(self.asleep) * self.spec.standby_w + self.spec.controller_w
        self.module_current_a = per
        self.output_current_a = current_a
        self.output_power_w = current_a * voltage
        self.loss_w = loss
        self.input_power_w = self.output_power_w + loss
        self.dc_energy_kwh += self.output_power_w * dt / 3.6e6

    def update_eco(
        self,
        t: float,
        *,
        load_w: float,
        battery_current_a: float,
        battery_capacity_ah: float,
        mains: bool,
    ) -> None:
        """Apply the ECO rules for the next step: which modules hibernate."""
        rated_w = self.spec.module_rating_a * self.float_voltage
        healthy = self.healthy_count
        capacity_w = max(1.0, healthy * rated_w)
        res = eco.decide_eco(
            self.eco_state,
            eco.EcoInputs(
                requested=self.eco_enable,
                load_w=load_w,
                plant_capacity_w=capacity_w,
                battery_current_a=battery_current_a,
                battery_capacity_ah=battery_capacity_ah,
                ac_ok=mains,
                rectifier_fault=bool(self.failed),
            ),
            t,
            self._eco_params(),
        )
        if res.active != self.eco_state.active or res.alarm:
            self.log.append(res.reason)
        if res.alarm:
            self.eco_alarm = True
        if res.state.locked_until is None:
            self.eco_alarm = False
        self.eco_state = res.state
        self.eco_reason = res.reason
        if res.active and healthy:
            keep = eco.eco_modules_on(load_w, rated_w, healthy)
            self.asleep = set(self.healthy[keep:])
        elif self.asleep:
            self.asleep = set()

    def _eco_params(self) -> eco.EcoParams:
        """The ECO rule's parameters, made again only when the saving point is changed."""
        if self._params.saving_point != self.eco_save_point:
            self._params = eco.EcoParams(saving_point=self.eco_save_point)
        return self._params


__all__ = ["RectifierPlant", "module_efficiency", "module_loss_w"]
