"""The poller against real pymodbus servers on loopback: values, qualities, backoff, rates."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent.errors import ConfigError, DeviceException, DeviceTimeout
from agent.modbus_bus import ModbusBus, probe_units
from agent.poller import Poller, load_device_profiles
from protocols.clock import SystemClock
from protocols.profiles import Table, load_profile
from protocols.types import Quality
from tests.agent.devices_support import Collector, SilentServer, site_config, wait_for
from tests.support.modbus_fixtures import ServerFactory

BATTERY = load_profile("battery_lianfa_lf48100")
BREAKER = load_profile("breaker_breakwell_sb8")


def dev(kind: str, profile: str, port: int, **kw: object) -> dict[str, object]:
    return {"kind": kind, "profile": profile, "host": "127.0.0.1", "port": port, **kw}


async def test_reads_every_point_in_few_requests(
    tmp_path: Path, modbus_server: ServerFactory
) -> None:
    server = modbus_server(BATTERY, {"soc": 87.0, "voltage": 52.4, "current": -12.5})
    cfg = site_config(tmp_path, {"bat": dev("battery", "battery_lianfa_lf48100", server.port)})
    profiles = load_device_profiles(cfg)
    sink = Collector()
    poller = Poller(cfg, profiles, sink, SystemClock())
    try:
        result = await poller.poll_once("bat")
        assert result.answered
        got = {r.point: r for r in result.readings}
        assert set(got) == {p.name for p in BATTERY.points}
        assert got["soc"].value == 87.0 and got["soc"].quality is Quality.GOOD
        assert got["current"].value == pytest.approx(-12.5)
        bus = poller.bus_of("bat")
        assert bus.stats.requests == len(poller.devices["bat"].blocks) < len(BATTERY.points) / 3
        assert len(sink.readings) == len(BATTERY.points)  # first poll: everything is news
        await poller.poll_once("bat")
        assert len(sink.readings) == len(BATTERY.points)  # nothing changed: nothing sent
        server.set({"soc": 86.0})  # inside the profile's 1 % deadband
        await poller.poll_once("bat")
        assert len(sink.readings) == len(BATTERY.points)
        server.set({"soc": 85.0})
        await poller.poll_once("bat")
        assert [r.point for r in sink.readings[len(BATTERY.points) :]] == ["soc"]
        assert poller.latest.get("bat", "soc") is not None
    finally:
        await poller.stop()


async def test_dead_device_backs_off_while_others_keep_rate(
    tmp_path: Path, modbus_server: ServerFactory
) -> None:
    good = modbus_server(BATTERY, {"soc": 80.0})
    async with SilentServer() as hung:
        cfg = site_config(
            tmp_path,
            {
                "bat": dev(
                    "battery",
                    "battery_lianfa_lf48100",
                    good.port,
                    poll_interval_s=0.1,
                    timeout_s=0.1,
                    retries=0,
                ),
                "hung": dev(
                    "breaker",
                    "breaker_breakwell_sb8",
                    hung.port,
                    poll_interval_s=0.1,
                    timeout_s=0.1,
                    retries=0,
                ),
            },
            extra={"polling": {"backoff_max_s": 1.0}},
        )
        sink = Collector()
        poller = Poller(cfg, load_device_profiles(cfg), sink, SystemClock())
        async with poller:
            await wait_for(lambda: poller.devices["bat"].polls >= 20, timeout=10)
        bat, hung_dev = poller.devices["bat"], poller.devices["hung"]
        # The hung breaker failed, was backed off (far fewer attempts) and reported comm-error.
        assert hung_dev.failures >= 1 and hung_dev.reads_ok == 0
        assert hung_dev.polls < bat.polls / 2
        assert "no answer" in (hung_dev.last_error or "")
        ch1 = sink.of("hung", "ch1_closed")
        assert ch1 and all(r.value is None and r.quality is Quality.COMM_ERROR for r in ch1)
        # The good battery kept its 0.1 s rate: its last polls are ~0.1 s apart.
        gaps = [b - a for a, b in zip(bat.poll_times[-10:], bat.poll_times[-9:], strict=False)]
        assert max(gaps) < 0.35, gaps


async def test_disconnect_then_reconnect(tmp_path: Path, modbus_server: ServerFactory) -> None:
    server = modbus_server(BATTERY, {"soc": 55.0})
    cfg = site_config(tmp_path, {"bat": dev("battery", "battery_lianfa_lf48100", server.port)})
    sink = Collector()
    poller = Poller(cfg, load_device_profiles(cfg), sink, SystemClock())
    try:
        assert (await poller.poll_once("bat")).answered
        server.stop()
        failed = await poller.poll_once("bat")
        assert not failed.answered
        assert all(r.quality is Quality.COMM_ERROR and r.value is None for r in failed.readings)
        again = modbus_server(BATTERY, {"soc": 54.0})
        # The fixture cannot reuse a port: point the bus at the new server (the simulator test
        # covers a reconnect to the same port).
        bus2 = ModbusBus("re", host="127.0.0.1", port=again.port)
        poller.buses[poller.config.devices["bat"].bus] = bus2
        ok = await poller.poll_once("bat")
        assert ok.answered and poller.latest.get("bat", "soc").value == 54.0  # type: ignore[union-attr]
    finally:
        await poller.stop()


async def test_bus_maps_errors_and_scan(modbus_server: ServerFactory) -> None:
    server = modbus_server(BATTERY, {"soc": 50.0}, device_id=3, strict=True)
    async with ModbusBus("t", host="127.0.0.1", port=server.port) as bus:
        soc = BATTERY.point("soc")
        words = await bus.read(3, Table.HOLDING, soc.address, 1, timeout=0.5)
        assert words == [50]
        with pytest.raises(DeviceException) as info:
            await bus.read(3, Table.HOLDING, 0x7000, 4, timeout=0.5)
        assert info.value.code == 2
        found = await probe_units(bus, [1, 2, 3], timeout=0.2, address=soc.address)
        # pymodbus' server answers unknown unit ids with an exception; only 3 reads "ok".
        assert found[3] == "ok" and all(v != "ok" for u, v in found.items() if u != 3)
    async with SilentServer() as hung, ModbusBus("h", host="127.0.0.1", port=hung.port) as bus:
        with pytest.raises(DeviceTimeout):
            await bus.read(1, Table.HOLDING, 0, 1, timeout=0.1)


def test_profile_problems_name_the_device(tmp_path: Path) -> None:
    cfg = site_config(
        tmp_path,
        {"bat": dev("battery", "breaker_breakwell_sb8", 1502, deadbands={"nope": 1.0})},
    )
    with pytest.raises(ConfigError) as info:
        load_device_profiles(cfg)
    text = str(info.value)
    assert "devices.bat.profile: 'breaker_breakwell_sb8' is a breaker profile" in text
    assert "devices.bat.deadbands.nope" in text


def test_devices_of_one_model_share_one_parsed_profile(tmp_path: Path) -> None:
    cfg = site_config(
        tmp_path,
        {
            "bat1": dev("battery", "battery_lianfa_lf48100", 1502),
            "bat2": dev("battery", "battery_lianfa_lf48100", 1503),
            "brk": dev("breaker", "breaker_breakwell_sb8", 1504),
        },
    )
    profiles = load_device_profiles(cfg)
    assert profiles["bat1"] is profiles["bat2"]  # one copy of the register map in memory
    assert profiles["bat1"] == BATTERY and profiles["brk"] == BREAKER


async def test_stop_with_polls_in_flight_leaves_nothing_to_append(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Stop while the bus task's read and a command's read-back both wait on a hung device:
    every bus task has ended when stop returns, and nothing reaches the sink afterwards (an
    agent closes its outbox right after)."""
    async with SilentServer() as hung:
        cfg = site_config(
            tmp_path,
            {
                "hung": dev(
                    "breaker",
                    "breaker_breakwell_sb8",
                    hung.port,
                    poll_interval_s=1.0,
                    timeout_s=1.0,
                    retries=0,
                )
            },
        )
        closed: list[bool] = []
        late: list[object] = []

        def sink(readings: object) -> None:
            if closed:
                late.append(readings)

        poller = Poller(cfg, load_device_profiles(cfg), sink, SystemClock())
        await poller.start()
        bus = poller.bus_of("hung")
        await wait_for(lambda: bus.stats.requests >= 1)  # the bus task's read is in flight
        readback = asyncio.create_task(poller.poll_once("hung"))  # waits on the bus lock
        tasks = list(poller._tasks)
        await poller.stop()
        closed.append(True)
        assert tasks and all(t.done() for t in tasks)
        result = await asyncio.wait_for(readback, 10)  # it ends (device silent) ...
        assert not result.answered
        assert late == []  # ... without reporting
        assert not [r for r in caplog.records if r.name.startswith("agent")]


async def test_every_failed_poll_reports_comm_error(tmp_path: Path) -> None:
    """Report-by-exception does not hide a device that keeps failing: each failed attempt
    sends its points as comm-error, so the aggregator sees how long the silence lasts."""
    async with SilentServer() as hung:
        cfg = site_config(
            tmp_path,
            {"hung": dev("breaker", "breaker_breakwell_sb8", hung.port, timeout_s=0.1, retries=0)},
        )
        sink = Collector()
        poller = Poller(cfg, load_device_profiles(cfg), sink, SystemClock())
        try:
            first = await poller.poll_once("hung")
            second = await poller.poll_once("hung")
        finally:
            await poller.stop()
        assert not first.answered and not second.answered
        ch1 = sink.of("hung", "ch1_closed")
        assert len(ch1) == 2 and ch1[0].t < ch1[1].t
        assert all(r.value is None and r.quality is Quality.COMM_ERROR for r in ch1)
        assert len(sink.readings) == 2 * len(first.readings)
