"""A device's register image built from its profile, and the validation of writes into it.

The image holds what a real device would: every profile point encoded with the shared codec
(`protocols.codec`). Reads are answered from it with the device's own limits: a read longer than
the profile's `max_block` gets ILLEGAL_DATA_VALUE; addresses outside the mapped span get
ILLEGAL_DATA_ADDRESS; gaps between points answer 0 only when the profile says the device reads
across gaps (`max_gap > 0`), as the agent's block planner expects.

Values the device measures may be outside the profile's valid range (0 V on a dark site): the
image holds them anyway, saturated only at what the register type can carry, so the agent sees
an out-of-range reading exactly as it would from the field. Writes are checked against the
profile: unmapped or read-only addresses and partial 32-bit writes are ILLEGAL_DATA_ADDRESS,
values outside [min, max] ILLEGAL_DATA_VALUE.

A refresh encodes again only the points whose value changed since the last one: settings,
counters, flags and open channels mostly hold still between polls, and encoding is what a
simulator's refresh costs. Each point owns its registers (profiles refuse overlaps), so a point
left alone keeps exactly the words it had.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from protocols.codec import MISSING, PointCodec
from protocols.errors import CodecError
from protocols.profiles import PointDef, PointType, Profile, Table
from protocols.types import Quality, Value
from simulators.devices import PointValue
from simulators.errors import InvalidValueError, ReadOnlyPointError, UnknownPointError

FC_TABLE: dict[int, Table] = {
    1: Table.COIL,
    2: Table.DISCRETE,
    3: Table.HOLDING,
    4: Table.INPUT,
    5: Table.COIL,
    6: Table.HOLDING,
    15: Table.COIL,
    16: Table.HOLDING,
    22: Table.HOLDING,
    23: Table.HOLDING,
}

_TYPE_RAW = {
    PointType.U16: (0, 0xFFFF),
    PointType.S16: (-0x8000, 0x7FFF),
    PointType.BITFIELD: (0, 0xFFFF),
    PointType.U32: (0, 0xFFFFFFFF),
    PointType.S32: (-0x80000000, 0x7FFFFFFF),
}


class ReadRefused(Exception):
    """A read the device answers with an exception: `code` is the Modbus exception code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


ILLEGAL_ADDRESS = 2
ILLEGAL_VALUE = 3


_UNSET: Any = object()
"""What a point's `last` holds before its first encoding: equal to no value."""


@dataclass
class _Compiled:
    point: PointDef
    store: PointCodec  # encodes without the profile's range: the image holds what is measured
    check: PointCodec  # decodes writes with the profile's range
    bits: frozenset[str]
    lo: float | None  # engineering values the register type can carry (None: unbounded f32)
    hi: float | None
    last: PointValue = _UNSET  # the value the point's words were last encoded from


def _unchanged(value: PointValue, last: PointValue) -> bool:
    """Whether `value` encodes to the words `last` did: equal values do (1, 1.0 and True too),
    except zeros of opposite sign (a float32 point keeps the sign)."""
    if value is last:
        return True
    if value != last:
        return False
    if isinstance(value, int | float) and isinstance(last, int | float) and value == 0:
        return math.copysign(1.0, value) == math.copysign(1.0, last)
    return True


def _compile(point: PointDef) -> _Compiled:
    relaxed = point.model_copy(update={"min": None, "max": None})
    lo = hi = None
    bounds = _TYPE_RAW.get(point.type)
    if bounds is not None:
        a = bounds[0] * point.scale + point.offset
        b = bounds[1] * point.scale + point.offset
        lo, hi = min(a, b), max(a, b)
    return _Compiled(point, PointCodec(relaxed), PointCodec(point), frozenset(point.bits), lo, hi)


