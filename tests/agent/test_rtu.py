"""Modbus RTU over a real serial line: a socat pseudo-terminal pair, the simulator's RTU server on
one end with two devices, the agent's poller on the other, polling them in turn under one lock."""

from __future__ import annotations

import asyncio
import itertools
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.modbus_bus import ModbusBus, SerialSettings
from agent.poller import Poller, load_device_profiles
from protocols.clock import SimClock
from protocols.profiles import Table, load_profile
from protocols.types import DeviceKind, Quality
from simulators.modbus.server import ServedDevice, SimRtuServer, serve_rtu
from simulators.runtime import SiteRuntime
from simulators.spec import BatterySpec, SiteSpec
from tests.agent.devices_support import Collector, site_config, wait_for

pytestmark = pytest.mark.skipif(shutil.which("socat") is None, reason="socat is not installed")

BAUD = 38400


@pytest.fixture
def serial_pair(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """Two linked pseudo-terminals made by socat; the socat process is ended by its pid."""
    a, b = tmp_path / "ttyA", tmp_path / "ttyB"
    proc = subprocess.Popen(
        ["socat", "-d", "-d", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not (a.exists() and b.exists()):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("socat did not create the pty pair")
            time.sleep(0.02)
        yield a, b
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
async def rtu_site(serial_pair: tuple[Path, Path]) -> AsyncIterator[SimRtuServer]:
    clock = SimClock(start=1_700_000_000.0, speed=1.0)
    runtime = SiteRuntime(SiteSpec(id="rtu-site", battery=BatterySpec(initial_soc=77.0)), clock)
    units = {
        2: ServedDevice(
            "battery",
            runtime,
            runtime.model,
            DeviceKind.BATTERY,
            load_profile("battery_lianfa_lf48100"),
        ),
        5: ServedDevice(
            "meter", runtime, runtime.model, DeviceKind.METER, load_profile("meter_gridline_gm1")
        ),
    }
    server = await serve_rtu(str(serial_pair[0]), units, baudrate=BAUD)
    try:
        yield server
    finally:
        await server.stop()


class Tracing(ModbusBus):
    """The real bus, recording when each exchange was on the line (to prove none overlap)."""

    spans: list[tuple[float, float, int]]

    async def _call(
        self,
        request: Callable[[], Awaitable[Any]],
        unit: int,
        address: int,
        timeout: float,
        retries: int,
    ) -> Any:
        async def timed() -> Any:
            t0 = time.perf_counter()
            try:
                return await request()
            finally:
                self.spans.append((t0, time.perf_counter(), unit))

        return await super()._call(timed, unit, address, timeout, retries)


def assert_serial(spans: list[tuple[float, float, int]]) -> None:
    ordered = sorted(spans)
    for (_, e0, _), (s1, _, _) in itertools.pairwise(ordered):
        assert s1 >= e0, "two requests were on the serial line at once"


async def test_two_devices_on_one_serial_line(
    tmp_path: Path, serial_pair: tuple[Path, Path], rtu_site: SimRtuServer
) -> None:
    line = str(serial_pair[1])
    common = {"serial": line, "baud": BAUD, "poll_interval_s": 0.3, "timeout_s": 0.5}
    cfg = site_config(
        tmp_path,
        {
            "battery": {
                "kind": "battery",
                "profile": "battery_lianfa_lf48100",
                "unit_id": 2,
                **common,
            },
            "meter": {"kind": "meter", "profile": "meter_gridline_gm1", "unit_id": 5, **common},
        },
    )
    assert list(cfg.buses()) == [f"rtu:{line}"]  # one physical bus for both
    dev = cfg.devices["battery"]
    bus = Tracing.for_device(dev)
    assert isinstance(bus, Tracing) and bus.is_serial
    bus.spans = []
    sink = Collector()
    poller = Poller(cfg, load_device_profiles(cfg), sink, SimClock(start=0.0), buses={dev.bus: bus})
    async with poller:
        await wait_for(lambda: min(d.reads_ok for d in poller.devices.values()) >= 5, timeout=30)
    soc = poller.latest.get("battery", "soc")
    assert soc is not None and soc.quality is Quality.GOOD and soc.value == pytest.approx(77, abs=1)
    mains = poller.latest.get("meter", "mains_present")
    assert mains is not None and mains.value is True
    assert all(d.failures == 0 for d in poller.devices.values())
    # Both devices were served in turn on one line: no two exchanges ever overlapped.
    assert {u for _, _, u in bus.spans} == {2, 5}
    assert_serial(bus.spans)
    assert bus.stats.failures == 0


async def test_concurrent_users_of_one_line_are_serialised(
    tmp_path: Path, serial_pair: tuple[Path, Path], rtu_site: SimRtuServer
) -> None:
    """Many concurrent users (the poller, a command, `check`) take turns on one line."""
    bus = Tracing("rtu", serial=SerialSettings(str(serial_pair[1]), BAUD))
    bus.spans = []
    soc = load_profile("battery_lianfa_lf48100").point("soc")
    async with bus:
        results = await asyncio.gather(
            *(
                bus.read(2, Table.HOLDING, soc.address, 1, timeout=0.5)
                if i % 2
                else bus.read(5, Table.DISCRETE, 0, 1, timeout=0.5)
                for i in range(20)
            )
        )
    assert len(results) == 20 and bus.stats.failures == 0
    assert len(bus.spans) == 20
    assert_serial(bus.spans)
