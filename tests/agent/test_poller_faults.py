"""Fault injection from the simulators: a device that times out, answers exceptions or drops
the connection is reported comm-error and backed off while the others keep their poll rate; it
recovers (reconnecting to the same port) when the fault ends."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.poller import Poller, load_device_profiles
from protocols.clock import SystemClock
from protocols.types import Quality
from simulators.host import SimHost
from simulators.launch import build_site_host
from simulators.scenario import load_site_scenario
from tests.agent.devices_support import Collector, site_config, wait_for
from tests.conftest import REPO

INTERVAL = 0.2
KINDS = ("rectifier", "battery", "aircon", "breaker", "meter")


@pytest.fixture
async def sim() -> AsyncIterator[SimHost]:
    host = build_site_host(load_site_scenario(REPO / "config" / "sim-site.toml"), port_base=0)
    await host.start()
    try:
        yield host
    finally:
        await host.stop()


def make_poller(tmp_path: Path, sim: SimHost, sink: Collector) -> Poller:
    devices = {}
    for kind in KINDS:
        ep = sim.endpoint(kind)
        devices[kind] = {
            "kind": kind,
            "profile": ep.device.profile.name,
            "host": ep.host,
            "port": ep.port,
            "unit_id": ep.unit,
            "poll_interval_s": INTERVAL,
            "timeout_s": 0.2,
            "retries": 0,
        }
    cfg = site_config(
        tmp_path, devices, extra={"polling": {"backoff_max_s": 1.0}, "interlocks": {}}
    )
    return Poller(cfg, load_device_profiles(cfg), sink, SystemClock())


def rate_ok(poller: Poller, device: str) -> None:
    """The device's recent polls came at its interval (not stalled behind a faulty one)."""
    times = poller.devices[device].poll_times[-8:]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps and max(gaps) < INTERVAL * 2.5, (device, gaps)


@pytest.mark.parametrize("fault", ["timeout", "exception", "disconnect"])
async def test_faulty_device_does_not_stall_the_others(
    tmp_path: Path, sim: SimHost, fault: str
) -> None:
    sink = Collector()
    poller = make_poller(tmp_path, sim, sink)
    bat = poller.devices["battery"]
    async with poller:
        await wait_for(lambda: bat.reads_ok >= 3, timeout=10)
        sim.inject("battery", fault, for_s=2.0)
        failed_before = bat.failures
        await wait_for(
            lambda: (
                (r := poller.latest.get("battery", "soc")) is not None
                and r.quality is Quality.COMM_ERROR
            ),
            timeout=10,
        )
        polls_at_fault = {k: d.polls for k, d in poller.devices.items()}
        await wait_for(lambda: poller.devices["meter"].polls >= polls_at_fault["meter"] + 6, 10)
        for other in ("rectifier", "aircon", "breaker", "meter"):
            rate_ok(poller, other)
            assert poller.devices[other].failures == 0, other
        soc = poller.latest.get("battery", "soc")
        assert soc is not None and soc.value is None  # never the last value passed off as fresh
        if fault == "exception":
            # It answers (with exceptions): polled at its rate, not backed off.
            assert "(code 4)" in (bat.last_error or "")
        else:
            assert bat.failures > failed_before and bat.schedule.failures >= 1
            assert bat.polls - polls_at_fault["battery"] < 6  # backed off
        # The fault ends by itself: the battery comes back (same port, reconnected).
        await wait_for(
            lambda: (
                (r := poller.latest.get("battery", "soc")) is not None and r.quality is Quality.GOOD
            ),
            timeout=10,
        )
    comm = [r for r in sink.of("battery", "soc") if r.quality is Quality.COMM_ERROR]
    assert comm and all(r.value is None for r in comm)
