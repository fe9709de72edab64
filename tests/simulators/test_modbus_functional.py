"""Simulated devices over real Modbus TCP on loopback: reads, writes, refusals, faults."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusIOException

from protocols.clock import ManualClock, parse_time
from protocols.codec import BlockDecoder
from protocols.profiles import Profile, Table
from protocols.types import DeviceKind
from simulators.host import Placement, SimHost
from simulators.modbus.faults import Clock as FaultClock
from simulators.modbus.faults import Fault, FaultKind
from simulators.physics.battery import BatteryMode
from simulators.spec import SiteSpec

T0 = parse_time("2025-07-01T12:00:00+08:00")

PROFILES = {
    DeviceKind.RECTIFIER: "rectifier_ampere_apc4812",
    DeviceKind.BATTERY: "battery_lianfa_lf48100",
    DeviceKind.AIRCON: "aircon_coolgate_gw1m",
    DeviceKind.BREAKER: "breaker_breakwell_sb8",
    DeviceKind.METER: "meter_gridline_gm1",
}


@pytest.fixture
async def sim() -> AsyncIterator[SimHost]:
    """One site, each device on its own free port (unit 1); a second site on one shared port."""
    host = SimHost(ManualClock(T0), tick_s=0.05)
    host.add_site(SiteSpec(id="a"), {k: Placement(p) for k, p in PROFILES.items()})
    host.add_site(
        SiteSpec(id="b", seed=2),
        {k: Placement(p, unit=i + 1, group="b") for i, (k, p) in enumerate(PROFILES.items())},
    )
    async with host:
        clock = host.clock
        assert isinstance(clock, ManualClock)
        clock.advance(600)
        await host.tick()
        yield host


@asynccontextmanager
async def client(host: SimHost, ref: str, *, timeout: float = 1.0) -> AsyncIterator[Any]:
    ep = host.endpoint(ref)
    c = AsyncModbusTcpClient(ep.host, port=ep.port, timeout=timeout, retries=0)
    await c.connect()
    assert c.connected
    try:
        yield c
    finally:
        c.close()


def decode(
    profile: Profile, table: Table, start: int, count: int, values: list[Any]
) -> dict[str, Any]:
    points = [
        p
        for p in profile.points
        if p.table is table and start <= p.address and p.end <= start + count
    ]
    return {name: v for name, v, _ in BlockDecoder(table, start, count, points).decode(values)}


async def read_points(
    host: SimHost, ref: str, table: Table, start: int, count: int
) -> dict[str, Any]:
    dev = host.device(ref)
    unit = host.endpoint(ref).unit
    async with client(host, ref) as c:
        fn = {
            Table.HOLDING: c.read_holding_registers,
            Table.INPUT: c.read_input_registers,
            Table.COIL: c.read_coils,
            Table.DISCRETE: c.read_discrete_inputs,
        }[table]
        rr = await fn(start, count=count, device_id=unit)
        assert not rr.isError(), rr
        values = rr.bits[:count] if table.is_bits else rr.registers
    return decode(dev.profile, table, start, count, values)


# -- reads -------------------------------------------------------------------------------------
async def test_reads_match_the_model(sim: SimHost) -> None:
    m = sim.site("a").model
    rect = await read_points(sim, "a/rectifier", Table.INPUT, 0, 13)
    assert rect["dc_voltage"] == pytest.approx(m.bus_v, abs=0.01)
    assert rect["ac_input_power"] == pytest.approx(m.rectifier.input_power_w, abs=1)
    assert rect["modules_installed"] == 4 and rect["modules_on"] == 4
    assert rect["load_current"] == pytest.approx(m.dc_load_w / m.bus_v, abs=0.1)

    bat = await read_points(sim, "a/battery", Table.HOLDING, 0x1100, 4)
    assert bat["mode"] == 0 and bat["target_soc"] == pytest.approx(m.battery.target_soc)
    bat = await read_points(sim, "a/battery", Table.HOLDING, 0x0002, 7)
    assert bat["soc"] == round(m.battery.soc)
    assert bat["temperature"] == pytest.approx(m.battery.temp_c, abs=0.05)

    meter = await read_points(sim, "a/meter", Table.INPUT, 0, 14)  # float32 / u32 in DCBA
    assert meter["import_power"] == pytest.approx(m.grid_import_w, abs=1)
    assert meter["import_energy"] == pytest.approx(m.meter.import_energy_kwh, abs=0.01)
    assert meter["import_energy"] > 0.3  # ten minutes at ≈ 5 kW
    assert meter["voltage"] == pytest.approx(m.meter.voltage_v, rel=1e-6)

    ac = await read_points(sim, "a/aircon", Table.INPUT, 3, 10)
    assert ac["room_temp"] == pytest.approx(m.aircon.room_c, abs=0.05)
    assert ac["power"] == pytest.approx(m.aircon.power_w, abs=1)

    closed = await read_points(sim, "a/breaker", Table.DISCRETE, 0, 9)
    assert closed["lock"] is False
    assert [closed[f"ch{n}_closed"] for n in range(1, 9)] == [c.closed for c in m.breaker.channels]
    ch3 = await read_points(sim, "a/breaker", Table.INPUT, 0x0110, 6)
    assert ch3["ch3_power"] == pytest.approx(m.breaker.channels[2].power_w, abs=1)
    assert ch3["ch3_energy"] == pytest.approx(m.breaker.channels[2].energy_kwh, abs=0.01)  # BADC
    assert ch3["ch3_status"] == 0b1001  # closed, remote enabled


async def test_values_follow_simulated_time(sim: SimHost) -> None:
    before = await read_points(sim, "a/meter", Table.INPUT, 0x0A, 2)
    clock = sim.clock
    assert isinstance(clock, ManualClock)
    clock.advance(3600)
    after = await read_points(sim, "a/meter", Table.INPUT, 0x0A, 2)
    assert 3.0 < after["import_energy"] - before["import_energy"] < 8.0


async def test_shared_port_serves_many_units(sim: SimHost) -> None:
    ports = {sim.endpoint(f"b/{k.value}").port for k in PROFILES}
    assert len(ports) == 1
    mb = sim.site("b").model
    rect = await read_points(sim, "b/rectifier", Table.INPUT, 0, 2)
    assert rect["dc_voltage"] == pytest.approx(mb.bus_v, abs=0.01)
    bat = await read_points(sim, "b/battery", Table.HOLDING, 0x0003, 2)
    assert bat["soc"] == round(mb.battery.soc)
    # Two sites: their loads differ (seeded variation).
    ma = sim.site("a").model
    assert ma.dc_load_w != mb.dc_load_w


# -- writes ------------------------------------------------------------------------------------
async def test_writes_change_the_model(sim: SimHost) -> None:
    m = sim.site("a").model
    async with client(sim, "a/aircon") as c:
        rr = await c.write_register(5, 285, device_id=1)  # setpoint 28.5 °C (s16 × 0.1)
        assert not rr.isError(), rr
        assert m.aircon.setpoint_c == pytest.approx(28.5)
        rr = await c.write_coil(0, False, device_id=1)
        assert not rr.isError() and m.aircon.on is False
        rr = await c.read_holding_registers(5, count=1, device_id=1)
        assert rr.registers == [285]
    async with client(sim, "a/battery") as c:
        rr = await c.write_registers(0x1100, [2, 1500], device_id=1)  # discharge, 1.5 kW
        assert not rr.isError(), rr
    assert m.battery.mode is BatteryMode.DISCHARGE
    assert m.battery.discharge_power_limit_w == 1500
    async with client(sim, "a/rectifier") as c:
        rr = await c.write_register(0x0102, 1, device_id=1)
        assert not rr.isError() and m.rectifier.eco_enable
        rr = await c.write_register(0x0103, 30, device_id=1)  # vendor extra: saving point
        assert not rr.isError() and m.rectifier.eco_save_point == pytest.approx(0.30)
    clock = sim.clock
    assert isinstance(clock, ManualClock)
    clock.advance(60)
    bat = await read_points(sim, "a/battery", Table.HOLDING, 0x0002, 1)
    assert bat["current"] < -20  # discharging ≈ 1.5 kW


async def test_breaker_coil_opens_the_channel_after_the_delay(sim: SimHost) -> None:
    m = sim.site("a").model
    clock = sim.clock
    assert isinstance(clock, ManualClock)
    async with client(sim, "a/breaker") as c:
        rr = await c.write_coil(4, False, device_id=1)  # ch4 = aau_capacity_1
        assert not rr.isError(), rr
        rr = await c.read_discrete_inputs(4, count=1, device_id=1)
        assert rr.bits[0] is True  # still closed: the mechanism takes ≈ 1 s
        clock.advance(1.5)
        rr = await c.read_discrete_inputs(4, count=1, device_id=1)
        assert rr.bits[0] is False
        rr = await c.read_coils(4, count=1, device_id=1)
        assert rr.bits[0] is False  # the command coil reads back the last command
    assert not m.breaker.channels[3].closed
    assert m.breaker.channels[3].power_w == 0.0
    ch4 = await read_points(sim, "a/breaker", Table.INPUT, 0x0118, 3)
    assert ch4["ch4_current"] == 0.0


EXC_ADDRESS, EXC_VALUE, EXC_FAILURE = 2, 3, 4


async def test_invalid_writes_get_exception_responses(sim: SimHost) -> None:
    m = sim.site("a").model
    async with client(sim, "a/battery") as c:
        rr = await c.write_register(0x0003, 50, device_id=1)  # soc is read-only
        assert rr.isError() and rr.exception_code == EXC_ADDRESS
        rr = await c.write_register(0x1100, 7, device_id=1)  # mode 7 is outside 0..2
        assert rr.isError() and rr.exception_code == EXC_VALUE
        rr = await c.write_register(0x2000, 1, device_id=1)  # unmapped
        assert rr.isError() and rr.exception_code == EXC_ADDRESS
        rr = await c.read_holding_registers(0x0000, count=3, device_id=1)  # gap at 0x0001
        assert rr.isError() and rr.exception_code == EXC_ADDRESS
        rr = await c.read_holding_registers(0x0022, count=110, device_id=1)  # > max_block 100
        assert rr.isError() and rr.exception_code == EXC_VALUE
    assert m.battery.mode is BatteryMode.AUTO
    async with client(sim, "a/aircon") as c:
        rr = await c.write_register(5, 400, device_id=1)  # 40 °C > max 32
        assert rr.isError() and rr.exception_code == EXC_VALUE
        rr = await c.write_register(1, 4, device_id=1)  # mode 4 is no mode
        assert rr.isError() and rr.exception_code == EXC_VALUE
    assert m.aircon.setpoint_c == 27.0
    m.breaker.locked = True
    sim.site("a").touch()
    async with client(sim, "a/breaker") as c:
        rr = await c.read_discrete_inputs(0, count=1, device_id=1)
        assert rr.bits[0] is True  # the lock shows
        rr = await c.write_coil(5, False, device_id=1)
        assert rr.isError() and rr.exception_code == EXC_FAILURE
        rr = await c.write_coil(20, False, device_id=1)
        assert rr.isError() and rr.exception_code == EXC_ADDRESS
    assert m.breaker.channels[4].closed


# -- faults ------------------------------------------------------------------------------------
async def other_device_answers(sim: SimHost) -> None:
    async with client(sim, "a/meter") as c:
        rr = await c.read_input_registers(0, count=2, device_id=1)
        assert not rr.isError()


async def test_latency(sim: SimHost) -> None:
    sim.inject("a/battery", FaultKind.LATENCY, for_s=30, latency_ms=300)
    async with client(sim, "a/battery", timeout=2.0) as c:
        t = time.monotonic()
        rr = await c.read_holding_registers(0x0003, count=1, device_id=1)
        assert not rr.isError()
        assert time.monotonic() - t >= 0.3
    await other_device_answers(sim)


async def test_timeout_then_recovery(sim: SimHost) -> None:
    sim.inject("a/battery", FaultKind.TIMEOUT, for_s=0.6)
    async with client(sim, "a/battery", timeout=0.3) as c:
        with pytest.raises(ModbusIOException):
            await c.read_holding_registers(0x0003, count=1, device_id=1)
        await other_device_answers(sim)
    await asyncio.sleep(0.7)  # the fault's own (wall-clock) duration
    async with client(sim, "a/battery") as c:
        rr = await c.read_holding_registers(0x0003, count=1, device_id=1)
        assert not rr.isError()


async def test_exception_fault(sim: SimHost) -> None:
    sim.inject("a/rectifier", FaultKind.EXCEPTION, for_s=30, code=6)
    async with client(sim, "a/rectifier") as c:
        rr = await c.read_input_registers(0, count=2, device_id=1)
        assert rr.isError() and rr.exception_code == 6
    await other_device_answers(sim)


async def test_garbage_fault(sim: SimHost) -> None:
    true = sim.device("a/rectifier").image.read(Table.INPUT, 0, 13)
    sim.inject("a/rectifier", FaultKind.GARBAGE, for_s=30)
    async with client(sim, "a/rectifier") as c:
        seen = []
        for _ in range(3):
            rr = await c.read_input_registers(0, count=13, device_id=1)
            assert not rr.isError()
            seen.append(rr.registers)
    assert all(s != true for s in seen)
    await other_device_answers(sim)


async def test_disconnect_fault(sim: SimHost) -> None:
    sim.inject("a/aircon", FaultKind.DISCONNECT, for_s=30)
    async with client(sim, "a/aircon", timeout=0.5) as c:
        with pytest.raises((ModbusIOException, ConnectionException)):
            await c.read_input_registers(3, count=1, device_id=1)
    # On the wire: the server closes the socket instead of answering.
    ep = sim.endpoint("a/aircon")
    reader, writer = await asyncio.open_connection(ep.host, ep.port)
    mbap_read_ir3 = bytes([0, 1, 0, 0, 0, 6, 1, 4, 0, 3, 0, 1])
    writer.write(mbap_read_ir3)
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), timeout=3) == b""  # EOF, no answer
    writer.close()
    await other_device_answers(sim)


async def wait_for(cond: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def test_gone_device_refuses_connections_and_comes_back(sim: SimHost) -> None:
    ep = sim.endpoint("a/breaker")
    sim.inject("a/breaker", FaultKind.GONE, for_s=0.5)
    await sim.tick()

    async def refused() -> bool:
        try:
            _, w = await asyncio.open_connection(ep.host, ep.port)
        except OSError:
            return True
        w.close()
        return False

    assert await refused()
    await other_device_answers(sim)
    await asyncio.sleep(0.6)
    await sim.tick()
    assert not await refused()
    async with client(sim, "a/breaker") as c:
        rr = await c.read_discrete_inputs(1, count=8, device_id=1)
        assert not rr.isError()


async def test_scenario_faults_run_on_simulated_time(sim: SimHost) -> None:
    clock = sim.clock
    assert isinstance(clock, ManualClock)
    t = clock.now()
    sim.faults.add("a/meter", Fault(FaultKind.EXCEPTION, t + 100, t + 200, clock=FaultClock.SIM))
    async with client(sim, "a/meter") as c:
        assert not (await c.read_input_registers(0, count=2, device_id=1)).isError()
        clock.advance(150)
        rr = await c.read_input_registers(0, count=2, device_id=1)
        assert rr.isError() and rr.exception_code == 4
        clock.advance(100)
        assert not (await c.read_input_registers(0, count=2, device_id=1)).isError()
