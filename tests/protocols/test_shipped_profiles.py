"""Every shipped profile loads, is planned within its limits, and every point reads back through
pymodbus's real client from a real pymodbus server holding the values our codec encoded."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusTcpClient

from protocols.blocks import ReadBlock, plan_profile
from protocols.codec import MISSING, Missing, flags
from protocols.points import check_kind
from protocols.profiles import (
    PROFILES_ENV,
    PointDef,
    PointType,
    Profile,
    Table,
    WordOrder,
    load_profile,
    load_profiles,
    profile_names,
    shipped_profiles_dir,
)
from protocols.types import DeviceKind, Quality, Value
from tests.support.modbus_fixtures import ProfileServer, ServerFactory

SHIPPED = profile_names(shipped_profiles_dir())


def sample_value(point: PointDef, salt: int = 0) -> Value:
    """A value inside the point's range, on its resolution, different for each point."""
    if point.type is PointType.BOOL:
        return (point.address + salt) % 2 == 0
    if point.type is PointType.BITFIELD:
        bits = sorted(point.bits.values()) or [0, 3]
        return sum(1 << b for b in bits[salt % 2 :: 2])
    lo = point.min if point.min is not None else 0.0
    hi = point.max if point.max is not None else 1000.0
    frac = ((point.address * 37 + salt * 11) % 89 + 5) / 100  # 0.05 .. 0.93
    value = lo + (hi - lo) * frac
    if point.type is PointType.F32:
        return round(value, 2)
    steps = round((value - point.offset) / point.scale)
    if point.scale == 1 and point.offset == 0:
        return steps
    return steps * point.scale + point.offset


async def read_block(client: AsyncModbusTcpClient, block: ReadBlock, unit: int) -> list[int]:
    calls = {
        Table.HOLDING: client.read_holding_registers,
        Table.INPUT: client.read_input_registers,
        Table.COIL: client.read_coils,
        Table.DISCRETE: client.read_discrete_inputs,
    }
    rr = await calls[block.table](block.start, count=block.count, device_id=unit)
    assert not rr.isError(), f"{block.table} {block.start}+{block.count}: {rr}"
    return list(rr.bits[: block.count]) if block.table.is_bits else list(rr.registers)


async def read_all(server: ProfileServer) -> tuple[dict[str, tuple[Value, Quality]], int]:
    blocks = plan_profile(server.profile)
    out: dict[str, tuple[Value, Quality]] = {}
    client = AsyncModbusTcpClient(server.host, port=server.port, timeout=5, retries=0)
    await client.connect()
    try:
        assert client.connected
        for block in blocks:
            for name, value, quality in block.decode(await read_block(client, block, 1)):
                out[name] = (value, quality)
    finally:
        client.close()
    return out, len(blocks)


def test_the_six_kinds_and_every_codec_feature_are_shipped() -> None:
    profiles = load_profiles(shipped_profiles_dir())
    assert len(profiles) >= 6
    kinds = {p.device.kind for p in profiles.values()}
    assert kinds >= {
        DeviceKind.RECTIFIER,
        DeviceKind.BATTERY,
        DeviceKind.AIRCON,
        DeviceKind.BREAKER,
        DeviceKind.METER,
    }
    points = [pt for p in profiles.values() for pt in p.points]
    assert {pt.type for pt in points} == set(PointType)
    assert {pt.table for pt in points} == set(Table)
    assert {pt.word_order for pt in points if pt.width == 2} == set(WordOrder)
    sentinels = {s for pt in points for s in pt.sentinels}
    assert {0x7FFF, 0xFFFF, 0xFFFFFFFF} <= sentinels
    batteries = [p for p in profiles.values() if p.device.kind is DeviceKind.BATTERY]
    assert len(batteries) >= 2  # an LFP pack and a lead-acid string monitor
    assert any(p.device.max_gap == 0 for p in profiles.values())


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_profile_is_illustrative_and_meets_its_kind(name: str) -> None:
    profile = load_profile(name)
    text = (shipped_profiles_dir() / f"{name}.toml").read_text(encoding="utf-8")
    assert "Illustrative profile, not authoritative" in text.splitlines()[0]
    present = {p.name: (p.unit, p.writable) for p in profile.points}
    assert check_kind(profile.device.kind, present, channels=profile.device.channels) == []
    for block in plan_profile(profile):
        limit = profile.device.max_coil_block if block.table.is_bits else profile.device.max_block
        assert block.count <= limit


