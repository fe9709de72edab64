"""What the fleet runner shows: one look at the fleet (from the aggregator's API and /metrics)
and the CPU and memory its processes use, by role."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import psutil


@dataclass
class FleetFigures:
    """One look at the running fleet."""

    sim_time: float = 0.0
    wall_s: float = 0.0
    sites: int = 0
    online: int = 0
    readings_stored: int = 0
    readings_per_s: float = 0.0
    load_kw: float = 0.0
    grid_kw: float = 0.0
    soc_avg: float | None = None
    alarms_active: int = 0
    alarms_by_kind: dict[str, int] = field(default_factory=dict)
    modes: dict[str, int] = field(default_factory=dict)
    cpu_pct: dict[str, float] = field(default_factory=dict)  # % of one core, by role
    rss_mb: dict[str, float] = field(default_factory=dict)
    look_ms: float = 0.0  # how long this look at the aggregator's API took
    injections_done: int = 0
    injections_total: int = 0
    last_event: str = ""


def metric_value(text: str, name: str) -> float:
    """A sample's value in Prometheus text (the first series of that name); 0 if absent."""
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def add_sites(f: FleetFigures, sites: Iterable[dict[str, Any]]) -> None:
    """Fold `/api/sites` into the figures: online, load, grid import, SOC, modes."""
    socs = []
    for s in sites:
        f.online += bool(s["online"])
        kp = s["key_points"]
        f.load_kw += (kp.get("load_w") or 0.0) / 1000
        f.grid_kw += (kp.get("grid_import_w") or 0.0) / 1000
        if kp.get("soc") is not None:
            socs.append(kp["soc"])
        f.modes[s["mode"]] = f.modes.get(s["mode"], 0) + 1
    f.soc_avg = sum(socs) / len(socs) if socs else None


def add_alarms(f: FleetFigures, alarms: Iterable[dict[str, Any]]) -> None:
    for a in alarms:
        f.alarms_active += 1
        f.alarms_by_kind[a["kind"]] = f.alarms_by_kind.get(a["kind"], 0) + 1


class CpuSampler:
    """CPU (% of one core since the last sample) and RSS (MB) of processes, summed by role."""

    def __init__(self) -> None:
        self._prev: dict[int, float] = {}
        self._wall: float | None = None

    def sample(self, procs: Iterable[tuple[str, int]]) -> tuple[dict[str, float], dict[str, float]]:
        now = time.monotonic()
        cpu: dict[str, float] = {}
        rss: dict[str, float] = {}
        interval = None if self._wall is None else now - self._wall
        for role, pid in procs:
            try:
                p = psutil.Process(pid)
                times = p.cpu_times()
                used = times.user + times.system
                mem = p.memory_info().rss / 1e6
            except psutil.Error:
                continue
            prev = self._prev.get(pid)
            self._prev[pid] = used
            rss[role] = rss.get(role, 0.0) + mem
            if interval and prev is not None:
                cpu[role] = cpu.get(role, 0.0) + 100.0 * (used - prev) / interval
        self._wall = now
        return cpu, rss


def figures_dict(f: FleetFigures) -> dict[str, Any]:
    return asdict(f)


def summary_lines(f: FleetFigures, *, speed: float) -> list[str]:
    cpu = ", ".join(f"{k} {v:.0f}%" for k, v in sorted(f.cpu_pct.items()))
    return [
        f"sites {f.online}/{f.sites} online at {speed:g}x; {f.readings_stored} readings stored "
        f"({f.readings_per_s:.0f}/s)",
        f"load {f.load_kw:.1f} kW, grid import {f.grid_kw:.1f} kW, alarms {f.alarms_active}",
        f"CPU (% of a core): {cpu}",
    ]


__all__ = [
    "CpuSampler",
    "FleetFigures",
    "add_alarms",
    "add_sites",
    "figures_dict",
    "metric_value",
    "summary_lines",
]
