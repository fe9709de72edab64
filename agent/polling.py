"""Pure polling decisions: when each device is due, how a silent device is backed off, which
readings are worth sending (report by exception with deadbands and a heartbeat).

Nothing here reads a clock or touches a device: times come in as arguments and random numbers
come in as `u` in [0, 1), so every rule is tested with plain tables.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from protocols.types import Quality, Value


def jittered(interval: float, jitter: float, u: float) -> float:
    """`interval` spread uniformly by ±`jitter` (a fraction), so devices and sites drift apart."""
    return interval * (1.0 + jitter * (2.0 * u - 1.0))


def backoff_delay(failures: int, *, interval: float, factor: float, cap: float) -> float:
    """Delay before the next attempt after `failures` consecutive failed polls.

    0 failures → the normal interval; then interval·factor^n, never above `cap` (but never
    below the normal interval either, if someone configures a cap shorter than it).
    """
    if failures <= 0:
        return interval
    # Guard the power against overflow for a device that has been dead for weeks.
    exp = min(failures, 64)
    return max(interval, min(cap, interval * factor**exp))


def frame_gap_s(baud: int, *, bytesize: int = 8, parity: str = "N", stopbits: int = 1) -> float:
    """The RTU silent interval between frames: 3.5 character times, 1.75 ms above 19,200 baud
    (Modbus over serial line, §2.5.1.1)."""
    if baud > 19200:
        return 0.00175
    bits = 1 + bytesize + (0 if parity == "N" else 1) + stopbits
    return 3.5 * bits / baud


@dataclass
class DeviceSchedule:
    """When one device is next due and how many polls in a row have failed.

    The schedule is anchored to the previous due time (no drift from poll durations); if the
    poller fell more than one interval behind, it restarts from `now` rather than bursting.
    """

    interval: float
    jitter: float = 0.1
    backoff_factor: float = 2.0
    backoff_max: float = 300.0
    next_due: float = 0.0
    failures: int = 0
    last_ok: float | None = None
    last_error: str | None = None
    polls: int = 0

    def start(self, now: float, u: float) -> None:
        """First poll: spread over one interval so devices of a bus do not all start at once."""
        self.next_due = now + self.interval * self.jitter * u

    def due_in(self, now: float) -> float:
        return max(0.0, self.next_due - now)

    def on_success(self, now: float, u: float) -> bool:
        """Record a good poll; True when it ends a failure streak (log the recovery once)."""
        recovered = self.failures > 0
        self.failures = 0
        self.last_ok = now
        self.last_error = None
        self.polls += 1
        nxt = self.next_due + jittered(self.interval, self.jitter, u)
        if nxt <= now:
            nxt = now + jittered(self.interval, self.jitter, u)
        self.next_due = nxt
        return recovered

    def on_failure(self, now: float, u: float, error: str) -> bool:
        """Record a failed poll and back off; True when it starts a streak (log it once)."""
        first = self.failures == 0
        self.failures += 1
        self.last_error = error
        self.polls += 1
        delay = backoff_delay(
            self.failures, interval=self.interval, factor=self.backoff_factor, cap=self.backoff_max
        )
        self.next_due = now + jittered(delay, self.jitter, u)
        return first


def next_due(schedules: Sequence[DeviceSchedule]) -> int:
    """Index of the schedule due first (ties: config order)."""
    best = 0
    for i in range(1, len(schedules)):
        if schedules[i].next_due < schedules[best].next_due:
            best = i
    return best


@dataclass
class ExceptionFilter:
    """Report by exception for one device's points, indexed like the device's point list.

    A reading is sent when it is the point's first, its quality changed, its value changed by
    more than the point's deadband (0 = any change) since the last *sent* value (so slow drift
    is reported eventually), or `max_interval_ms` passed since the last sent one (heartbeat).
    """

    deadbands: Sequence[float]
    max_interval_ms: int
    _value: list[Value] = field(init=False, repr=False)
    _quality: list[int] = field(init=False, repr=False)
    _t: list[int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        n = len(self.deadbands)
        self._value = [None] * n
        self._quality = [-1] * n
        self._t = [-(2**62)] * n

    def select(self, t: int, values: Sequence[Value], qualities: Sequence[Quality]) -> list[int]:
        """Indices of the points to send at time `t` (ms); remembers them as sent."""
        out: list[int] = []
        horizon = t - self.max_interval_ms
        last_v, last_q, last_t, bands = self._value, self._quality, self._t, self.deadbands
        for i, v in enumerate(values):
            q = int(qualities[i])
            if q != last_q[i] or last_t[i] <= horizon or _changed(last_v[i], v, bands[i]):
                out.append(i)
                last_v[i] = v
                last_q[i] = q
                last_t[i] = t
        return out

    def forget(self) -> None:
        """Send everything next time (after a reconnect or a config reload)."""
        self.__post_init__()


def _changed(old: Value, new: Value, band: float) -> bool:
    if old is None or new is None:
        return old is not new
    if isinstance(new, bool) or isinstance(old, bool):
        return bool(old) != bool(new)
    new_nan = isinstance(new, float) and math.isnan(new)
    old_nan = isinstance(old, float) and math.isnan(old)
    if new_nan or old_nan:
        return new_nan != old_nan
    if band <= 0:
        return old != new
    return abs(new - old) > band


__all__ = [
    "DeviceSchedule",
    "ExceptionFilter",
    "backoff_delay",
    "frame_gap_s",
    "jittered",
    "next_due",
]
