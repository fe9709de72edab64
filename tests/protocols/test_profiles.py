"""Profile loading and validation: bad profiles fail with file, point, field and problem."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from protocols.errors import ConfigError, ProfileError
from protocols.points import check_kind, kind_points
from protocols.profiles import (
    PointType,
    Table,
    WordOrder,
    load_profile,
    parse_profile,
    profile_from_dict,
)
from protocols.types import DeviceKind

GOOD_TOML = """
[device]
vendor = "V"
model = "M1"
kind = "gateway"
word_order = "CDAB"

[[points]]
name = "temp"
unit = "°C"
address = 0x0010
table = "input"
type = "s16"
scale = 0.1
sentinel = 0x7FFF
min = -40.0
max = 100.0

[[points]]
name = "energy"
unit = "kWh"
address = 0x0020
table = "input"
type = "u32"

[[points]]
name = "run"
address = 3
table = "coil"
type = "bool"
access = "rw"
"""


def test_good_profile_loads_with_defaults_resolved(tmp_path: Path) -> None:
    f = tmp_path / "dev.toml"
    f.write_text(GOOD_TOML, encoding="utf-8")
    p = load_profile(f)
    assert p.source == str(f) and p.name == "dev"
    assert p.device.max_block == 120 and p.device.max_gap == 4
    temp = p.point("temp")
    assert temp.sentinels == (0x7FFF,) and temp.table is Table.INPUT
    assert temp.word_order is None  # 16-bit: no word order
    assert p.point("energy").word_order is WordOrder.CDAB  # device default resolved
    assert p.point("run").type is PointType.BOOL and p.point("run").writable
    with pytest.raises(ProfileError, match="no point 'nope'"):
        p.point("nope")


def _profile(
    kind: str = "gateway", device: dict[str, Any] | None = None, **point: Any
) -> dict[str, Any]:
    base = {"name": "x", "address": 0, "table": "holding", "type": "u16"}
    return {
        "device": {"vendor": "V", "model": "M", "kind": kind, **(device or {})},
        "points": [{**base, **point}],
    }


def _two(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    base = {"address": 0, "table": "holding", "type": "u16"}
    return {
        "device": {"vendor": "V", "model": "M", "kind": "gateway"},
        "points": [{**base, **a}, {**base, **b}],
    }


BAD: list[tuple[str, dict[str, Any], str | None, str | None, str]] = [
    # (case, profile, point (None: device), field, problem regex)
    ("scale zero", _profile(scale=0), "x", "scale", "nonzero"),
    ("min above max", _profile(min=10, max=5), "x", "min", "above max"),
    ("rw on input", _profile(table="input", access="rw"), "x", "access", "holding or coil"),
    ("bool in holding", _profile(type="bool"), "x", "type", "only for coil/discrete"),
    ("u16 in coil table", _profile(table="coil"), "x", "type", "must be 'bool'"),
    ("word order on 16 bit", _profile(word_order="CDAB"), "x", "word_order", "32-bit types"),
    ("32 bit past the end", _profile(type="u32", address=0xFFFF), "x", "address", "2 registers"),
    ("sentinel too wide", _profile(sentinel=0x10000), "x", "sentinels", "not a raw u16"),
    ("sentinel on bool", _profile(table="coil", type="bool", sentinel=1), "x", "sentinels", "bool"),
    ("bits on u16", _profile(bits={"a": 0}), "x", "bits", "only bitfield"),
    ("bit 16", _profile(type="bitfield", bits={"a": 16}), "x", "bits", "not in 0..15"),
    ("shared bit", _profile(type="bitfield", bits={"a": 1, "b": 1}), "x", "bits", "share"),
    ("scaled bitfield", _profile(type="bitfield", scale=0.1), "x", "scale", "not scaled"),
    ("unknown type", _profile(type="u64"), "x", "type", "Input should be"),
    ("unknown table", _profile(table="register"), "x", "table", "Input should be"),
    ("bad word order", _profile(type="u32", word_order="ACBD"), "x", "word_order", "Input should"),
    ("bad access", _profile(access="w"), "x", "access", "Input should be"),
    ("negative address", _profile(address=-1), "x", "address", "greater than or equal"),
    ("bad name", _profile(name="Bad Name"), "Bad Name", "name", "pattern"),
    ("typo field", _profile(scael=0.1), "x", "scael", "Extra inputs"),
    ("negative deadband", _profile(deadband=-1), "x", "deadband", "greater than or equal"),
    ("missing address", {"device": {"vendor": "V", "model": "M", "kind": "gateway"},
                         "points": [{"name": "x", "table": "holding", "type": "u16"}]},
     "x", "address", "Field required"),
    ("duplicate name", _two({"name": "a"}, {"name": "a", "address": 1}), "a", "name", "duplicate"),
    ("overlap", _two({"name": "a", "type": "u32"}, {"name": "b", "address": 1}), "b", "address",
     "overlaps 'a'"),
    ("unknown kind", _profile(kind="toaster"), None, "kind", "Input should be"),
    ("block too long", _profile(device={"max_block": 126}), None, "max_block", "less than"),
    ("negative gap", _profile(device={"max_gap": -1}), None, "max_gap", "greater than"),
    ("32 bit and block 1", _profile(device={"max_block": 1}, type="u32"), "x", "type",
     "max_block < 2"),
    ("missing required", _profile(kind="battery", name="soc", unit="%"), "voltage", "name",
     "required by kind 'battery'"),
    ("wrong canonical unit", _profile(kind="meter", name="voltage", unit="kV"), "voltage",
     "unit", "canonical unit is 'V'"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "data", "point", "field", "problem"), BAD, ids=[b[0] for b in BAD]
)
def test_bad_profiles_name_file_point_field_and_problem(
    case: str, data: dict[str, Any], point: str | None, field: str | None, problem: str
) -> None:
    with pytest.raises(ProfileError) as info:
        profile_from_dict(data, source="profiles/bad.toml")
    message = str(info.value)
    where = "[device]" if point is None else f"point {point!r}"
    expected = (
        rf"^profiles/bad\.toml: {re.escape(where)} field {re.escape(repr(field))}: .*{problem}"
    )
    assert re.search(expected, message, re.MULTILINE), message
    assert isinstance(info.value, ConfigError)


def test_all_problems_are_reported_at_once() -> None:
    data = _two({"name": "a", "scale": 0}, {"name": "b", "address": 0, "min": 3, "max": 1})
    with pytest.raises(ProfileError) as info:
        profile_from_dict(data, source="f.toml")
    lines = str(info.value).splitlines()
    assert any("point 'a' field 'scale'" in line for line in lines)
    assert any("point 'b' field 'min'" in line for line in lines)
    assert any("point 'b' field 'address'" in line and "overlaps" in line for line in lines)


def test_toml_syntax_error_and_missing_file_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match=r"^x\.toml: not valid TOML"):
        parse_profile("[device\n", source="x.toml")
    with pytest.raises(ProfileError, match=r"nothere\.toml: cannot read profile"):
        load_profile("nothere", directory=tmp_path)


def test_load_by_name_from_an_explicit_directory(tmp_path: Path) -> None:
    (tmp_path / "mine.toml").write_text(GOOD_TOML, encoding="utf-8")
    assert load_profile("mine", directory=tmp_path).device.model == "M1"


def test_control_group_is_all_or_nothing() -> None:
    base = {
        "soc": ("%", False), "soh": ("%", False), "voltage": ("V", False),
        "current": ("A", False), "temperature": ("°C", False),
    }  # fmt: skip
    assert check_kind(DeviceKind.BATTERY, base) == []
    half = {**base, "mode": ("", True)}
    problems = check_kind(DeviceKind.BATTERY, half)
    assert {p.point for p in problems} == {
        "discharge_power_limit_w",
        "charge_power_limit_w",
        "target_soc",
    }
    readonly_mode = {
        **base,
        "mode": ("", False),
        "discharge_power_limit_w": ("W", True),
        "charge_power_limit_w": ("W", True),
        "target_soc": ("%", True),
    }
    assert [(p.point, p.field) for p in check_kind(DeviceKind.BATTERY, readonly_mode)] == [
        ("mode", "access")
    ]


def test_breaker_points_follow_the_channel_count() -> None:
    names = {s.name for s in kind_points(DeviceKind.BREAKER, channels=4) if s.required}
    assert {"ch1_closed", "ch4_cmd", "lock"} <= names
    assert "ch5_closed" not in names
    assert {s.name for s in kind_points(DeviceKind.BREAKER)} >= {"ch8_energy", "ch8_trip"}
