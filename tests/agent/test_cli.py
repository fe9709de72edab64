"""The technician's CLI: keys, the shipped config, `check` and `scan` against the simulated site
of config/sim-site.toml (with a real mosquitto and a signed aggregator state), `status`."""

from __future__ import annotations

import asyncio
import os
import re
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent.audit import AuditEntry, AuditLog
from agent.cli import app
from agent.config import load_config
from agent.outbox import Outbox
from protocols.keys import (
    generate_key,
    kid_hex,
    load_private_key,
    public_key_hex,
)
from protocols.types import Quality, Reading
from simulators.broker import Broker
from simulators.host import SimHost
from simulators.launch import build_site_host, site_placements
from simulators.scenario import load_site_scenario
from tests.agent.sim_support import shipped_layout, site_config_for
from tests.conftest import REPO
from tests.support.receiver import Receiver

runner = CliRunner()
SITE_TOML = REPO / "config" / "site.toml"
SIM_TOML = REPO / "config" / "sim-site.toml"
AGENT = [str(REPO / ".venv" / "bin" / "sitewatt-agent")]


def test_keys_init_and_show(tmp_path: Path) -> None:
    key_file = tmp_path / "keys" / "site.key"
    result = runner.invoke(app, ["keys", "init", "--key-file", str(key_file)])
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = load_private_key(key_file)
    assert public_key_hex(key) in result.output and kid_hex(key) in result.output
    again = runner.invoke(app, ["keys", "init", "--key-file", str(key_file)])
    assert again.exit_code == 2 and "refusing to overwrite" in again.output
    shown = runner.invoke(app, ["keys", "show", "--key-file", str(key_file)])
    assert shown.exit_code == 0 and kid_hex(key) in shown.output
    key_file.chmod(0o644)
    refused = runner.invoke(app, ["keys", "show", "--key-file", str(key_file)])
    assert refused.exit_code == 2 and "chmod 600" in refused.output


def test_shipped_site_toml_matches_sim_site(tmp_path: Path) -> None:
    cfg = load_config(shipped_layout(tmp_path))
    scenario = load_site_scenario(SIM_TOML)
    assert cfg.site_id == scenario.site.id
    placements = site_placements(scenario)
    for kind, pl in placements.items():
        dev = cfg.devices[kind.value]
        assert (dev.port, dev.unit_id) == (pl.port, pl.unit), kind
        assert dev.profile == pl.profile, kind
    assert cfg.broker.host == "127.0.0.1" and cfg.broker.port == 1883
    assert cfg.outbox.path == tmp_path / "var" / "sim-site-1.db"


def test_invalid_config_exit_code(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[site]\nid = "x"\n')
    result = runner.invoke(app, ["check", "--config", str(bad)])
    assert result.exit_code == 2
    assert "site.key_file: required but missing" in result.output


@pytest.fixture
async def sim() -> AsyncIterator[SimHost]:
    host = build_site_host(load_site_scenario(SIM_TOML), port_base=0, speed=1.0)
    await host.start()
    try:
        yield host
    finally:
        await host.stop()


async def cli(*args: str, timeout: float = 60) -> tuple[int, str]:
    """Run the installed `sitewatt-agent` without blocking the loop the simulator runs on."""
    proc = await asyncio.create_subprocess_exec(
        *AGENT,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "COLUMNS": "200"},
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_check_against_simulated_site(
    tmp_path: Path, sim: SimHost, mosquitto: Broker
) -> None:
    agg = generate_key()
    path = site_config_for(tmp_path, sim, mosquitto, public_key_hex(agg))
    rx = Receiver(
        host=mosquitto.host,
        port=mosquitto.port,
        db_path=tmp_path / "rx.db",
        aggregator_key=agg,
        site_keys={},
    )
    await asyncio.to_thread(rx.start)
    try:
        code, out = await cli("check", "--config", str(path), "--broker-wait", "3")
        assert code == 0, out
        assert re.search(r"battery\s+│\s+soc\s+│\s+\d", out), out
        assert "all good" in out and "aggregator  online" in out
        # A device that stops answering is named, and the exit code says so.
        sim.inject("battery", "timeout", for_s=30)
        code, out = await cli("check", "--config", str(path), "--broker-wait", "3")
        assert code == 1, out
        assert "problem device battery: no answer" in out
        assert re.search(r"battery\s+│\s+soc\s+│\s+—.*comm-error", out), out
        sim.clear()
        await asyncio.to_thread(rx.set_online, False)
        code, out = await cli("check", "--config", str(path), "--broker-wait", "3")
        assert code == 1 and "aggregator: its retained state says offline" in out, out
    finally:
        await asyncio.to_thread(rx.stop)
    mosquitto.stop()
    code, out = await cli("check", "--config", str(path), "--broker-wait", "2")
    assert code == 1 and "broker 127.0.0.1" in out, out


async def test_scan_finds_the_unit(sim: SimHost) -> None:
    ep = sim.endpoint("battery")
    code, out = await cli(
        "scan", "--host", ep.host, "--port", str(ep.port), "--units", "1-3", "--address", "3"
    )
    assert code == 0, out
    assert re.search(r"\b1\s+│\s+ok", out), out


def test_status_reads_the_database(tmp_path: Path) -> None:
    path = shipped_layout(tmp_path)
    db = tmp_path / "var" / "sim-site-1.db"
    with Outbox(db) as outbox:
        outbox.append([Reading(1_700_000_000_000, "battery", "soc", 80.0, Quality.GOOD)] * 3)
    audit = AuditLog(db)
    audit.append(
        AuditEntry(
            t=1_700_000_000_000,
            source="aggregator",
            command_id="c1",
            seq=7,
            action="battery.peak_shave",
            params={"discharge_limit_w": 1000},
            status="rejected",
            reason="below_reserve",
        )
    )
    audit.set_state({"last_seq": 7})
    audit.close()
    result = runner.invoke(app, ["status", "--config", str(path)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "3 readings" in result.output
    assert "battery.peak_shave" in result.output and "below_reserve" in result.output
    assert "audit chain" in result.output and "ok" in result.output
