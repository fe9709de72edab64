"""A site living on a clock: the physics advanced to the clock's present whenever asked.

`SiteRuntime.sync()` is called on every Modbus request and by the host's ticker, so a site
nobody polls costs little and a polled site is always current. Simulated time comes from a
`protocols.clock.Clock` (a `SimClock` for fast runs, a `ManualClock` in tests).
"""

from __future__ import annotations

from protocols.clock import Clock
from simulators.physics.site import MAX_STEP_S, SiteModel
from simulators.spec import SiteSpec

MIN_SYNC_S = 0.2
"""Requests closer together than this (simulated seconds) share one physics step."""


class SiteRuntime:
    def __init__(
        self,
        spec: SiteSpec,
        clock: Clock,
        *,
        max_step_s: float = MAX_STEP_S,
        min_sync_s: float = MIN_SYNC_S,
    ) -> None:
        self.spec = spec
        self.clock = clock
        self.model = SiteModel(spec, start=clock.now())
        self.max_step_s = max_step_s
        self.min_sync_s = min_sync_s
        self._version = 0

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def now(self) -> float:
        return self.model.t

    @property
    def version(self) -> int:
        return self._version

    def touch(self) -> None:
        self._version += 1

    def sync(self) -> None:
        t = self.clock.now()
        if t - self.model.t >= self.min_sync_s:
            self.model.advance_to(t, max_step=self.max_step_s)
            self._version += 1


__all__ = ["MIN_SYNC_S", "SiteRuntime"]
