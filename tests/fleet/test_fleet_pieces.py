"""The small pieces the fleet rests on: clock sections, bulk enrolment, orphan-proof children."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent.config import parse_config
from agent.errors import ConfigError as AgentConfigError
from aggregator.cli import app as aggregator_app
from aggregator.config import config_from_dict
from aggregator.errors import ConfigError as AggregatorConfigError
from aggregator.storage import open_storage
from protocols.clock import SimClock, SystemClock, configured_clock
from protocols.keys import generate_key, public_key_hex
from simulators.procs import Children, pid_alive
from tests.conftest import requires_mosquitto


def _wait(cond: object, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_configured_clock_defaults_to_wall_clock_and_processes_agree() -> None:
    assert isinstance(configured_clock(), SystemClock)
    a = configured_clock("2025-07-01T00:00:00+08:00", 60.0, 1000.0)
    b = configured_clock(1751299200.0, 60.0, 1000.0)
    assert isinstance(a, SimClock) and isinstance(b, SimClock)
    assert a.now() == pytest.approx(b.now(), abs=0.5)
    anchored_now = configured_clock("now", 10.0, 1000.0)
    assert isinstance(anchored_now, SimClock) and anchored_now.start == 1000.0


MIN_AGENT = {
    "site": {"id": "s1", "key_file": "site.key", "aggregator_keys": ["ab" * 32]},
    "devices": {"meter": {"kind": "meter", "profile": "meter_gridline_gm1", "host": "127.0.0.1"}},
    "profiles_dir": str(Path(__file__).resolve().parents[2] / "config" / "profiles"),
}


def test_agent_clock_section(tmp_path: Path) -> None:
    cfg = parse_config(MIN_AGENT, base=tmp_path)
    assert isinstance(cfg.clock.build(), SystemClock)
    cfg = parse_config({**MIN_AGENT, "clock": {"start": 100.0, "speed": 5, "anchor": 7.0}})
    clock = cfg.clock.build()
    assert isinstance(clock, SimClock) and (clock.start, clock.speed, clock.anchor) == (100, 5, 7)
    with pytest.raises(AgentConfigError, match=r"clock\.start"):
        parse_config({**MIN_AGENT, "clock": {"start": "yesterday"}})
    with pytest.raises(AgentConfigError, match=r"clock\.speed"):
        parse_config({**MIN_AGENT, "clock": {"speed": 0}})


def test_aggregator_clock_section() -> None:
    assert isinstance(config_from_dict({}).clock.build(), SystemClock)
    clock = config_from_dict({"clock": {"start": "2025-07-01T00:00:00Z", "speed": 60}}).clock
    assert isinstance(clock.build(), SimClock)
    with pytest.raises(AggregatorConfigError, match=r"clock"):
        config_from_dict({"clock": {"start": "nope"}})


def test_sites_import_enrols_a_fleet_in_seconds(tmp_path: Path) -> None:
    rows = [
        {"site": f"f-{i:04d}", "public_key": public_key_hex(generate_key()), "region": "north",
         "tariff": "single-part"}
        for i in range(300)
    ]  # fmt: skip
    (tmp_path / "sites.json").write_text(json.dumps(rows))
    db = tmp_path / "agg.db"
    t0 = time.monotonic()
    result = CliRunner().invoke(
        aggregator_app, ["sites", "import", str(tmp_path / "sites.json"), "--db", str(db)]
    )
    took = time.monotonic() - t0
    assert result.exit_code == 0, result.output
    assert took < 10.0
    storage = open_storage(db)
    try:
        sites = storage.list_sites()
        assert len(sites) == 300 and {s.region for s in sites} == {"north"}
        assert len(storage.site_keys()) == 300
    finally:
        storage.close()
    csv_file = tmp_path / "more.csv"
    key = public_key_hex(generate_key())
    csv_file.write_text(f"site,public_key,tariff\ng-1,{key},single-part\ng-2,,x\n")
    result = CliRunner().invoke(aggregator_app, ["sites", "import", str(csv_file), "--db", str(db)])
    assert result.exit_code == 2 and "row 2: missing public_key" in result.output


def test_children_die_with_their_parent_even_on_sigkill(tmp_path: Path) -> None:
    """A runner killed with SIGKILL leaves no child behind (PR_SET_PDEATHSIG via the guard)."""
    pid_file = tmp_path / "child.pid"
    script = (
        "import sys, time, pathlib\n"
        "from simulators.procs import Children\n"
        "c = Children(pathlib.Path(sys.argv[1]))\n"
        "ch = c.spawn('sleeper', 'test', ['sleep', '300'])\n"
        "pathlib.Path(sys.argv[2]).write_text(str(ch.pid))\n"
        "time.sleep(300)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script, str(tmp_path), str(pid_file)])
    try:
        assert _wait(lambda: pid_file.exists() and pid_file.read_text())
        child = int(pid_file.read_text())
        assert pid_alive(child)
        parent.kill()
        parent.wait(10)
        assert _wait(lambda: not pid_alive(child)), "the child outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)


@requires_mosquitto
def test_mosquitto_dies_with_the_runner_even_on_sigkill(tmp_path: Path) -> None:
    """mosquitto started as root switches user, which would clear the parent-death signal:
    a fleet's broker keeps our user so it still goes when the runner is killed."""
    pid_file = tmp_path / "broker.pid"
    script = (
        "import sys, time, pathlib\n"
        "from simulators.broker import Broker\n"
        "b = Broker(kind='mosquitto', workdir=pathlib.Path(sys.argv[1]), die_with_parent=True)\n"
        "b.start()\n"
        "pathlib.Path(sys.argv[2]).write_text(str(b.proc.pid))\n"
        "time.sleep(300)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "b"), str(pid_file)])
    try:
        assert _wait(lambda: pid_file.exists() and pid_file.read_text())
        broker = int(pid_file.read_text())
        assert pid_alive(broker)
        parent.kill()
        parent.wait(10)
        assert _wait(lambda: not pid_alive(broker)), "mosquitto outlived the runner"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)


def test_children_stop_in_order_and_escalate(tmp_path: Path) -> None:
    kids = Children(tmp_path)
    stubborn = kids.spawn(
        "stubborn", "b", [sys.executable, "-c",
                          "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
                          " print('ready', flush=True); time.sleep(300)"],
    )  # fmt: skip
    polite = kids.spawn("polite", "a", ["sleep", "300"])
    assert _wait(lambda: "ready" in stubborn.log.read_text())
    t0 = time.monotonic()
    kids.stop_all(["a", "b"], timeout=1.0)
    assert time.monotonic() - t0 < 8.0
    assert polite.proc.returncode == -15 and stubborn.proc.returncode == -9
    assert not pid_alive(polite.pid) and not pid_alive(stubborn.pid)
