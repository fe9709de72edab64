"""Register codec: raw Modbus words and bits to typed, scaled values, and back.

Decoding never raises for what a device may legitimately send: a sentinel becomes
`Quality.SENSOR_MISSING` (value None), a NaN or infinite float `Quality.BAD_VALUE` (value None),
a value outside the profile's range `Quality.OUT_OF_RANGE` (value kept for diagnosis). Encoding
(for writes and for simulators' register images) refuses with CodecError what the device could
not hold or the profile does not allow.

Speed: each point is compiled once into a `PointCodec` holding `struct.Struct`s (shared: a
handful of formats serve every point, see `_struct`). A block of
words is packed into bytes twice, big- and little-endian per word; every 32-bit order is then one
`unpack_from` on one of the two buffers:

    ABCD  words [AB][CD]  big bytes    A B C D  -> ">"
    DCBA  words [DC][BA]  big bytes    D C B A  -> "<"
    BADC  words [BA][DC]  little bytes A B C D  -> ">"
    CDAB  words [CD][AB]  little bytes D C B A  -> "<"
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from enum import Enum
from functools import cache
from typing import Final

from protocols.errors import CodecError
from protocols.profiles import PointDef, PointType, Profile, Table, WordOrder
from protocols.types import Quality, Value


class Missing(Enum):
    """Marker asking `encode_image` to write the point's sentinel (a missing sensor)."""

    SENSOR = "sensor-missing"


MISSING: Final = Missing.SENSOR

Decoded = tuple[Value, Quality]

_CODES: Final = {
    PointType.U16: "H",
    PointType.S16: "h",
    PointType.BITFIELD: "H",
    PointType.U32: "I",
    PointType.S32: "i",
    PointType.F32: "f",
}
_RAW_CODES: Final = {1: "H", 2: "I"}
# (use the little-endian-per-word buffer?, struct byte order) for each 32-bit word order
_ORDER: Final = {
    WordOrder.ABCD: (False, ">"),
    WordOrder.DCBA: (False, "<"),
    WordOrder.BADC: (True, ">"),
    WordOrder.CDAB: (True, "<"),
}
_INT_BOUNDS: Final = {
    PointType.U16: (0, 0xFFFF),
    PointType.S16: (-0x8000, 0x7FFF),
    PointType.BITFIELD: (0, 0xFFFF),
    PointType.U32: (0, 0xFFFFFFFF),
    PointType.S32: (-0x80000000, 0x7FFFFFFF),
}
_F32_MAX: Final = 3.4028234663852886e38
_NO_SENTINELS: Final[frozenset[int]] = frozenset()

# One immutable Struct per format for the whole process: a codec per point held three of its
# own (~170 B each), 0.5 MB for 1,000 points.
_struct: Final = cache(struct.Struct)


def _divisor(scale: float) -> int | None:
    """1/scale when it is a whole number (0.01 -> 100): dividing keeps 53.51 from 53.510000001."""
    if abs(scale) >= 1:
        return None
    inv = 1 / scale
    n = round(inv)
    return n if n != 0 and abs(inv - n) < 1e-9 * abs(inv) else None


def _as_typed(kind: PointType, raw: int) -> int:
    """A raw unsigned pattern as the signed value a signed type unpacks it to."""
    if kind is PointType.S16 and raw >= 0x8000:
        return raw - 0x10000
    if kind is PointType.S32 and raw >= 0x80000000:
        return raw - 0x100000000
    return raw


