"""A fleet on mosquitto: ten sites online with readings flowing; injections from the scenario file
— a regional outage raises mains-failure alarms on exactly that region's sites, a meter fault on a
share of the sites turns exactly those meters' points comm-error, and after a broker restart
every site is back online with readings flowing; clean shutdown."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from protocols.clock import parse_time
from simulators.fleet import DEFAULT_SCENARIO, FleetOptions, FleetRunner
from simulators.fleet_ports import port_free
from simulators.fleet_run import FaultAction, load_run
from simulators.procs import pid_alive
from tests.conftest import requires_mosquitto

START = "2025-07-01T09:00:00+08:00"
SPEED = 60.0


def scenario_file(tmp_path: Path, region: str | None, fault_region: str = "") -> Path:
    """The shipped fleet template with 10 sites, no random or fleet-wide outages, and (with a
    region) one regional outage 6 simulated minutes in (6 s of wall time at 60x)."""
    text = DEFAULT_SCENARIO.read_text()
    text = text.replace("sites = 20", "sites = 10")
    text = text.replace("random_outages_per_day = 0.1", "random_outages_per_day = 0.0")
    text = text[: text.index("[[events]]")]
    if region is not None:
        text += f'\n[[inject]]\nkind = "outage"\nregion = "{region}"\nafter_h = 0.1\n'
        text += "duration_h = 4.0\n"
        text += (
            '\n[[inject]]\nkind = "device_fault"\ndevice = "meter"\nfault = "timeout"\n'
            f'region = "{fault_region}"\nshare = 0.5\nseed = 2\nafter_h = 0.3\nduration_h = 4.0\n'
            '\n[[inject]]\nkind = "broker_restart"\nafter_h = 0.5\ndown_s = 2.0\n'
        )
    path = tmp_path / "fleet-10.toml"
    path.write_text(text)
    return path


async def until(cond: Callable[[], Awaitable[Any]], what: str, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = await cond()
        except httpx.HTTPError:
            last = None
        if last:
            return last
        await asyncio.sleep(0.3)
    raise AssertionError(f"{what}: not within {timeout} s (last: {last!r})")


@requires_mosquitto
@pytest.mark.timeout(150)
async def test_ten_sites_injections_and_clean_shutdown(tmp_path: Path) -> None:
    # Which region to cut: one the seed gives some but not all of the ten sites.
    run = load_run(scenario_file(tmp_path, None))
    sites = run.scenario.build_sites(parse_time(START), port_base=0)
    regions: dict[str, set[str]] = {}
    for s in sites:
        regions.setdefault(s.climate, set()).add(s.spec.id)
    region, hit = min(regions.items(), key=lambda kv: abs(len(kv[1]) - 3))
    assert 0 < len(hit) < 10
    others = {r: ids for r, ids in regions.items() if r != region}
    fault_region = max(others, key=lambda r: len(others[r]))
    path = scenario_file(tmp_path, region, fault_region)

    runner = FleetRunner(
        FleetOptions(
            scenario=path, speed=SPEED, start=START, broker="mosquitto", http_port=0,
            workdir=tmp_path / "fleet", control=False,
        )
    )  # fmt: skip
    pump: asyncio.Task[None] | None = None

    async def apply_injections() -> None:
        while True:
            await runner.apply_due()
            await asyncio.sleep(0.2)

    try:
        await asyncio.to_thread(runner.prepare)
        faulted = {
            d.split("/")[0] for a in runner.actions if isinstance(a, FaultAction) for d in a.devices
        }
        assert faulted and faulted <= regions[fault_region]
        await runner.start()
        pump = asyncio.create_task(apply_injections())
        assert runner.broker_kind == "mosquitto"
        url = runner.url
        auth = {"Authorization": f"Bearer {runner.tokens['viewer']}"}
        async with httpx.AsyncClient(timeout=10) as client:

            async def online() -> bool:
                got = (await client.get(f"{url}/api/sites", headers=auth)).json()
                return len(got) == 10 and all(s["online"] for s in got)

            await until(online, "all ten sites online", 60)
            f1 = await runner.figures(client)
            await asyncio.sleep(0)

            async def flowing() -> bool:
                f = await runner.figures(client)
                return f.readings_stored > f1.readings_stored

            await until(flowing, "readings flowing", 30)

            async def alarmed(kind: str, want: set[str]) -> set[str] | None:
                page = (
                    await client.get(
                        f"{url}/api/alarms", params={"active": "true", "limit": 1000}, headers=auth
                    )
                ).json()
                found = {a["site"] for a in page["alarms"] if a["kind"] == kind}
                return found if found >= want else None

            found = await until(lambda: alarmed("mains_failure", hit), f"mains alarms {hit}", 60)
            assert found == hit, f"outage in {region}: alarms at {sorted(found)}"

            async def meters_down() -> set[str] | None:
                down = set()
                for site in sorted(regions[fault_region] | hit):
                    detail = (await client.get(f"{url}/api/sites/{site}", headers=auth)).json()
                    meter = next(d for d in detail["devices"] if d["device"] == "meter")
                    if all(p["quality"] == "comm-error" for p in meter["points"]):
                        down.add(site)
                return down if down >= faulted else None

            found = await until(meters_down, f"meters of {sorted(faulted)} comm-error", 60)
            assert found == faulted, f"meter faults at {sorted(faulted)}: comm-error at {found}"
            f = await runner.figures(client)
            assert f.alarms_by_kind.get("mains_failure") == len(hit)

            async def restarted() -> bool:
                return any("broker restarted" in e for e in runner.events)

            await until(restarted, "the broker restart", 60)
            assert len(runner.broker_pids) == 2
            f2 = await runner.figures(client)
            await until(online, "all ten sites online after the broker restart", 60)

            async def flowing_again() -> bool:
                f = await runner.figures(client)
                return f.readings_stored > f2.readings_stored

            await until(flowing_again, "readings flowing after the broker restart", 30)
    finally:
        if pump is not None:
            pump.cancel()
        await asyncio.to_thread(runner.shutdown)
    state = runner.state()
    pids = state["pids"]
    assert {"aggregator", "sims-0", "agents-0", "broker"} <= set(pids)
    assert not [n for n, p in pids.items() if pid_alive(p)]
    ports = [state["http_port"], state["broker"]["port"], *state["modbus_ports"]]
    assert all(port_free(p) for p in ports)
