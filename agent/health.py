"""The gateway's own health, reported as points of device `gateway` (psutil).

A technician and the aggregator see a gateway whose disk is filling or whose agent is growing
before it stops reporting. Points are sent by exception like any device's (deadbands below, a
heartbeat at `[gateway] max_interval_s`); a sensor psutil cannot read on this machine (board
temperature on many VMs) is reported once as `sensor-missing`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import psutil

from agent.config import GATEWAY_DEVICE, GatewayConfig
from agent.poller import Sink
from agent.polling import ExceptionFilter
from protocols.clock import Clock, now_ms
from protocols.types import Quality, Reading, Value

log = logging.getLogger(__name__)

POINTS: tuple[tuple[str, str, float], ...] = (
    ("cpu_pct", "%", 5.0),
    ("load_1m", "", 0.2),
    ("mem_used_pct", "%", 2.0),
    ("mem_available_mb", "MB", 16.0),
    ("disk_free_mb", "MB", 64.0),
    ("disk_used_pct", "%", 1.0),
    ("temp_c", "°C", 1.0),
    ("agent_rss_mb", "MB", 1.0),
    ("agent_cpu_pct", "%", 1.0),
    ("agent_uptime_s", "s", 3600.0),
)
"""(point, unit, default deadband)."""


class GatewayHealth:
    """Samples psutil; `poll()` hands the changed points to the sink."""

    def __init__(self, config: GatewayConfig, clock: Clock, sink: Sink, *, disk_path: Path) -> None:
        self.config = config
        self.clock = clock
        self.sink = sink
        self.disk_path = config.disk_path or disk_path
        self._proc = psutil.Process(os.getpid())
        self._started = clock.now()
        bands = [config.deadbands.get(name, band) for name, _, band in POINTS]
        self._filter = ExceptionFilter(bands, int(config.max_interval_s * 1000))
        psutil.cpu_percent(interval=None)  # prime: the first call has nothing to compare with
        self._proc.cpu_percent(interval=None)
        self.last: list[Reading] = []

    def sample(self, t: int) -> list[Reading]:
        """Every health point now."""
        values: list[Value] = []
        mem = psutil.virtual_memory()
        try:
            disk = psutil.disk_usage(str(_existing(self.disk_path)))
            disk_free: Value = round(disk.free / 1e6, 1)
            disk_pct: Value = disk.percent
        except OSError:
            disk_free = disk_pct = None
        try:
            load: Value = round(os.getloadavg()[0], 2)
        except OSError:
            load = None
        values = [
            psutil.cpu_percent(interval=None),
            load,
            mem.percent,
            round(mem.available / 1e6, 1),
            disk_free,
            disk_pct,
            _temperature(),
            round(self._proc.memory_info().rss / 1e6, 1),
            self._proc.cpu_percent(interval=None),
            round(self.clock.now() - self._started),
        ]
        out = []
        for (name, _, _), v in zip(POINTS, values, strict=True):
            q = Quality.GOOD if v is not None else Quality.SENSOR_MISSING
            out.append(Reading(t, GATEWAY_DEVICE, name, v, q))
        return out

    def poll(self) -> list[Reading]:
        t = now_ms(self.clock)
        readings = self.sample(t)
        self.last = readings
        chosen = self._filter.select(t, [r.value for r in readings], [r.quality for r in readings])
        if chosen:
            self.sink([readings[i] for i in chosen])
        return readings

    async def run(self) -> None:
        """Sample every `interval_s` until cancelled."""
        while True:
            try:
                self.poll()
            except Exception:  # psutil on an odd platform must not end the agent
                log.exception("gateway health sample failed")
            await self.clock.sleep(self.config.interval_s)


def _existing(path: Path) -> Path:
    """The path, or its nearest existing parent (the outbox dir may not exist yet)."""
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _temperature() -> Value:
    """The hottest sensor psutil knows of, or None where there is none (VMs, containers)."""
    read = getattr(psutil, "sensors_temperatures", None)
    if read is None:
        return None
    try:
        sensors = read()
    except (OSError, RuntimeError):
        return None
    temps: Sequence[float] = [t.current for group in sensors.values() for t in group if t.current]
    return round(max(temps), 1) if temps else None


__all__ = ["POINTS", "GatewayHealth"]
