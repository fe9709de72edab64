"""A simulated site behind a real Modbus TCP server, for agent-devices tests.

Builds the simulators' physics (`SiteRuntime`) and serves each device under its own unit id on
one loopback server, with a fault board for injecting misbehaviour.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.config import SiteConfig
from protocols.clock import Clock
from protocols.keys import generate_key, public_key_hex, save_private_key
from protocols.profiles import load_profile
from protocols.types import DeviceKind
from simulators.broker import Broker
from simulators.host import SimHost
from simulators.modbus.faults import FaultBoard
from simulators.modbus.server import ServedDevice, SimTcpServer, serve_tcp
from simulators.runtime import SiteRuntime
from simulators.spec import SiteSpec
from tests.agent.devices_support import site_config
from tests.conftest import REPO

SITE_TOML = REPO / "config" / "site.toml"

PROFILES = {
    "rectifier": (DeviceKind.RECTIFIER, "rectifier_ampere_apc4812", 1),
    "battery": (DeviceKind.BATTERY, "battery_lianfa_lf48100", 2),
    "aircon": (DeviceKind.AIRCON, "aircon_coolgate_gw1", 3),
    "breaker": (DeviceKind.BREAKER, "breaker_breakwell_sb8", 4),
    "meter": (DeviceKind.METER, "meter_gridline_gm1", 5),
}
CRITICAL = [1, 2, 3, 7]
COVERAGE = [3]
CAPACITY = [4, 5]


@dataclass
class SimSite:
    runtime: SiteRuntime
    server: SimTcpServer
    faults: FaultBoard
    units: dict[str, ServedDevice] = field(default_factory=dict)

    @property
    def port(self) -> int:
        return self.server.port

    def writes(self) -> int:
        return sum(u.writes for u in self.units.values())

    def config(self, tmp_path: Path, *, poll_interval_s: float = 1.0, **extra: Any) -> SiteConfig:
        """An agent config for this site (every device on this server, by unit id)."""
        devices = {
            name: {
                "kind": kind.value,
                "profile": profile,
                "host": "127.0.0.1",
                "port": self.port,
                "unit_id": unit,
                "poll_interval_s": poll_interval_s,
                "max_interval_s": max(300.0, poll_interval_s),
                "timeout_s": 0.5,
            }
            for name, (kind, profile, unit) in PROFILES.items()
        }
        spec = self.runtime.spec
        volts = 48.0
        interlocks = {
            "battery_capacity_wh": spec.battery.capacity_ah * volts,
            "critical_channels": {"breaker": CRITICAL},
            "coverage_channels": {"breaker": COVERAGE},
            "capacity_channels": {"breaker": CAPACITY},
        }
        merged: dict[str, Any] = {"interlocks": interlocks, "gateway": {"enabled": False}}
        for key, value in extra.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
        return site_config(tmp_path, devices, extra=merged)


async def start_sim_site(spec: SiteSpec, clock: Clock) -> SimSite:
    runtime = SiteRuntime(spec, clock)
    units = {
        name: ServedDevice(name, runtime, runtime.model, kind, load_profile(profile))
        for name, (kind, profile, _) in PROFILES.items()
    }
    faults = FaultBoard()
    server = await serve_tcp({PROFILES[name][2]: dev for name, dev in units.items()}, faults=faults)
    return SimSite(runtime, server, faults, units)


def shipped_layout(tmp_path: Path) -> Path:
    """config/site.toml copied into a checkout-like tree (config/ + var/)."""
    (tmp_path / "config").mkdir()
    (tmp_path / "var").mkdir()
    (tmp_path / "config" / "profiles").symlink_to(REPO / "config" / "profiles")
    agg = generate_key()
    (tmp_path / "var" / "aggregator.pub").write_text(f"public key: {public_key_hex(agg)}\n")
    dst = tmp_path / "config" / "site.toml"
    dst.write_text(SITE_TOML.read_text())
    return dst


def site_config_for(
    tmp_path: Path,
    sim: SimHost,
    broker: Broker,
    agg_pub: str,
    *,
    replace: dict[str, str] | None = None,
) -> Path:
    """config/site.toml with the simulator's free ports, the test broker and keys, and any
    further text replacements (faster polls, TLS settings)."""
    path = shipped_layout(tmp_path)
    (tmp_path / "var" / "aggregator.pub").write_text(agg_pub + "\n")
    save_private_key(generate_key(), tmp_path / "var" / "sim-site-1.key")
    text = path.read_text()
    for kind in ("rectifier", "battery", "aircon", "breaker", "meter"):
        ep = sim.endpoint(kind)
        text = re.sub(
            rf"(\[devices\.{kind}\][^\[]*?port = )\d+", rf"\g<1>{ep.port}", text, flags=re.S
        )
    text = text.replace("port = 1883", f"port = {broker.port}")
    for old, new in (replace or {}).items():
        assert old in text, old
        text = text.replace(old, new)
    path.write_text(text)
    return path
