"""The site's grid meter: mains presence, import power and the import energy counter."""

from __future__ import annotations

from dataclasses import dataclass, field

from simulators.physics.noise import SmoothNoise
from simulators.spec import MeterSpec


@dataclass
class GridMeter:
    spec: MeterSpec
    seed: int = 0
    mains_present: bool = True
    import_power_w: float = 0.0
    import_energy_kwh: float = 0.0
    voltage_v: float = 0.0
    current_a: float = 0.0
    frequency_hz: float = 0.0
    power_factor: float = 0.0
    _v_noise: SmoothNoise = field(init=False, repr=False)
    _f_noise: SmoothNoise = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._v_noise = SmoothNoise(self.seed, 300.0)
        self._f_noise = SmoothNoise(self.seed + 1, 60.0)

    def step(self, dt: float, t: float, *, mains: bool, power_w: float) -> None:
        """Record `power_w` drawn from the grid for `dt` seconds (0 without mains)."""
        self.mains_present = mains
        p = power_w if mains else 0.0
        self.import_power_w = p
        self.import_energy_kwh += p * dt / 3.6e6
        if mains:
            self.voltage_v = self.spec.voltage_v * (1.0 + 0.02 * self._v_noise(t))
            self.frequency_hz = 50.0 + 0.03 * self._f_noise(t)
            self.power_factor = 0.97
            self.current_a = p / (self.voltage_v * self.power_factor)
        else:
            self.voltage_v = self.current_a = self.frequency_hz = self.power_factor = 0.0


__all__ = ["GridMeter"]
