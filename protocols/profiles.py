"""Device profiles: the register map of one device model, as data (TOML), validated once.

A profile file has a `[device]` table and `[[points]]` entries::

    [device]
    vendor = "Acme"          model = "R48-600"     kind = "rectifier"
    max_block = 120          max_gap = 4           word_order = "ABCD"

    [[points]]
    name = "dc_voltage"      unit = "V"            address = 0x0000
    table = "input"          type = "u16"          scale = 0.01

Loading validates types with pydantic, then the rules that tie fields together (overlaps,
tables vs types, access, ranges, the kind's canonical points from `protocols.points`). Every
problem is reported as ``file: point 'name' field 'scale': problem`` in one ProfileError, so a
technician fixes a profile in one pass.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Iterator, Mapping
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from protocols.errors import ProfileError
from protocols.points import check_kind
from protocols.types import DeviceKind

PROFILES_ENV = "SITEWATT_PROFILES"
"""Environment variable naming a directory of profiles that replaces the shipped one."""


class Table(StrEnum):
    """The four Modbus data tables."""

    HOLDING = "holding"
    INPUT = "input"
    COIL = "coil"
    DISCRETE = "discrete"

    @property
    def is_bits(self) -> bool:
        return self in (Table.COIL, Table.DISCRETE)


class PointType(StrEnum):
    """How a point's registers (or bit) encode its raw value."""

    U16 = "u16"
    S16 = "s16"
    U32 = "u32"
    S32 = "s32"
    F32 = "f32"
    BITFIELD = "bitfield"
    BOOL = "bool"

    @property
    def width(self) -> int:
        """Registers (or bits, for bool) spanned."""
        return 2 if self in (PointType.U32, PointType.S32, PointType.F32) else 1

    @property
    def raw_max(self) -> int:
        """Largest unsigned raw pattern: the bound for sentinels."""
        return 0xFFFFFFFF if self.width == 2 else 0xFFFF


class WordOrder(StrEnum):
    """Byte order of a 32-bit value across two registers; A is the most significant byte."""

    ABCD = "ABCD"  # big-endian words, big-endian bytes (the Modbus "natural" order)
    CDAB = "CDAB"  # low word first ("word swap")
    BADC = "BADC"  # bytes swapped within each word
    DCBA = "DCBA"  # fully little-endian


class Access(StrEnum):
    READ = "r"
    READ_WRITE = "rw"


_FROZEN = ConfigDict(frozen=True, extra="forbid", use_enum_values=False)


class PointDef(BaseModel):
    """One point: where it lives, how it is encoded, what its value means."""

    model_config = _FROZEN

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)
    unit: str = ""
    address: int = Field(ge=0, le=0xFFFF)
    table: Table
    type: PointType
    word_order: WordOrder | None = None
    scale: float = 1.0
    offset: float = 0.0
    access: Access = Access.READ
    min: float | None = None
    max: float | None = None
    sentinels: tuple[int, ...] = ()
    bits: dict[str, int] = Field(default_factory=dict)
    deadband: float | None = Field(default=None, ge=0)
    description: str = ""

    @model_validator(mode="before")
    @classmethod
    def _single_sentinel(cls, data: Any) -> Any:
        """Accept `sentinel = 0x7FFF` as shorthand for `sentinels = [0x7FFF]`."""
        if isinstance(data, dict) and "sentinel" in data:
            data = dict(data)
            one = data.pop("sentinel")
            data["sentinels"] = [one, *data.get("sentinels", [])]
        return data

    @property
    def width(self) -> int:
        return self.type.width

    @property
    def end(self) -> int:
        """One past the last register (or bit) of the point."""
        return self.address + self.type.width

    @property
    def writable(self) -> bool:
        return self.access is Access.READ_WRITE


class DeviceInfo(BaseModel):
    """The `[device]` table: identity and the device's limits on read requests."""

    model_config = _FROZEN

    vendor: str = Field(min_length=1)
    model: str = Field(min_length=1)
    kind: DeviceKind
    description: str = ""
    max_block: int = Field(default=120, ge=1, le=125)
    max_coil_block: int = Field(default=1968, ge=1, le=2000)
    max_gap: int = Field(default=4, ge=0, le=125)
    word_order: WordOrder = WordOrder.ABCD
    channels: int | None = Field(default=None, ge=1, le=64)


