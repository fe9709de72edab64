"""Shared names and small value types used across the wire, the agent and the aggregator."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from enum import IntEnum, StrEnum
from functools import partial
from itertools import chain
from typing import NamedTuple, overload

Value = float | int | bool | None
"""A reading's value: a scaled number, a flag, or None when there is nothing trustworthy."""


class Quality(IntEnum):
    """How far a reading can be trusted. The integer is the wire code (see docs/protocol.md)."""

    GOOD = 0
    STALE = 1  # the device answered, but the value has not been refreshed when it should have
    COMM_ERROR = 2  # the read failed (timeout, disconnect, exception response); value is None
    OUT_OF_RANGE = 3  # decoded, but outside the profile's valid range; value kept for diagnosis
    SENSOR_MISSING = 4  # the device returned its sentinel for "no sensor" (0x7FFF, 0xFFFF, …)
    BAD_VALUE = 5  # the registers could not be decoded (NaN float, impossible bitfield)

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")


class Reading(NamedTuple):
    """One point's value at one instant. `t` is Unix milliseconds (UTC)."""

    t: int
    device: str
    point: str
    value: Value
    quality: Quality = Quality.GOOD


_new_reading = partial(tuple.__new__, Reading)  # ~40% faster than Reading(...) per item


class ReadingColumns(Sequence[Reading]):
    """Readings held as five parallel columns, as telemetry travels and is stored.

    A decoded batch goes through ingest (checks, storage rows, the alarm engine) with no Python
    object per reading: 100,000 `Reading` tuples a second (tracked by the cyclic GC through
    their `Quality`) cost the aggregator more in garbage collection than in decoding. Items
    are built on demand, so it is still a `Sequence[Reading]`, equal to (and hashing as) the
    tuple of the same readings. The columns are tuples of one length; treat them as read-only.
    """

    __slots__ = ("device", "point", "quality", "t", "value")

    def __init__(
        self,
        t: Sequence[int],
        device: Sequence[str],
        point: Sequence[str],
        value: Sequence[Value],
        quality: Sequence[Quality],
    ) -> None:
        if not len(t) == len(device) == len(point) == len(value) == len(quality):
            raise ValueError("reading columns differ in length")
        self.t = t
        self.device = device
        self.point = point
        self.value = value
        self.quality = quality

    @classmethod
    def of(cls, readings: Iterable[Reading]) -> ReadingColumns:
        """`readings` as columns (itself when it already is)."""
        if isinstance(readings, ReadingColumns):
            return readings
        cols = tuple(zip(*readings, strict=True))
        return cls(*cols) if cols else cls((), (), (), (), ())

    @classmethod
    def concat(cls, parts: Sequence[Sequence[Reading]]) -> ReadingColumns:
        """One sequence of the readings of every part, in order."""
        if len(parts) == 1:
            return cls.of(parts[0])
        cols = [cls.of(p) for p in parts]
        return cls(
            tuple(chain.from_iterable(c.t for c in cols)),
            tuple(chain.from_iterable(c.device for c in cols)),
            tuple(chain.from_iterable(c.point for c in cols)),
            tuple(chain.from_iterable(c.value for c in cols)),
            tuple(chain.from_iterable(c.quality for c in cols)),
        )

    def __len__(self) -> int:
        return len(self.t)

    def __iter__(self) -> Iterator[Reading]:
        cols = (self.t, self.device, self.point, self.value, self.quality)
        return map(_new_reading, zip(*cols, strict=True))

    @overload
    def __getitem__(self, i: int) -> Reading: ...
    @overload
    def __getitem__(self, i: slice) -> tuple[Reading, ...]: ...
    def __getitem__(self, i: int | slice) -> Reading | tuple[Reading, ...]:
        if isinstance(i, slice):
            return tuple(self)[i]
        return _new_reading(
            (self.t[i], self.device[i], self.point[i], self.value[i], self.quality[i])
        )

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ReadingColumns | tuple):
            return tuple(self) == tuple(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"ReadingColumns({tuple(self)!r})"


class DeviceKind(StrEnum):
    """Kinds of site equipment; profiles and simulators agree on these and on point names."""

    RECTIFIER = "rectifier"
    BATTERY = "battery"
    AIRCON = "aircon"
    BREAKER = "breaker"
    METER = "meter"
    GATEWAY = "gateway"


__all__ = ["DeviceKind", "Quality", "Reading", "ReadingColumns", "Value"]
