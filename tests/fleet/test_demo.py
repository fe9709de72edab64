"""`make demo`'s entry point (`sitewatt-sim demo`) with the embedded broker: the fleet comes up,
every site is online with readings stored, and SIGINT leaves no process or port behind."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from simulators.fleet_ports import port_free
from simulators.procs import pid_alive

SIM = str(Path(sys.executable).parent / "sitewatt-sim")


def wait_for(cond: Callable[[], Any], what: str, timeout: float, proc: subprocess.Popen[bytes],
             log: Path) -> Any:  # fmt: skip
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the demo exited ({proc.returncode}) before {what}:\n{log.read_text()}")
        try:
            got = cond()
        except (OSError, ValueError, KeyError, httpx.HTTPError):
            got = None
        if got:
            return got
        time.sleep(0.2)
    pytest.fail(f"{what}: not within {timeout} s\n{log.read_text()[-3000:]}")


def stored(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    m = re.search(r"^sitewatt_aggregator_readings_stored_total (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


@pytest.mark.timeout(150)
def test_demo_comes_up_on_the_embedded_broker_and_stops_clean(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    log = tmp_path / "demo.out"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [SIM, "demo", "--sites", "3", "--speed", "60", "--no-browser",
             "--broker", "embedded", "--http-port", "0", "--workdir", str(workdir)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    state: dict[str, Any] = {}
    try:
        token = wait_for(
            lambda: re.search(r"operator token: (\S+)", log.read_text()), "the token", 60, proc, log
        ).group(1)
        url = wait_for(
            lambda: re.search(r"dashboard: (http://127\.0\.0\.1:\d+)/ui", log.read_text()),
            "the dashboard URL",
            10,
            proc,
            log,
        ).group(1)
        state = json.loads((workdir / "fleet.json").read_text())
        assert state["broker"]["kind"] == "amqtt"
        assert {"aggregator", "sims-0", "agents-0", "broker"} <= set(state["pids"])
        auth = {"Authorization": f"Bearer {token}"}

        def all_online() -> bool:
            sites = httpx.get(f"{url}/api/sites", headers=auth, timeout=5).json()
            return len(sites) == 3 and all(
                s["online"] and s["key_points"]["grid_import_w"] is not None for s in sites
            )

        wait_for(all_online, "all three sites online with readings", 60, proc, log)
        assert stored(url) > 0
        me = httpx.get(f"{url}/api/me", headers=auth, timeout=5).json()
        assert me["role"] == "operator"
        state = json.loads((workdir / "fleet.json").read_text())
        assert all(pid_alive(p) for p in state["pids"].values())
        proc.send_signal(signal.SIGINT)
        assert proc.wait(90) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    state = json.loads((workdir / "fleet.json").read_text())
    left = {name: pid for name, pid in state["pids"].items() if pid_alive(pid)}
    assert not left, f"still running after the demo stopped: {left}"
    ports = [state["http_port"], state["broker"]["port"], *state["modbus_ports"],
             *state["control_ports"]]  # fmt: skip
    db_dir = state["agent_db_dir"]
    assert db_dir is None or not Path(db_dir).exists(), "the agents' tmpfs databases stayed"
    busy = [p for p in ports if not port_free(p)]
    assert not busy, f"ports still taken: {busy}"