class Profile(BaseModel):
    """A validated profile. Build it with `load_profile` / `parse_profile`, which check it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    device: DeviceInfo
    points: tuple[PointDef, ...]
    source: str = "<memory>"

    @cached_property
    def by_name(self) -> Mapping[str, PointDef]:
        return {p.name: p for p in self.points}

    def point(self, name: str) -> PointDef:
        try:
            return self.by_name[name]
        except KeyError:
            raise ProfileError(f"{self.source}: no point {name!r}") from None

    def word_order(self, point: PointDef) -> WordOrder:
        """The point's own word order, else the device default."""
        return point.word_order or self.device.word_order

    @property
    def name(self) -> str:
        """The profile's name: its file stem (what `load_profile(name)` takes)."""
        return Path(self.source).stem

    @model_validator(mode="after")
    def _resolve_word_orders(self) -> Self:
        # Resolve the device default into each 32-bit point so a point carries its full codec.
        fixed = tuple(
            p.model_copy(update={"word_order": self.device.word_order})
            if p.word_order is None and p.width == 2
            else p
            for p in self.points
        )
        object.__setattr__(self, "points", fixed)
        return self


# --------------------------------------------------------------------------------------------
# Loading and checking


def shipped_profiles_dir() -> Path:
    """The repository's config/profiles (absent when installed from a wheel)."""
    return Path(__file__).resolve().parent.parent / "config" / "profiles"


def profiles_dir(explicit: Path | str | None = None) -> Path:
    """Where profiles are looked up by name: `explicit`, else $SITEWATT_PROFILES, else shipped."""
    if explicit is not None:
        return Path(explicit)
    env = os.environ.get(PROFILES_ENV)
    return Path(env) if env else shipped_profiles_dir()


def profile_names(directory: Path | str | None = None) -> list[str]:
    """Names (file stems) of the profiles in a directory, sorted."""
    d = profiles_dir(directory)
    return sorted(p.stem for p in d.glob("*.toml")) if d.is_dir() else []


def load_profile(name_or_path: str | Path, *, directory: Path | str | None = None) -> Profile:
    """Load a profile by file path, or by name from `profiles_dir(directory)`."""
    path = Path(name_or_path)
    if path.suffix != ".toml" and os.sep not in str(name_or_path):
        path = profiles_dir(directory) / f"{name_or_path}.toml"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        known = ", ".join(profile_names(directory)) or "none"
        raise ProfileError(f"{path}: cannot read profile ({exc.strerror}); known: {known}") from exc
    return parse_profile(text, source=str(path))


def load_profiles(directory: Path | str | None = None) -> dict[str, Profile]:
    """Every profile in a directory, by name."""
    return {n: load_profile(n, directory=directory) for n in profile_names(directory)}