class PointCodec:
    """One point compiled for decoding from a block buffer and for encoding writes."""

    __slots__ = (
        "_bounds",
        "_div",
        "_fmt",
        "_identity",
        "_is_float",
        "_little",
        "_max",
        "_min",
        "_off",
        "_raw_fmt",
        "_scale",
        "_sentinel_values",
        "_sentinels",
        "_value_fmt",
        "kind",
        "point",
    )

    def __init__(self, point: PointDef) -> None:
        self.point = point
        self.kind = point.type
        order = point.word_order or WordOrder.ABCD
        if point.width == 2:
            self._little, endian = _ORDER[order]
        else:
            self._little, endian = False, ">"
        code = _CODES.get(point.type, "H")
        self._fmt = _struct(endian + code)
        self._raw_fmt = _struct(endian + _RAW_CODES[point.width])
        # Encoding produces the ABCD byte string, then reorders words/bytes (see _to_words).
        self._value_fmt = _struct(">" + code)
        if point.scale == 0 or not math.isfinite(point.scale) or not math.isfinite(point.offset):
            raise CodecError(f"{point.name}: scale must be nonzero and finite, offset finite")
        self._is_float = point.type is PointType.F32
        self._scale = point.scale
        self._off = point.offset
        self._div = _divisor(point.scale)
        self._identity = point.scale == 1 and point.offset == 0
        self._min = point.min
        self._max = point.max
        self._bounds = _INT_BOUNDS.get(point.type)
        self._sentinels = frozenset(point.sentinels) if point.sentinels else _NO_SENTINELS
        # Integer points compare the typed raw value with the sentinels: one unpack, not two.
        self._sentinel_values = (
            frozenset(_as_typed(point.type, s) for s in point.sentinels)
            if point.sentinels and not self._is_float
            else _NO_SENTINELS
        )

    # -- decoding ---------------------------------------------------------------------------

    def decode_buffers(self, big: bytes, little: bytes, byte_offset: int) -> Decoded:
        """Decode from a block packed both ways (see module docstring)."""
        buf = little if self._little else big
        raw = self._fmt.unpack_from(buf, byte_offset)[0]
        if self._is_float:
            if (
                self._sentinels
                and self._raw_fmt.unpack_from(buf, byte_offset)[0] in self._sentinels
            ):
                return None, Quality.SENSOR_MISSING
            if not math.isfinite(raw):
                return None, Quality.BAD_VALUE
        elif raw in self._sentinel_values:
            return None, Quality.SENSOR_MISSING
        return self._engineering(raw)

    def _engineering(self, raw: float) -> Decoded:
        value: float
        if self._identity:
            value = raw
        elif self._div is not None:
            value = raw / self._div + self._off
        else:
            value = raw * self._scale + self._off
        if (self._min is not None and value < self._min) or (
            self._max is not None and value > self._max
        ):
            return value, Quality.OUT_OF_RANGE
        return value, Quality.GOOD

    def decode(self, words: Sequence[int]) -> Decoded:
        """Decode this point's own words (1 or 2 registers)."""
        if len(words) != self.point.width:
            raise CodecError(
                f"{self.point.name}: {self.kind.value} needs {self.point.width} words, "
                f"got {len(words)}"
            )
        big, little = pack_words(words)
        return self.decode_buffers(big, little, 0)

    # -- encoding ---------------------------------------------------------------------------

    def encode(
        self, value: Value | Mapping[str, bool] | Missing, *, check_range: bool = True
    ) -> list[int]:
        """Engineering value -> register words; CodecError if unrepresentable, or outside the
        profile's valid range unless `check_range` is off (a device may hold such a value)."""
        p = self.point
        if self.kind is PointType.BOOL:
            raise CodecError(f"{p.name}: a bool point is a bit, use encode_bit")
        if value is MISSING:
            if not p.sentinels:
                raise CodecError(f"{p.name}: no sentinel defined for a missing sensor")
            return self._to_words(self._raw_fmt_be(p.sentinels[0]))
        if isinstance(value, Mapping):
            value = self._flags_to_int(value)
        if value is None or isinstance(value, Missing):
            raise CodecError(f"{p.name}: no value to encode")
        number = float(value)
        if not math.isfinite(number):
            raise CodecError(f"{p.name}: {value!r} is not a finite number")
        if check_range and (
            (p.min is not None and number < p.min) or (p.max is not None and number > p.max)
        ):
            raise CodecError(f"{p.name}: {value!r} outside the valid range [{p.min}, {p.max}]")
        if self._identity and isinstance(value, int):
            raw: float = value
        elif self._div is not None:
            raw = (number - self._off) * self._div
        else:
            raw = (number - self._off) / self._scale
        if self._is_float:
            if abs(raw) > _F32_MAX:
                raise CodecError(f"{p.name}: {value!r} does not fit a float32")
            return self._to_words(self._value_fmt.pack(raw))
        whole = round(raw)
        assert self._bounds is not None
        lo, hi = self._bounds
        if not lo <= whole <= hi:
            raise CodecError(
                f"{p.name}: {value!r} encodes to raw {whole}, outside {p.type.value} [{lo}, {hi}]"
            )
        if whole in self._sentinel_values:
            raise CodecError(f"{p.name}: {value!r} encodes to the missing-sensor sentinel")
        return self._to_words(self._value_fmt.pack(whole))

    def _raw_fmt_be(self, raw: int) -> bytes:
        return raw.to_bytes(2 * self.point.width, "big")

    def _to_words(self, abcd: bytes) -> list[int]:
        if self.point.width == 1:
            return [int.from_bytes(abcd, "big")]
        order = self.point.word_order or WordOrder.ABCD
        a, b, c, d = abcd
        by_order = {
            WordOrder.ABCD: (a, b, c, d),
            WordOrder.CDAB: (c, d, a, b),
            WordOrder.BADC: (b, a, d, c),
            WordOrder.DCBA: (d, c, b, a),
        }[order]
        w0, w1, w2, w3 = by_order
        return [w0 << 8 | w1, w2 << 8 | w3]

    def _flags_to_int(self, flags: Mapping[str, bool]) -> int:
        raw = 0
        for flag, on in flags.items():
            try:
                bit = self.point.bits[flag]
            except KeyError:
                raise CodecError(f"{self.point.name}: no bit named {flag!r}") from None
            if on:
                raw |= 1 << bit
        return raw

    def encode_bit(self, value: Value) -> bool:
        """A coil/discrete value; accepts bool or 0/1."""
        if self.kind is not PointType.BOOL:
            raise CodecError(f"{self.point.name}: not a bool point")
        if isinstance(value, bool):
            return value
        if isinstance(value, int | float) and value in (0, 1):
            return bool(value)
        raise CodecError(f"{self.point.name}: {value!r} is not a bool (or 0/1)")