@pytest.mark.parametrize("name", SHIPPED)
async def test_every_point_reads_back_through_pymodbus(
    name: str, modbus_server: ServerFactory
) -> None:
    profile = load_profile(name)
    values = {p.name: sample_value(p) for p in profile.points}
    server = modbus_server(profile, values, strict=profile.device.max_gap == 0)
    got, _ = await read_all(server)
    assert set(got) == {p.name for p in profile.points}
    for point in profile.points:
        value, quality = got[point.name]
        assert quality is Quality.GOOD, (point.name, value, quality)
        expected = values[point.name]
        if point.type is PointType.BOOL:
            assert value is expected
        elif point.type is PointType.BITFIELD:
            assert value == expected
            assert isinstance(value, int)
            assert flags(point, value) == {f: bool(value >> b & 1) for f, b in point.bits.items()}
        else:
            assert isinstance(value, int | float) and isinstance(expected, int | float)
            assert math.isclose(value, expected, rel_tol=1e-6, abs_tol=1e-9), point.name


async def test_sentinels_read_as_missing_sensors_through_pymodbus(
    modbus_server: ServerFactory,
) -> None:
    missing_names = {n: [p.name for p in load_profile(n).points if p.sentinels] for n in SHIPPED}
    for name, names in missing_names.items():
        if not names:
            continue
        profile = load_profile(name)
        values: dict[str, Value | Missing] = {p.name: sample_value(p, 1) for p in profile.points}
        values.update(dict.fromkeys(names, MISSING))
        got, _ = await read_all(modbus_server(profile, values))
        for n in names:
            assert got[n] == (None, Quality.SENSOR_MISSING), (name, n)
        others = [p for p in profile.points if p.name not in names]
        assert all(got[p.name][1] is Quality.GOOD for p in others)


async def test_strict_server_refuses_a_read_across_an_unmapped_gap(
    modbus_server: ServerFactory,
) -> None:
    # The LFP BMS answers unmapped addresses with an exception: that is why it has max_gap = 0.
    profile = load_profile("battery_lianfa_lf48100")
    server = modbus_server(profile, {"voltage": 52.0, "current": -3.5}, strict=True)
    client = AsyncModbusTcpClient(server.host, port=server.port, timeout=5, retries=0)
    await client.connect()
    try:
        across = await client.read_holding_registers(0, count=3, device_id=1)
        assert across.isError()
        ok = await client.read_holding_registers(2, count=1, device_id=1)
        assert not ok.isError()
        assert ok.registers == [0xFEA2]  # -3.50 A as s16 ×0.01 = -350
    finally:
        client.close()


async def test_values_changed_while_serving_are_read(modbus_server: ServerFactory) -> None:
    profile = load_profile("aircon_coolgate_gw1")
    server = modbus_server(profile, {"on": True, "setpoint": 25.0, "room_temp": 27.5})
    got, _ = await read_all(server)
    assert got["on"] == (True, Quality.GOOD)
    assert got["setpoint"] == (25.0, Quality.GOOD)
    server.set({"on": False, "setpoint": 27.0, "room_temp": -5.5})
    got, _ = await read_all(server)
    assert got["on"] == (False, Quality.GOOD)
    assert got["setpoint"] == (27.0, Quality.GOOD)
    assert got["room_temp"] == (-5.5, Quality.GOOD)


def test_sync_test_can_use_the_server(modbus_server: ServerFactory) -> None:
    from pymodbus.client import ModbusTcpClient

    profile = load_profile("meter_gridline_gm1")
    server = modbus_server(profile, {"mains_present": True, "import_power": -1234})
    client = ModbusTcpClient(server.host, port=server.port, timeout=5, retries=0)
    assert client.connect()  # type: ignore[no-untyped-call]
    try:
        rr = client.read_input_registers(8, count=2, device_id=1)
        block = next(b for b in plan_profile(profile, ["import_power"]))
        assert block.decode(rr.registers) == [("import_power", -1234, Quality.GOOD)]
        assert client.read_discrete_inputs(0, count=1, device_id=1).bits[0] is True
    finally:
        client.close()  # type: ignore[no-untyped-call]


def test_profiles_found_by_name_in_env_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path
    src = shipped_profiles_dir() / "meter_gridline_gm1.toml"
    (d / "my_meter.toml").write_text(src.read_text(encoding="utf-8"), encoding="utf-8")
    monkeypatch.setenv(PROFILES_ENV, str(d))
    assert profile_names() == ["my_meter"]
    p: Profile = load_profile("my_meter")
    assert p.name == "my_meter" and p.device.kind is DeviceKind.METER