def parse_profile(text: str, *, source: str = "<memory>") -> Profile:
    """Parse and validate TOML text; `source` names the file in errors."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{source}: not valid TOML: {exc}") from exc
    return profile_from_dict(data, source=source)


def profile_from_dict(data: Mapping[str, Any], *, source: str = "<memory>") -> Profile:
    """Validate an already-parsed mapping (what the TOML holds)."""
    try:
        profile = Profile.model_validate({**data, "source": source})
    except ValidationError as exc:
        raise ProfileError(
            _format(source, [_from_pydantic(data, err) for err in exc.errors()])
        ) from None
    problems = list(_cross_checks(profile))
    if problems:
        raise ProfileError(_format(source, problems))
    return profile


_PROFILE = "\x00profile"  # problems with the file's top level, not a point nor [device]
_Problem = tuple[str | None, str | None, str]  # point name (None: [device]), field, problem


def _format(source: str, problems: list[_Problem]) -> str:
    lines = []
    for point, field, problem in problems:
        if point is None:
            where = "[device]"
        elif point == _PROFILE:
            where = "profile"
        else:
            where = f"point {point!r}"
        if field:
            where += f" field {field!r}"
        lines.append(f"{source}: {where}: {problem}")
    return "\n".join(lines)


def _from_pydantic(data: Mapping[str, Any], err: Mapping[str, Any]) -> _Problem:
    loc = tuple(err.get("loc", ()))
    msg = str(err.get("msg", "invalid"))
    if loc and loc[0] == "points" and len(loc) >= 2 and isinstance(loc[1], int):
        raw = data.get("points")
        point = f"#{loc[1]}"
        if isinstance(raw, list) and loc[1] < len(raw) and isinstance(raw[loc[1]], dict):
            point = str(raw[loc[1]].get("name", point))
        field = ".".join(str(x) for x in loc[2:]) or None
        return point, field, msg
    if loc and loc[0] == "device":
        return None, ".".join(str(x) for x in loc[1:]) or None, msg
    return _PROFILE, ".".join(str(x) for x in loc) or None, msg


def _cross_checks(profile: Profile) -> Iterator[_Problem]:
    dev = profile.device
    if not profile.points:
        yield _PROFILE, "points", "a profile needs at least one [[points]] entry"
    seen: dict[str, PointDef] = {}
    for p in profile.points:
        if p.name in seen:
            yield p.name, "name", "duplicate point name"
        seen.setdefault(p.name, p)
        yield from _point_checks(p, dev)
    yield from _overlaps(profile.points)
    channels = dev.channels if dev.kind is DeviceKind.BREAKER else None
    present = {p.name: (p.unit, p.writable) for p in seen.values()}
    for kp in check_kind(dev.kind, present, channels=channels):
        yield kp.point, kp.field, kp.problem


def _point_checks(p: PointDef, dev: DeviceInfo) -> Iterator[_Problem]:
    n = p.name
    if p.table.is_bits != (p.type is PointType.BOOL):
        if p.table.is_bits:
            yield n, "type", f"table {p.table.value!r} holds single bits: type must be 'bool'"
        else:
            yield n, "type", f"'bool' is only for coil/discrete tables, not {p.table.value!r}"
    if p.writable and p.table not in (Table.HOLDING, Table.COIL):
        yield n, "access", f"'rw' only on holding or coil points, not {p.table.value!r}"
    if p.end - 1 > 0xFFFF:
        yield n, "address", f"{p.type.value} spans 2 registers and runs past 0xFFFF"
    if p.width == 2 and dev.max_block < 2:
        yield n, "type", "32-bit point cannot be read with max_block < 2"
    if p.word_order is not None and p.width != 2:
        yield n, "word_order", f"word order applies to 32-bit types only, not {p.type.value!r}"
    if p.scale == 0 or not math.isfinite(p.scale):
        yield n, "scale", "must be a nonzero finite number"
    if not math.isfinite(p.offset):
        yield n, "offset", "must be finite"
    if p.type in (PointType.BOOL, PointType.BITFIELD) and (p.scale != 1 or p.offset != 0):
        yield n, "scale", f"{p.type.value} points are not scaled (scale 1, offset 0)"
    if p.min is not None and p.max is not None and p.min > p.max:
        yield n, "min", f"min {p.min} is above max {p.max}"
    for s in p.sentinels:
        if p.type is PointType.BOOL:
            yield n, "sentinels", "bool points have no sentinel"
            break
        if not 0 <= s <= p.type.raw_max:
            yield n, "sentinels", f"{s:#x} is not a raw {p.type.value} pattern"
    if p.bits and p.type is not PointType.BITFIELD:
        yield n, "bits", "only bitfield points name bits"
    for flag, bit in p.bits.items():
        if not 0 <= bit <= 15:
            yield n, "bits", f"bit {flag!r} = {bit} is not in 0..15"
    if len(set(p.bits.values())) != len(p.bits):
        yield n, "bits", "two flags share a bit"


def _overlaps(points: tuple[PointDef, ...]) -> Iterator[_Problem]:
    for table in Table:
        in_table = sorted((p for p in points if p.table is table), key=lambda p: p.address)
        prev: PointDef | None = None
        for cur in in_table:
            if prev is not None and cur.address < prev.end:
                yield (
                    cur.name,
                    "address",
                    f"{table.value} {cur.address:#06x} overlaps {prev.name!r} "
                    f"({prev.address:#06x}..{prev.end - 1:#06x})",
                )
            if prev is None or cur.end > prev.end:
                prev = cur


__all__ = [
    "PROFILES_ENV",
    "Access",
    "DeviceInfo",
    "PointDef",
    "PointType",
    "Profile",
    "Table",
    "WordOrder",
    "load_profile",
    "load_profiles",
    "parse_profile",
    "profile_from_dict",
    "profile_names",
    "profiles_dir",
    "shipped_profiles_dir",
]