def pack_words(words: Sequence[int]) -> tuple[bytes, bytes]:
    """Pack register words big- and little-endian per word; CodecError if a word is not 16-bit."""
    n = len(words)
    try:
        return struct.pack(f">{n}H", *words), struct.pack(f"<{n}H", *words)
    except struct.error as exc:
        raise CodecError(f"not a list of 16-bit register words: {exc}") from exc


def flags(point: PointDef, value: int) -> dict[str, bool]:
    """A bitfield's value as its named flags."""
    return {name: bool(value >> bit & 1) for name, bit in point.bits.items()}


def compile_point(point: PointDef) -> PointCodec:
    return PointCodec(point)


def decode_point(point: PointDef, words: Sequence[int]) -> Decoded:
    """Decode one point from its own words (convenience; blocks use BlockDecoder)."""
    if point.type is PointType.BOOL:
        raise CodecError(f"{point.name}: a bool point is read from bits")
    return PointCodec(point).decode(words)


def encode_point(point: PointDef, value: Value | Mapping[str, bool] | Missing) -> list[int]:
    """Engineering value -> the point's register words (bool points: use encode_bit)."""
    return PointCodec(point).encode(value)


def encode_write(point: PointDef, value: Value | Mapping[str, bool]) -> list[int] | bool:
    """What to send to change a writable point: register words, or a coil state."""
    if not point.writable:
        raise CodecError(f"{point.name}: read-only point ({point.table.value})")
    codec = PointCodec(point)
    if point.type is PointType.BOOL:
        if isinstance(value, Mapping):
            raise CodecError(f"{point.name}: {value!r} is not a bool")
        return codec.encode_bit(value)
    return codec.encode(value)


class BlockDecoder:
    """Decodes one read request's words (or bits) into every point the request covers."""

    __slots__ = ("_bits", "_count", "_items", "_need_little", "_packers", "_start")

    def __init__(self, table: Table, start: int, count: int, points: Sequence[PointDef]) -> None:
        self._start = start
        self._count = count
        self._bits = table.is_bits
        self._items: list[tuple[str, PointCodec, int]] = []
        for p in points:
            if p.table is not table or p.address < start or p.end > start + count:
                raise CodecError(f"{p.name}: not inside {table.value} {start}+{count}")
            rel = p.address - start
            self._items.append((p.name, PointCodec(p), rel if self._bits else 2 * rel))
        self._need_little = any(c._little for _, c, _ in self._items)
        self._packers = (_struct(f">{count}H"), _struct(f"<{count}H"))

    def decode(self, values: Sequence[int] | Sequence[bool]) -> list[tuple[str, Value, Quality]]:
        """(point name, value, quality) for each point, in the block's point order."""
        if len(values) < self._count:
            raise CodecError(f"block of {self._count} got {len(values)} values")
        if self._bits:
            return [(name, bool(values[off]), Quality.GOOD) for name, _, off in self._items]
        words = values[: self._count] if len(values) != self._count else values
        try:
            big = self._packers[0].pack(*words)
            little = self._packers[1].pack(*words) if self._need_little else b""
        except struct.error as exc:
            raise CodecError(f"not a list of 16-bit register words: {exc}") from exc
        out: list[tuple[str, Value, Quality]] = []
        append = out.append
        for name, codec, off in self._items:
            value, quality = codec.decode_buffers(big, little, off)
            append((name, value, quality))
        return out


Image = dict[Table, dict[int, int | bool]]
"""A register image: per table, address -> word (or bit)."""


def encode_image(
    profile: Profile, values: Mapping[str, Value | Mapping[str, bool] | Missing]
) -> Image:
    """Encode {point: value} into per-table address -> word/bit maps (what a server holds).

    Points not named are left out. Values outside the profile's valid range are encoded (a
    device can hold them; readers flag them OUT_OF_RANGE); unknown names and values the
    registers cannot represent raise CodecError.
    """
    image: Image = {t: {} for t in Table}
    for name, value in values.items():
        point = profile.by_name.get(name)
        if point is None:
            raise CodecError(f"{profile.source}: no point {name!r}")
        codec = PointCodec(point)
        if point.type is PointType.BOOL:
            if isinstance(value, Mapping | Missing):
                raise CodecError(f"{name}: {value!r} is not a bool")
            image[point.table][point.address] = codec.encode_bit(value)
            continue
        for i, word in enumerate(codec.encode(value, check_range=False)):
            image[point.table][point.address + i] = word
    return image


__all__ = [
    "MISSING",
    "BlockDecoder",
    "Decoded",
    "Image",
    "Missing",
    "PointCodec",
    "compile_point",
    "decode_point",
    "encode_image",
    "encode_point",
    "encode_write",
    "flags",
    "pack_words",
]