class RegisterImage:
    """The four tables of one device, refreshed from {point: value}."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self._points = [_compile(p) for p in profile.points]
        self._by_name = {c.point.name: c for c in self._points}
        self.tables: dict[Table, dict[int, int | bool]] = {t: {} for t in Table}
        self._owner: dict[Table, dict[int, _Compiled]] = {t: {} for t in Table}
        for c in self._points:
            p = c.point
            for a in range(p.address, p.end):
                self._owner[p.table][a] = c
                self.tables[p.table][a] = False if p.table.is_bits else 0
        self._span = {
            t: (min(owners), max(owners) + 1) for t, owners in self._owner.items() if owners
        }
        self._gaps_ok = profile.device.max_gap > 0
        self.extras: dict[str, PointValue] = {}  # writable vendor points the physics ignores

    # -- refresh -------------------------------------------------------------------------------
    def refresh(self, values: Mapping[str, PointValue]) -> None:
        """Encode every profile point from `values` (missing ones keep extras or defaults);
        points whose value has not changed since the last refresh keep their words."""
        extras = self.extras
        for c in self._points:
            name = c.point.name
            value = values.get(name, extras.get(name))
            if _unchanged(value, c.last):
                continue
            self._store(c, value)
            # A mapping is copied: the caller may fill the same dict again.
            c.last = dict(value) if isinstance(value, Mapping) else value

    def _store(self, c: _Compiled, value: PointValue) -> None:
        p = c.point
        table = self.tables[p.table]
        if p.type is PointType.BOOL:
            table[p.address] = bool(value) if not isinstance(value, Mapping) else False
            return
        words: list[int]
        if value is None:
            words = c.store.encode(MISSING) if p.sentinels else [0] * p.width
        elif isinstance(value, Mapping):
            words = c.store.encode({k: v for k, v in value.items() if k in c.bits})
        else:
            words = self._encode_number(c, float(value))
        for i, w in enumerate(words):
            table[p.address + i] = w

    def _encode_number(self, c: _Compiled, v: float) -> list[int]:
        if not math.isfinite(v):
            return c.store.encode(MISSING) if c.point.sentinels else [0] * c.point.width
        if c.lo is not None and c.hi is not None:
            v = min(c.hi, max(c.lo, v))
        try:
            return c.store.encode(v)
        except CodecError:
            # Rounding landed on a sentinel or just past the type: step one count inwards.
            step = abs(c.point.scale)
            return c.store.encode(v - step if v > 0 else v + step)

    # -- reads ---------------------------------------------------------------------------------
    def read(self, table: Table, address: int, count: int) -> list[int] | list[bool]:
        """Words (or bits) at [address, address + count), or ReadRefused."""
        limit = (
            self.profile.device.max_coil_block if table.is_bits else self.profile.device.max_block
        )
        if count < 1 or count > limit:
            raise ReadRefused(ILLEGAL_VALUE, f"{count} {table.value} values: device max {limit}")
        span = self._span.get(table)
        if span is None or address < span[0] or address + count > span[1]:
            raise ReadRefused(ILLEGAL_ADDRESS, f"{table.value} {address}+{count} not mapped")
        cells = self.tables[table]
        if not self._gaps_ok:
            owners = self._owner[table]
            for a in range(address, address + count):
                if a not in owners:
                    raise ReadRefused(ILLEGAL_ADDRESS, f"{table.value} {a} is not mapped")
        default: int | bool = False if table.is_bits else 0
        if table.is_bits:
            return [bool(cells.get(a, default)) for a in range(address, address + count)]
        return [int(cells.get(a, default)) for a in range(address, address + count)]

    # -- writes --------------------------------------------------------------------------------
    def decode_write(
        self, table: Table, address: int, values: Sequence[int | bool]
    ) -> dict[str, Value]:
        """{point: engineering value} a write would set; refuses what the device would refuse."""
        owners = self._owner[table]
        out: dict[str, Value] = {}
        a = address
        end = address + len(values)
        while a < end:
            c = owners.get(a)
            if c is None:
                raise UnknownPointError(f"{table.value} {a} is not mapped")
            p = c.point
            if not p.writable:
                raise ReadOnlyPointError(f"{p.name} ({table.value} {a}) is read-only")
            if p.address != a or p.end > end:
                raise UnknownPointError(f"{p.name}: a write must cover all {p.width} registers")
            chunk = values[a - address : p.end - address]
            if p.type is PointType.BOOL:
                out[p.name] = bool(chunk[0])
            else:
                value, quality = c.check.decode([int(w) for w in chunk])
                if quality is not Quality.GOOD:
                    raise InvalidValueError(
                        f"{p.name}: {value!r} is {quality.label} (valid {p.min}..{p.max})"
                    )
                out[p.name] = value
            a = p.end
        return out

    def point_value(self, name: str) -> Value:
        """Decode one point back from the image (tests and the live summary use it)."""
        c = self._by_name[name]
        p = c.point
        cells = self.tables[p.table]
        if p.type is PointType.BOOL:
            return bool(cells[p.address])
        value, _ = c.store.decode([int(cells[a]) for a in range(p.address, p.end)])
        return value


__all__ = ["FC_TABLE", "ILLEGAL_ADDRESS", "ILLEGAL_VALUE", "ReadRefused", "RegisterImage"]
