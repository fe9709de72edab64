"""Third-party clients and our own tools against the simulators: RTU over socat, mbpoll, the
control endpoint and the `sitewatt-sim` CLI."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusSerialClient

from protocols.clock import ManualClock, parse_time
from protocols.codec import decode_point
from protocols.profiles import load_profile
from protocols.types import DeviceKind
from simulators.control import ControlServer, request
from simulators.host import Placement, SimHost
from simulators.modbus.server import serve_rtu
from simulators.spec import SiteSpec

REPO = Path(__file__).resolve().parents[2]
T0 = parse_time("2025-07-01T12:00:00+08:00")


@pytest.fixture
async def one_site() -> AsyncIterator[SimHost]:
    host = SimHost(ManualClock(T0), tick_s=0.05)
    host.add_site(
        SiteSpec(id="s"),
        {
            DeviceKind.BATTERY: Placement("battery_lianfa_lf48100"),
            DeviceKind.METER: Placement("meter_gridline_gm1"),
            DeviceKind.BREAKER: Placement("breaker_breakwell_sb8"),
        },
    )
    async with host:
        yield host


# -- RTU over a socat pty pair -----------------------------------------------------------------
@pytest.fixture
def pty_pair(tmp_path: Path) -> Iterator[tuple[str, str]]:
    if shutil.which("socat") is None:
        pytest.skip("socat is not installed")
    a, b = tmp_path / "a", tmp_path / "b"
    proc = subprocess.Popen(
        ["socat", "-d", "-d", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 5
        while not (a.exists() and b.exists()):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("socat did not create the pty pair")
            time.sleep(0.02)
        yield str(a), str(b)
    finally:
        proc.terminate()
        proc.wait(timeout=5)


async def test_rtu_two_devices_on_one_line(one_site: SimHost, pty_pair: tuple[str, str]) -> None:
    server_end, client_end = pty_pair
    battery = one_site.device("battery")
    meter = one_site.device("meter")
    server = await serve_rtu(server_end, {1: battery, 2: meter}, faults=one_site.faults)
    client = AsyncModbusSerialClient(client_end, baudrate=19200, timeout=1, retries=1)
    try:
        assert await client.connect()
        rr = await client.read_holding_registers(0x0003, count=2, device_id=1)
        assert not rr.isError(), rr
        m = one_site.site().model
        assert rr.registers[0] == round(m.battery.soc)
        rr = await client.read_discrete_inputs(0, count=1, device_id=2)
        assert not rr.isError() and rr.bits[0] is True  # mains present
        rr = await client.write_register(0x1101, 1200, device_id=1)
        assert not rr.isError()
        assert m.battery.discharge_power_limit_w == 1200
    finally:
        client.close()
        await server.stop()


# -- mbpoll ------------------------------------------------------------------------------------
async def test_mbpoll_reads_a_simulated_device(one_site: SimHost) -> None:
    if shutil.which("mbpoll") is None:
        pytest.skip("mbpoll is not installed")
    ep = one_site.endpoint("battery")
    proc = await asyncio.create_subprocess_exec(
        "mbpoll", "-m", "tcp", "-a", str(ep.unit), "-t", "4", "-0", "-r", "3", "-c", "2",
        "-1", "-p", str(ep.port), ep.host,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=20)
    assert proc.returncode == 0, err.decode()
    values = dict(re.findall(r"\[(\d+)\]:\s+(-?\d+)", out.decode()))
    m = one_site.site().model
    assert int(values["3"]) == round(m.battery.soc)  # SOC %
    assert int(values["4"]) == round(m.battery.soh)  # SOH %

    # Input registers, float32 little-endian (DCBA) on the meter: read raw words and decode.
    ep = one_site.endpoint("meter")
    proc = await asyncio.create_subprocess_exec(
        "mbpoll", "-m", "tcp", "-a", str(ep.unit), "-t", "3:hex", "-0", "-r", "0", "-c", "2",
        "-1", "-p", str(ep.port), ep.host,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=20)
    assert proc.returncode == 0, err.decode()
    words = [int(w, 16) for w in re.findall(r"\[\d+\]:\s+0x([0-9A-Fa-f]+)", out.decode())]
    voltage, _ = decode_point(load_profile("meter_gridline_gm1").point("voltage"), words)
    assert voltage == pytest.approx(m.meter.voltage_v, rel=1e-6)


# -- control endpoint --------------------------------------------------------------------------
async def test_control_endpoint(one_site: SimHost) -> None:
    ctl = ControlServer(one_site)
    await ctl.start()
    addr = f"127.0.0.1:{ctl.port}"
    try:
        ans = await asyncio.to_thread(
            request, addr, {"op": "fault", "device": "battery", "kind": "timeout", "for_s": 30}
        )
        assert ans == {"ok": True, "fault": "timeout", "device": "s/battery"}
        st = await asyncio.to_thread(request, addr, {"op": "status"})
        assert st["faults"] == {"s/battery": "timeout"}
        assert st["sites"]["s"]["mains"] is True
        ans = await asyncio.to_thread(request, addr, {"op": "mains", "present": False})
        assert ans["ok"]
        clock = one_site.clock
        assert isinstance(clock, ManualClock)
        clock.advance(60)
        await one_site.tick()
        st = await asyncio.to_thread(request, addr, {"op": "status"})
        assert st["sites"]["s"]["mains"] is False
        m = one_site.site().model
        assert m.battery.current_a < -30
        ans = await asyncio.to_thread(
            request, addr, {"op": "write", "device": "battery", "points": {"mode": 2}}
        )
        assert ans["ok"] and m.battery.mode == 2
        bad = await asyncio.to_thread(request, addr, {"op": "fault", "device": "nope"})
        assert not bad["ok"] and "no device" in bad["error"]
        await asyncio.to_thread(request, addr, {"op": "clear"})
        st = await asyncio.to_thread(request, addr, {"op": "status"})
        assert st["faults"] == {}
    finally:
        await ctl.stop()


# -- the CLI -----------------------------------------------------------------------------------
def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "simulators.cli", *args]


ENV = {**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}


def test_cli_site_runs_for_a_simulated_duration() -> None:
    res = subprocess.run(
        _cli("site", "--config", "config/sim-site.toml", "--port-base", "0", "--control-port",
             "0", "--no-live", "--speed", "7200", "--duration-h", "1"),
        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert len(re.findall(r"127\.0\.0\.1:\d+ unit 1", res.stdout)) == 5
    assert "sim-site-1" in res.stdout
    assert res.stdout.rstrip().endswith("stopped")


def test_cli_site_fault_status_and_sigterm(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        _cli("site", "--config", "config/sim-site.toml", "--port-base", "0", "--control-port",
             "0", "--no-live", "--speed", "60"),
        cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        control = None
        deadline = time.monotonic() + 30
        while control is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            if hit := re.search(r"control: (127\.0\.0\.1:\d+)", line):
                control = hit.group(1)
        assert control is not None, "no control endpoint announced"
        res = subprocess.run(
            _cli("fault", "--control", control, "--device", "battery", "--kind", "latency",
                 "--for", "30", "--latency-ms", "200"),
            cwd=REPO, env=ENV, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert res.returncode == 0, res.stdout + res.stderr
        assert "sim-site-1/battery: latency 200 ms" in res.stdout
        status = request(control, {"op": "status"})
        assert status["faults"] == {"sim-site-1/battery": "latency 200 ms"}
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0
        assert rest.rstrip().endswith("stopped")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_reports_a_bad_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('kind = "site"\n[site.battery]\ncapacity_ah = -5\n')
    res = subprocess.run(
        _cli("site", "--config", str(bad)), cwd=REPO, env=ENV, capture_output=True, text=True,
        timeout=30,
    )  # fmt: skip
    assert res.returncode == 2
    assert "site.battery.capacity_ah" in res.stdout
