"""`sitewatt-sim fleet --aggregator URL`: a fleet against an aggregator it did not start —
sites enrolled through the admin API, agents pinned to the given key, the aggregator left
running when the fleet stops."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from simulators.broker import Broker, free_port, wait_port
from simulators.fleet import FleetOptions, FleetRunner
from simulators.procs import pid_alive

AGG = str(Path(sys.executable).parent / "sitewatt-aggregator")


@pytest.mark.timeout(120)
async def test_fleet_against_a_running_aggregator(tmp_path: Path, mosquitto: Broker) -> None:
    port = free_port()
    config = tmp_path / "aggregator.toml"
    config.write_text(
        f'[broker]\nport = {mosquitto.port}\nclient_id = "agg-ext"\n'
        f'[database]\npath = "{tmp_path / "agg.db"}"\n'
        f'[keys]\nkey_file = "{tmp_path / "agg.key"}"\n'
        f"[http]\nport = {port}\n"
    )
    run = [AGG]
    key = subprocess.run([*run, "keys", "init", "--config", str(config)],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    admin = subprocess.run(
        [*run, "tokens", "create", "--role", "admin", "--config", str(config)],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    log = open(tmp_path / "agg.log", "wb")  # noqa: SIM115 - closed in finally
    agg = subprocess.Popen([*run, "serve", "--config", str(config)], stdout=log, stderr=log)
    runner: FleetRunner | None = None
    try:
        await asyncio.to_thread(wait_port, "127.0.0.1", port, 30.0)
        url = f"http://127.0.0.1:{port}"
        runner = FleetRunner(
            FleetOptions(
                sites=2, aggregator=url, admin_token=admin, aggregator_key=key,
                broker=f"127.0.0.1:{mosquitto.port}", workdir=tmp_path / "fleet",
            )
        )  # fmt: skip
        await asyncio.to_thread(runner.prepare)
        assert runner.plan is not None and runner.plan.speed == 1.0
        await runner.start()
        auth = {"Authorization": f"Bearer {runner.tokens['viewer']}"}
        deadline = time.monotonic() + 40
        async with httpx.AsyncClient(timeout=10) as client:
            while True:
                sites = (await client.get(f"{url}/api/sites", headers=auth)).json()
                if len(sites) == 2 and all(s["online"] for s in sites):
                    break
                assert time.monotonic() < deadline, f"sites not online: {sites}"
                await asyncio.sleep(0.3)
        await asyncio.to_thread(runner.shutdown)
        pids = runner.state()["pids"]
        assert set(pids) == {"sims-0", "agents-0"}  # no aggregator or broker of our own
        assert not [p for p in pids.values() if pid_alive(p)]
        assert agg.poll() is None, "the fleet must leave an aggregator it did not start running"
    finally:
        if runner is not None:
            await asyncio.to_thread(runner.shutdown)
        agg.send_signal(signal.SIGTERM)
        agg.wait(30)
        log.close()


def test_aggregator_url_needs_its_key_token_and_broker(tmp_path: Path) -> None:
    from simulators.errors import FleetError

    runner = FleetRunner(FleetOptions(aggregator="http://127.0.0.1:1", workdir=tmp_path))
    with pytest.raises(FleetError, match="--admin-token and --aggregator-key"):
        runner.prepare()
    runner = FleetRunner(
        FleetOptions(aggregator="http://127.0.0.1:1", admin_token="t", aggregator_key="ab" * 32,
                     workdir=tmp_path)
    )  # fmt: skip
    with pytest.raises(FleetError, match="--broker HOST:PORT"):
        runner.prepare()
