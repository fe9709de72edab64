"""Outdoor climate, the equipment room's temperature and the air-conditioner that cools it.

The room is one thermal mass: `C·dT/dt = Q_equipment + Q_sun + UA·(T_out - T_room) - Q_cool`.
Every watt the telecom equipment, rectifiers and battery draw ends up as heat in the room. The AC
is a fixed-speed unit cycling between setpoint ± hysteresis/2; its electrical power is
`Q_cool / COP + fan`, with a COP that falls as the outdoor temperature rises.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import IntEnum

from simulators.physics.localtime import LocalHour
from simulators.physics.noise import uniform
from simulators.spec import AirconSpec, ClimateSpec

PEAK_HOUR = 15.0
COP_MIN = 1.2
COP_MAX = 6.0


class AirconMode(IntEnum):
    """Operating modes; the integer is the register code (DOMAIN.md AC gateway map)."""

    COOL = 0
    HEAT = 1
    AUTO = 2
    DRY = 3
    FAN = 5


class Climate:
    """Outdoor temperature and sun on the shelter: a daily cosine, per-day jitter, heat waves."""

    def __init__(self, spec: ClimateSpec, *, seed: int, local: LocalHour) -> None:
        self.spec = spec
        self._seed = seed
        self._local = local
        self._jitter_day: int | None = None
        self._jitter_c = 0.0

    def jitter_c(self, day: int) -> float:
        """The local day's random offset from the mean."""
        if day != self._jitter_day:
            self._jitter_c = (uniform(self._seed, 7, day) * 2.0 - 1.0) * self.spec.day_jitter_c
            self._jitter_day = day
        return self._jitter_c

    def outdoor_c(self, t: float, extra_c: float = 0.0) -> float:
        s = self.spec
        h = self._local.hour(t)
        jitter = self.jitter_c(self._local.day(t))
        daily = s.swing_c / 2.0 * math.cos(2.0 * math.pi * (h - PEAK_HOUR) / 24.0)
        return s.mean_c + daily + jitter + extra_c

    def solar_w(self, t: float) -> float:
        h = self._local.hour(t)
        if not 6.0 <= h <= 18.0:
            return 0.0
        return self.spec.solar_w * math.sin(math.pi * (h - 6.0) / 12.0)


def cop(spec: AirconSpec, outdoor_c: float) -> float:
    """Coefficient of performance for cooling at an outdoor temperature."""
    return min(COP_MAX, max(COP_MIN, spec.cop_at_25c - spec.cop_slope * (outdoor_c - 25.0)))


@dataclass
class Aircon:
    spec: AirconSpec
    on: bool = field(init=False)
    setpoint_c: float = field(init=False)
    mode: AirconMode = AirconMode.COOL
    room_c: float = field(init=False)
    compressor: bool = False
    powered: bool = True
    alarm_high_temp: bool = False
    # Outputs of the last step.
    power_w: float = 0.0
    cooling_w: float = 0.0
    cop: float = 0.0
    outdoor_c: float = 0.0
    runtime_s: float = 0.0
    energy_kwh: float = 0.0
    log: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.on = self.spec.on
        self.setpoint_c = self.spec.setpoint_c
        self.room_c = (
            self.spec.initial_room_c if self.spec.initial_room_c is not None else self.setpoint_c
        )

    def _control(self) -> None:
        half = self.spec.hysteresis_c / 2.0
        if not (self.on and self.powered) or self.mode is AirconMode.FAN:
            self.compressor = False
            return
        if self.mode is AirconMode.HEAT:
            if self.room_c < self.setpoint_c - half:
                self.compressor = True
            elif self.room_c > self.setpoint_c + half:
                self.compressor = False
            return
        if self.room_c > self.setpoint_c + half:
            self.compressor = True
        elif self.room_c < self.setpoint_c - half:
            self.compressor = False

    def step(self, dt: float, *, heat_w: float, outdoor_c: float, sun_w: float) -> None:
        """Advance the room by `dt` with `heat_w` of equipment heat inside."""
        self._control()
        self.outdoor_c = outdoor_c
        self.cop = cop(self.spec, outdoor_c)
        running = self.on and self.powered
        q = 0.0
        p = self.spec.fan_w if running else 0.0
        if self.compressor:
            if self.mode is AirconMode.HEAT:
                q = -self.spec.cooling_w
                p += self.spec.cooling_w / (self.cop + 1.0)
            else:
                q = self.spec.cooling_w
                p += self.spec.cooling_w / self.cop
            self.runtime_s += dt
        self.cooling_w = q
        self.power_w = p
        self.energy_kwh += p * dt / 3.6e6
        # The fan's own power is heat inside the room too.
        ua = self.spec.insulation_w_per_k
        c = self.spec.thermal_mass_kj_per_k * 1000.0
        gain = heat_w + sun_w + (self.spec.fan_w if running else 0.0) - q
        # Exact for the linear part so large steps stay stable.
        t_eq = outdoor_c + gain / ua
        self.room_c = t_eq + (self.room_c - t_eq) * math.exp(-ua * dt / c)
        if not self.alarm_high_temp and self.room_c >= self.spec.alarm_temp_c:
            self.alarm_high_temp = True
            self.log.append(f"room temperature high: {self.room_c:.1f} °C")
        elif self.alarm_high_temp and self.room_c < self.spec.alarm_temp_c - 1.0:
            self.alarm_high_temp = False
            self.log.append(f"room temperature back to {self.room_c:.1f} °C")


__all__ = ["Aircon", "AirconMode", "Climate", "cop"]
