"""One simulator process of a fleet: its share of the sites behind Modbus servers, on the
fleet's shared clock, with a control endpoint for the fleet runner's injections.

`sitewatt-sim fleet-host --manifest FILE --control-port P` runs it; the manifest (written by the
fleet runner from `fleet_plan.sim_manifest`) lists the sites with their ports and unit ids. The
process writes a JSON status file once its servers listen, and again every few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from protocols.clock import configured_clock
from simulators.control import ControlServer
from simulators.host import Placement, SimHost
from simulators.runtime import MIN_SYNC_S
from simulators.scenario import FaultCfg, FleetSite


def build_host(manifest: Mapping[str, Any]) -> SimHost:
    """A `SimHost` (not started) serving the manifest's sites on their ports and unit ids."""
    c = manifest["clock"]
    clock = configured_clock(c["start"], float(c["speed"]), c.get("anchor"))
    host = SimHost(clock, host=str(manifest.get("host", "127.0.0.1")), tick_s=manifest["tick_s"])
    faults = [FaultCfg.model_validate(f) for f in manifest.get("faults", [])]
    for entry in manifest["sites"]:
        fs = FleetSite.model_validate(entry["site"])
        placements = {
            kind: Placement(profile=fs.profiles[kind], port=int(entry["port"]), unit=unit)
            for kind, unit in fs.units.items()
        }
        rt = host.add_site(
            fs.spec,
            placements,
            max_step_s=float(manifest["step_s"]),
            min_sync_s=float(manifest.get("min_sync_s", MIN_SYNC_S)),
        )
        for f in faults:
            host.faults.add(f"{rt.id}/{f.device}", f.fault(float(c["start"])))
    return host


def _status(host: SimHost, control: ControlServer) -> dict[str, Any]:
    mains_off = sum(1 for rt in host.sites.values() if not rt.model.mains)
    return {
        "pid": os.getpid(),
        "sites": len(host.sites),
        "control_port": control.port,
        "sim_time": host.clock.now(),
        "mains_off": mains_off,
        "wall": time.time(),
    }


def _write(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


async def serve(
    manifest: Mapping[str, Any],
    stop: asyncio.Event,
    *,
    control_port: int = 0,
    status_file: Path | None = None,
    status_every_s: float = 2.0,
) -> None:
    host = build_host(manifest)
    control = ControlServer(host, port=control_port)
    await host.start()
    try:
        await control.start()
        while not stop.is_set():
            if status_file is not None:
                _write(status_file, _status(host, control))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), status_every_s)
    finally:
        await control.stop()
        await host.stop()


__all__ = ["build_host", "serve"]
