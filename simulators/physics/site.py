"""One site's equipment stepped together: the single step function every simulator mode uses.

Each step, in order: events (mains, heat, module faults) → breaker mechanisms → traffic and the
channels' DC draw → the air-conditioner and room → the DC bus (rectifiers, battery, load) →
breaker metering → grid meter → the rectifier's ECO decision for the next step. Energy is
accounted per flow in `totals`, so a test can check the balance over a day.

The DC bus is solved in watts: the battery's mode asks for a power (+ charge), the rectifiers
supply load + charge up to their capacity, and the battery covers whatever they cannot — all of
it when the mains is down. When the battery is cut off too the site goes dark.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import NamedTuple

from simulators.physics.aircon import Aircon, Climate
from simulators.physics.battery import Battery
from simulators.physics.breaker import Breaker
from simulators.physics.events import Conditions, EventSchedule
from simulators.physics.localtime import LocalHour
from simulators.physics.meter import GridMeter
from simulators.physics.rectifier import RectifierPlant
from simulators.physics.traffic import ChannelLoads, TrafficCurve, saving_at
from simulators.spec import LoadKind, SavingLevel, SiteSpec

log = logging.getLogger(__name__)

MAX_STEP_S = 10.0
"""`advance_to` splits longer intervals into steps of at most this many simulated seconds."""


class SimLogEntry(NamedTuple):
    t: float
    source: str
    message: str


@dataclass
class Totals:
    """Energy through each flow since the start, in kWh, for balance checks and reports."""

    dc_load_kwh: float = 0.0
    unserved_kwh: float = 0.0
    rect_out_kwh: float = 0.0
    rect_in_kwh: float = 0.0
    batt_charge_kwh: float = 0.0
    batt_discharge_kwh: float = 0.0
    batt_loss_kwh: float = 0.0
    aircon_kwh: float = 0.0
    other_ac_kwh: float = 0.0
    import_kwh: float = 0.0
    dark_s: float = 0.0
    outage_s: float = 0.0


@dataclass
class Overrides:
    """Conditions forced from outside (control API, tests), on top of the scheduled events."""

    mains: bool | None = None
    heat_c: float = 0.0
    failed_modules: set[int] = field(default_factory=set)
    saving: dict[int, SavingLevel] = field(default_factory=dict)


class SiteModel:
    """The physics of one site. Pure: time comes in through `step`, nothing is read or written."""

    def __init__(self, spec: SiteSpec, *, start: float) -> None:
        self.spec = spec
        self.t = start
        self.local = LocalHour(spec.tz)
        self.traffic_curve = TrafficCurve(spec.traffic, seed=spec.seed, local=self.local)
        self.climate = Climate(spec.climate, seed=spec.seed, local=self.local)
        self.events = EventSchedule(spec.events, seed=spec.seed)
        self.breaker = Breaker(spec.breaker)
        self.loads = ChannelLoads(spec.breaker.channels, scale=spec.traffic.scale)
        self.rectifier = RectifierPlant(spec.rectifier)
        self.battery = Battery(spec.battery)
        self.aircon = Aircon(spec.aircon)
        self.meter = GridMeter(spec.meter, seed=spec.seed)
        self.overrides = Overrides()
        self.totals = Totals()
        self.log: deque[SimLogEntry] = deque(maxlen=1000)
        self.conditions = Conditions()
        self.traffic = 0.0
        self.dc_load_w = 0.0
        self.bus_v = spec.rectifier.float_voltage
        self.dark = False
        self._heat_w = 0.0
        self._ac_channel = next(
            (i for i, c in enumerate(spec.breaker.channels) if c.kind is LoadKind.AIRCON), None
        )
        self.aircon.outdoor_c = self.climate.outdoor_c(start)

    # -- time --------------------------------------------------------------------------
    def advance_to(self, t: float, *, max_step: float = MAX_STEP_S) -> None:
        """Step until simulated time `t`, in steps of at most `max_step` seconds."""
        while t - self.t > 1e-9:
            dt = min(max_step, t - self.t)
            self.step(dt, self.t + dt)

    def step(self, dt: float, t: float) -> None:
        """Advance every device by `dt` seconds, ending at Unix time `t`."""
        if dt <= 0:
            return
        t0 = t - dt
        cond = self._conditions(t0)
        mains = cond.mains
        self.conditions = cond
        rect = self.rectifier
        if rect.failed != cond.failed_modules:
            for i in range(rect.spec.modules):
                if i in cond.failed_modules:
                    rect.fail_module(i)
                else:
                    rect.repair_module(i)
        self.breaker.step(dt)

        # Traffic and the channels' DC draw.
        hour = self.local.hour(t0)
        self.traffic = self.traffic_curve.at(t0)
        scheduled = saving_at(self.spec.traffic, hour)
        n = len(self.loads.channels)
        forced = self.overrides.saving
        saving = [forced.get(i, scheduled) for i in range(n)] if forced else [scheduled] * n
        closed = self.breaker.closed
        powers = self.loads.powers(closed, self.traffic, saving)

        # Air-conditioner and room (heat from the previous step's equipment).
        ac = self.aircon
        if self._ac_channel is None:
            ac.powered = mains
        else:
            ac.powered = closed[self._ac_channel] and not self.dark
        ac.step(
            dt,
            heat_w=self._heat_w,
            outdoor_c=self.climate.outdoor_c(t0, cond.heat_c),
            sun_w=self.climate.solar_w(t0),
        )
        if self._ac_channel is not None:
            powers[self._ac_channel] = ac.power_w

        # DC bus.
        demand_w = sum(powers)
        served = self._solve_bus(dt, demand_w, mains)
        if served > demand_w - 1e-6:
            served = demand_w  # rounding, not a shortfall
        if served < demand_w:
            f = served / demand_w if demand_w > 0 else 0.0
            powers = [p * f for p in powers]
        self.dc_load_w = served
        self.breaker.meter(dt, powers, self.bus_v)
        ac_dc_w = powers[self._ac_channel] if self._ac_channel is not None else 0.0
        self._heat_w = served - ac_dc_w + rect.loss_w + self.battery.loss_w

        # Grid.
        ac_grid_w = ac.power_w if self._ac_channel is None else 0.0
        other_w = self.spec.meter.other_ac_w if mains else 0.0
        self.meter.step(dt, t0, mains=mains, power_w=rect.input_power_w + ac_grid_w + other_w)

        rect.update_eco(
            t,
            load_w=rect.output_power_w if mains else served,
            battery_current_a=self.battery.current_a,
            battery_capacity_ah=self.battery.spec.capacity_ah,
            mains=mains,
        )
        self._account(dt, demand_w, served, mains, ac_grid_w, other_w)
        self.t = t
        self._collect_logs()

    def _conditions(self, t: float) -> Conditions:
        c = self.events.at(t)
        o = self.overrides
        if o.mains is None and o.heat_c == 0.0 and not o.failed_modules:
            return c  # nothing forced: the schedule's own (shared, frozen) answer
        mains = c.mains if o.mains is None else o.mains
        return Conditions(
            mains=mains,
            heat_c=c.heat_c + o.heat_c,
            failed_modules=c.failed_modules | frozenset(o.failed_modules),
        )

    def _solve_bus(self, dt: float, demand_w: float, mains: bool) -> float:
        """Share `demand_w` between rectifiers and battery; return the watts actually served.

        Invariant: rectifier output = served load + battery power (+ charge).
        """
        bat = self.battery
        rect = self.rectifier
        room = self.aircon.room_c
        if mains and rect.healthy_count:
            v = rect.float_voltage
            want = min(bat.wanted_power_w(demand_w, v), rect.current_limit_a * v)
            if rect.asleep and demand_w + max(0.0, want) > rect.capacity_a() * v:
                rect.asleep = set()  # the controller wakes sleeping modules on a load step
            asked = want
            cap_w = rect.capacity_a() * v
            want = min(asked, cap_w - demand_w)  # negative: the battery covers the deficit
            for _ in range(4):  # the bus follows the battery's voltage while it discharges
                if want >= 0:
                    break
                cap_w = rect.capacity_a() * bat.terminal_voltage(bat.current_for_power(want))
                want = min(asked, cap_w - demand_w)
            i = bat.current_for_power(want)
            bat.apply(max(i, -bat.max_discharge_a()), dt, room_c=room)
            bp = bat.power_w
            rect_w = max(0.0, min(cap_w, demand_w + bp))
            served = rect_w - bp
            bus = bat.voltage if bp < 0 else v
            self.bus_v = bus
            rect.deliver(rect_w / bus, bus, mains=True, dt=dt)
            self._set_dark(served <= 0.0 and demand_w > 0)
            return served
        # No mains (or no working rectifier): the battery carries everything it can.
        rect.deliver(0.0, bat.voltage, mains=False, dt=dt)
        if not bat.connected:
            bat.apply(0.0, dt, room_c=room)
            self.bus_v = 0.0
            self._set_dark(demand_w > 0)
            return 0.0
        i = max(bat.current_for_power(-demand_w), -bat.max_discharge_a())
        bat.apply(i, dt, room_c=room)
        self.bus_v = bat.voltage
        served = max(0.0, -bat.power_w)
        self._set_dark(served <= 0.0 and demand_w > 0)
        return served

    def _set_dark(self, dark: bool) -> None:
        if dark != self.dark:
            self.dark = dark
            msg = "site dark: no mains and battery cut off" if dark else "site powered again"
            self._log("site", msg, level=logging.WARNING if dark else logging.INFO)

    def _account(
        self, dt: float, demand_w: float, served: float, mains: bool, ac_grid_w: float, other: float
    ) -> None:
        h = dt / 3.6e6
        tot = self.totals
        tot.dc_load_kwh += served * h
        tot.unserved_kwh += max(0.0, demand_w - served) * h
        tot.rect_out_kwh += self.rectifier.output_power_w * h
        tot.rect_in_kwh += self.rectifier.input_power_w * h
        bp = self.battery.power_w
        if bp > 0:
            tot.batt_charge_kwh += bp * h
        else:
            tot.batt_discharge_kwh += -bp * h
        tot.batt_loss_kwh += self.battery.loss_w * h
        tot.aircon_kwh += self.aircon.power_w * h
        tot.other_ac_kwh += other * h
        tot.import_kwh += self.meter.import_power_w * h
        if self.dark:
            tot.dark_s += dt
        if not mains:
            tot.outage_s += dt

    def _collect_logs(self) -> None:
        if not (self.battery.log or self.rectifier.log or self.aircon.log or self.breaker.log):
            return
        for source, lst in (
            ("battery", self.battery.log),
            ("rectifier", self.rectifier.log),
            ("aircon", self.aircon.log),
            ("breaker", self.breaker.log),
        ):
            for msg in lst:
                self._log(source, msg)
            lst.clear()

    def _log(self, source: str, message: str, *, level: int = logging.INFO) -> None:
        self.log.append(SimLogEntry(self.t, source, message))
        log.log(level, "%s %s: %s", self.spec.id, source, message)

    # -- what the outside sees ---------------------------------------------------------
    @property
    def grid_import_w(self) -> float:
        return self.meter.import_power_w

    @property
    def mains(self) -> bool:
        return self.conditions.mains


__all__ = ["MAX_STEP_S", "Overrides", "SimLogEntry", "SiteModel", "Totals"]
