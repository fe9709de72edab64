"""What happens to a site over time: mains outages, heat waves, rectifier module failures.

A pure function of time: `EventSchedule.at(t)` says which events are under way, so the physics
gets the same answer whatever its step size and a fleet's sites can be stepped independently.
Random outages are drawn per local day from the site's seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from simulators.physics.noise import uniform
from simulators.spec import (
    EventSpec,
    HeatWaveEvent,
    ModuleFailureEvent,
    OutageEvent,
    RandomOutages,
)


@dataclass(frozen=True)
class Conditions:
    """The events under way at one instant."""

    mains: bool = True
    heat_c: float = 0.0
    failed_modules: frozenset[int] = frozenset()


def _poisson(lam: float, u: float) -> int:
    """Inverse-CDF Poisson draw from one uniform number."""
    k, p = 0, math.exp(-lam)
    cdf = p
    while u > cdf and k < 100:
        k += 1
        p *= lam / k
        cdf += p
    return k


class EventSchedule:
    def __init__(self, events: tuple[EventSpec, ...], *, seed: int) -> None:
        self._fixed = events
        self._random = [e for e in events if isinstance(e, RandomOutages)]
        self._seed = seed
        self._day_outages = lru_cache(maxsize=8)(self._outages_of_day)

    def _outages_of_day(self, day: int) -> tuple[tuple[float, float], ...]:
        out: list[tuple[float, float]] = []
        for j, r in enumerate(self._random):
            n = _poisson(r.per_day, uniform(self._seed, 31, j, day))
            for k in range(n):
                start = day * 86400.0 + uniform(self._seed, 32, j, day, k) * 86400.0
                u = max(1e-9, uniform(self._seed, 33, j, day, k))
                out.append((start, start - math.log(u) * r.mean_duration_s))
        return tuple(out)

    def random_outages(self, t0: float, t1: float) -> list[tuple[float, float]]:
        """The random outages (start, end) that overlap [t0, t1)."""
        if not self._random:
            return []
        res: list[tuple[float, float]] = []
        for day in range(int(t0 // 86400) - 2, int(t1 // 86400) + 1):
            res.extend(o for o in self._day_outages(day) if o[0] < t1 and o[1] > t0)
        return sorted(res)

    def at(self, t: float) -> Conditions:
        mains = True
        heat = 0.0
        failed: set[int] = set()
        for e in self._fixed:
            if isinstance(e, OutageEvent):
                if e.at <= t < e.at + e.duration_s:
                    mains = False
            elif isinstance(e, HeatWaveEvent):
                if e.at <= t < e.at + e.duration_s:
                    heat += e.delta_c
            elif isinstance(e, ModuleFailureEvent) and (
                e.at <= t and (e.duration_s is None or t < e.at + e.duration_s)
            ):
                failed.add(e.module)
        if mains and self._random and self.random_outages(t, t + 1e-6):
            mains = False
        return Conditions(mains=mains, heat_c=heat, failed_modules=frozenset(failed))


__all__ = ["Conditions", "EventSchedule"]
