"""Fault injection: what a misbehaving device does to the Modbus requests addressed to it.

Faults are set per device (by name), on the fly, and end by themselves. A fault's window is in
wall-clock seconds (`time.monotonic`) when set from the control API or a test, or in simulated
seconds when a scenario schedules it; `FaultBoard.active` is asked with both clocks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class FaultKind(StrEnum):
    LATENCY = "latency"  # answers, but late
    TIMEOUT = "timeout"  # no answer at all; the connection stays up
    EXCEPTION = "exception"  # every request gets an exception response
    GARBAGE = "garbage"  # reads return random words / bits
    DISCONNECT = "disconnect"  # the server drops the connection on each request
    GONE = "gone"  # the device disappears: connections dropped, no answer, then it returns


class Clock(StrEnum):
    WALL = "wall"
    SIM = "sim"


DEVICE_FAILURE = 4
DEVICE_BUSY = 6


@dataclass(frozen=True)
class Fault:
    kind: FaultKind
    start: float
    end: float
    clock: Clock = Clock.WALL
    latency_s: float = 0.5
    exception_code: int = DEVICE_FAILURE
    probability: float = 1.0  # share of requests affected (1: all)

    def covers(self, wall: float, sim: float) -> bool:
        t = wall if self.clock is Clock.WALL else sim
        return self.start <= t < self.end

    def describe(self) -> str:
        extra = {
            FaultKind.LATENCY: f" {self.latency_s * 1000:.0f} ms",
            FaultKind.EXCEPTION: f" code {self.exception_code}",
        }.get(self.kind, "")
        return f"{self.kind.value}{extra}"


@dataclass
class FaultBoard:
    """The faults of many devices, by device name."""

    faults: dict[str, list[Fault]] = field(default_factory=dict)

    def add(self, device: str, fault: Fault) -> None:
        self.faults.setdefault(device, []).append(fault)

    def clear(self, device: str | None = None) -> None:
        if device is None:
            self.faults.clear()
        else:
            self.faults.pop(device, None)

    def active(self, device: str, wall: float, sim: float) -> Fault | None:
        """The fault in force for `device` now (the latest set wins), dropping expired ones."""
        lst = self.faults.get(device)
        if not lst:
            return None
        live = [f for f in lst if f.end > (wall if f.clock is Clock.WALL else sim)]
        if len(live) != len(lst):
            self.faults[device] = live
        for f in reversed(live):
            if f.covers(wall, sim):
                return f
        return None

    def summary(self, wall: float, sim: float) -> dict[str, str]:
        """Device -> the fault in force, for status displays."""
        out: dict[str, str] = {}
        for device in list(self.faults):
            f = self.active(device, wall, sim)
            if f is not None:
                out[device] = f.describe()
        return out


__all__ = ["DEVICE_BUSY", "DEVICE_FAILURE", "Clock", "Fault", "FaultBoard", "FaultKind"]
