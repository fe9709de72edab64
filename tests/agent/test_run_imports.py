"""`sitewatt-agent run` imports only what the running agent uses (DESIGN's memory target).

Each module a gateway imports stays in its memory for good: rich (~2 MB, ~50 modules) is for
the technician's commands, the planners and tariffs of `protocols.control` (~1 MB with their
pydantic models) are the aggregator's and simulators', psutil only serves gateway health. The
real `run` command runs in a fresh interpreter until the agent has started, then stops on the
SIGTERM the CLI handles; the test reads which modules it had loaded.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from protocols.keys import generate_key, save_private_key
from simulators.broker import free_port
from tests.agent.sim_support import shipped_layout
from tests.conftest import REPO

RUN_AND_LIST_MODULES = """
import json, os, signal, sys
from agent import runtime
from agent.cli import app

start = runtime.Agent.start

async def start_then_terminate(self):
    await start(self)
    os.kill(os.getpid(), signal.SIGTERM)  # what systemd sends; the CLI stops the agent

runtime.Agent.start = start_then_terminate
try:
    app(["run", "--config", sys.argv[1], "--log-level", "ERROR"])
except SystemExit as exc:
    if exc.code:
        raise
print(json.dumps({"started": start_then_terminate.__name__, "modules": sorted(sys.modules)}))
"""


def run_path_modules(config: Path) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", RUN_AND_LIST_MODULES, str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout.strip().splitlines()[-1])["modules"])


def test_run_loads_no_cli_output_planners_or_unused_health(tmp_path: Path) -> None:
    config = shipped_layout(tmp_path)
    save_private_key(generate_key(), tmp_path / "var" / "sim-site-1.key")
    text = config.read_text()
    # Nothing listens on the broker port: the agent keeps its readings and retries, as offline.
    text = text.replace("port = 1883", f"port = {free_port()}", 1)
    text, n = re.subn(r"(\[gateway\][^\[]*?)^enabled = true", r"\g<1>enabled = false", text,
                      count=1, flags=re.M | re.S)  # fmt: skip
    assert n == 1
    config.write_text(text)

    modules = run_path_modules(config)

    # It did run the agent: the interlocks' reserve arithmetic, the outbox, the MQTT client.
    assert {"agent.runtime", "protocols.control.reserve", "agent.outbox", "paho.mqtt.client"} <= (
        modules
    )
    assert not {m for m in modules if m == "rich" or m.startswith("rich.")}
    planners = {m for m in modules if m.startswith("protocols.control.")}
    assert planners <= {"protocols.control.reserve", "protocols.control.errors"}, planners
    assert "psutil" not in modules and "agent.health" not in modules
