"""A remotely controlled smart breaker: 8 channels, actuation delays, trips and a local lock.

A remote command does not change the contacts at once: closing takes ≈ 2 s and opening ≈ 1 s of
simulated time (DOMAIN.md), so a controller has to poll the status until it changes. While the
local lock is engaged remote commands are refused. The breaker does not know which channels are
critical; that is site configuration the agent enforces.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

from simulators.errors import RefusedError
from simulators.spec import BreakerSpec, ChannelSpec


class TripReason(IntEnum):
    """Why a channel tripped; the integer is the register code."""

    NONE = 0
    OVERLOAD = 1
    SHORT_CIRCUIT = 2
    OVER_TEMP = 3
    MANUAL = 4


@dataclass
class Channel:
    spec: ChannelSpec
    closed: bool
    commanded: bool = True  # what the command coil reads back: the last remote command
    pending: bool | None = None  # the commanded state while the mechanism moves
    remaining_s: float = 0.0
    tripped: bool = False
    trip_reason: TripReason = TripReason.NONE
    current_a: float = 0.0
    power_w: float = 0.0
    energy_kwh: float = 0.0
    operations: int = 0


@dataclass
class Breaker:
    spec: BreakerSpec
    channels: list[Channel] = field(init=False)
    locked: bool = False  # the front-panel LOCAL/REMOTE switch
    log: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.channels = [
            Channel(spec=c, closed=c.closed, commanded=c.closed) for c in self.spec.channels
        ]

    def command(self, index: int, close: bool) -> None:
        """A remote open/close; takes effect after the actuation delay."""
        ch = self.channels[index]
        if self.locked:
            raise RefusedError(f"breaker is locally locked: channel {index + 1} not switched")
        ch.commanded = close
        if ch.pending is None and ch.closed == close and not ch.tripped:
            return
        ch.pending = close
        ch.remaining_s = self.spec.close_delay_s if close else self.spec.open_delay_s
        if ch.remaining_s <= 0.0:
            self._finish(ch)

    def trip(self, index: int, reason: TripReason = TripReason.SHORT_CIRCUIT) -> None:
        ch = self.channels[index]
        ch.closed = False
        ch.pending = None
        ch.tripped = True
        ch.trip_reason = reason
        self.log.append(f"channel {index + 1} ({ch.spec.name}) tripped: {reason.name.lower()}")

    def _finish(self, ch: Channel) -> None:
        assert ch.pending is not None
        ch.closed = ch.pending
        ch.pending = None
        ch.remaining_s = 0.0
        ch.operations += 1
        if ch.closed:
            ch.tripped = False
            ch.trip_reason = TripReason.NONE

    def step(self, dt: float) -> None:
        """Advance the mechanisms."""
        for ch in self.channels:
            if ch.pending is not None:
                ch.remaining_s -= dt
                if ch.remaining_s <= 1e-9:
                    self._finish(ch)

    def meter(self, dt: float, powers_w: list[float], voltage: float) -> None:
        """Record each channel's draw for this step; trip a channel above its rating."""
        for i, (ch, p) in enumerate(zip(self.channels, powers_w, strict=True)):
            p = p if ch.closed else 0.0
            ch.power_w = p
            ch.current_a = p / voltage if voltage > 1.0 else 0.0
            ch.energy_kwh += p * dt / 3.6e6
            if ch.current_a > ch.spec.rating_a:
                self.trip(i, TripReason.OVERLOAD)

    @property
    def closed(self) -> list[bool]:
        return [ch.closed for ch in self.channels]


__all__ = ["Breaker", "Channel", "TripReason"]
