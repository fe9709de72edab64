"""What happens to a site over time: mains outages, heat waves, rectifier module failures.

A pure function of time: `EventSchedule.at(t)` says which events are under way, so the physics
gets the same answer whatever its step size and a fleet's sites can be stepped independently.
Random outages are drawn per local day from the site's seed.

`at` is asked once per physics step, so it remembers what does not move between steps: the
scheduled events' conditions until the next start or end of one of them, and the random outages
near the day being stepped.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass, replace
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
        # The scheduled events only change the conditions where one of them starts or ends.
        edges: set[float] = set()
        for e in events:
            if isinstance(e, OutageEvent | HeatWaveEvent | ModuleFailureEvent):
                edges.add(e.at)
                if e.duration_s is not None:
                    edges.add(e.at + e.duration_s)
        self._edges = sorted(edges)
        self._scheduled = Conditions()
        self._scheduled_span = (math.inf, -math.inf)  # [from, until) `_scheduled` holds for
        self._near_days = (0, -1)
        self._near: tuple[tuple[float, float], ...] = ()

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
        lo, hi = self._scheduled_span
        if not lo <= t < hi:
            self._scheduled = self._scheduled_at(t)
            i = bisect_right(self._edges, t)
            lo = self._edges[i - 1] if i > 0 else -math.inf
            hi = self._edges[i] if i < len(self._edges) else math.inf
            self._scheduled_span = (lo, hi)
        c = self._scheduled
        if c.mains and self._random and self._in_random_outage(t):
            return replace(c, mains=False)
        return c

    def _scheduled_at(self, t: float) -> Conditions:
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
        return Conditions(mains=mains, heat_c=heat, failed_modules=frozenset(failed))

    def _in_random_outage(self, t: float) -> bool:
        """`random_outages(t, t + 1e-6)` is not empty, with the days it looks at kept."""
        t1 = t + 1e-6
        days = (int(t // 86400) - 2, int(t1 // 86400))
        if days != self._near_days:
            self._near = tuple(
                o for day in range(days[0], days[1] + 1) for o in self._day_outages(day)
            )
            self._near_days = days
        return bool(self._near) and any(start < t1 and end > t for start, end in self._near)


__all__ = ["Conditions", "EventSchedule"]
