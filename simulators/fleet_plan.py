"""The plan of a fleet run: which site lives where, and every config file its processes read.

Pure data: a `FleetPlan` built from a fleet scenario (sites, regions, shards of simulator and
agent processes, ports, the shared clock), and functions that turn it into the agents' site
configs, the aggregator's config, its control policy layers, the enrolment rows and the
simulator processes' manifests. The fleet runner (`simulators.fleet`) writes them to disk and
starts the processes; nothing here touches a file or a socket.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocols.types import DeviceKind
from simulators.scenario import FleetScenario, FleetSite
from simulators.spec import Chemistry

REPO = Path(__file__).resolve().parent.parent
PROFILES_DIR = REPO / "config" / "profiles"
TARIFFS_DIR = REPO / "config" / "tariffs"
DEFAULT_POLICY = REPO / "config" / "policies" / "00-default.toml"

SITES_PER_AGENT_PROCESS = 250
SITES_PER_SIM_PROCESS = 500
CRITICAL_CHANNELS = (1, 2, 3, 7)  # transmission, bbu, anchor layer, gateway (default channels)
COVERAGE_CHANNELS = (3,)
CAPACITY_CHANNELS = (4, 5)
NOMINAL_V = {Chemistry.LFP: 51.2, Chemistry.LEAD_ACID: 48.0}


@dataclass(frozen=True)
class PlannedSite:
    site: FleetSite
    region: str
    group: int  # port group: the sites sharing one Modbus server
    port: int
    sim_shard: int
    agent_shard: int

    @property
    def id(self) -> str:
        return self.site.spec.id


@dataclass(frozen=True)
class FleetPlan:
    start: float
    speed: float
    anchor: float
    sites: tuple[PlannedSite, ...]
    sim_shards: int
    agent_shards: int
    poll_s: float
    host: str = "127.0.0.1"
    step_s: float = 30.0
    tick_s: float = 0.5

    def clock_section(self) -> dict[str, Any]:
        return {"start": self.start, "speed": self.speed, "anchor": self.anchor}

    def sites_of_shard(self, *, sim: int | None = None, agent: int | None = None) -> list[str]:
        return [
            s.id
            for s in self.sites
            if (sim is None or s.sim_shard == sim) and (agent is None or s.agent_shard == agent)
        ]

    def regions(self) -> list[tuple[str, str]]:
        return [(s.id, s.region) for s in self.sites]

    def ports(self) -> list[int]:
        return sorted({s.port for s in self.sites})


def default_poll_s(speed: float, *, sites: int = 1, cpus: int = 2) -> float:
    """Simulated seconds between an agent's polls of a device.

    About once a wall second, never more often than every 5 simulated seconds (at high speed a
    faster poll measures the simulators' CPU, not the sites), at most every 2 simulated minutes
    (the control loop and the silence alarm want fresh readings) — unless the whole fleet's
    polls would exceed what the machine's cores sustain (`POLLS_PER_CORE`, agent and simulator
    side together): then less often, so that a big fast fleet keeps up with its clock instead of
    falling behind it.
    """
    base = min(MAX_AGE_S, max(5.0, round(speed * 1.0, 1)))
    needed = sites * DEVICES_PER_SITE * speed / (POLLS_PER_CORE * max(1, cpus))
    return max(base, round(needed, 1))


POLLS_PER_CORE = 400.0
"""Device polls per wall second one core sustains, agent and simulator side together (a device
poll costs about 1.8 ms of CPU in all: measured with 100 sites at 160x, docs/benchmarks.md)."""
DEVICES_PER_SITE = 5
MAX_AGE_S = 120.0
"""Longest simulated delay the fleet allows between a reading and its batch being sent."""


def heartbeat_s(poll_s: float) -> float:
    """Simulated seconds after which a device's unchanged points are sent anyway (every third
    poll, at least every 5 minutes): the aggregator's silence alarm waits for it."""
    return max(300.0, 3.0 * poll_s)


def command_expires_s(speed: float) -> float:
    """Simulated seconds a fleet's command stays valid: 10 wall seconds, at least a minute."""
    return min(3600.0, max(60.0, 10.0 * speed))


def shard_count(n: int, per_process: int, cpus: int, *, cap_factor: int = 2) -> int:
    return max(1, min(math.ceil(n / per_process), max(1, cpus) * cap_factor))


def plan_fleet(
    scenario: FleetScenario,
    *,
    start: float,
    speed: float,
    anchor: float,
    port_for: Callable[[int], int],
    cpus: int,
    poll_s: float | None = None,
    sites_per_agent_process: int = SITES_PER_AGENT_PROCESS,
    sites_per_sim_process: int = SITES_PER_SIM_PROCESS,
) -> FleetPlan:
    """Lay the scenario's sites out over processes; `port_for(group)` gives each port group
    (`fleet.sites_per_port` sites on one Modbus server) its port."""
    sites = scenario.build_sites(start, port_base=0)
    n = len(sites)
    per_port = scenario.fleet.sites_per_port
    groups = math.ceil(n / per_port)
    sim_shards = min(shard_count(n, sites_per_sim_process, cpus, cap_factor=1), groups)
    agent_shards = shard_count(n, sites_per_agent_process, cpus)
    ports = {g: port_for(g) for g in range(groups)}
    planned = []
    for i, fs in enumerate(sites):
        g = i // per_port
        planned.append(
            PlannedSite(
                site=fs,
                region=fs.climate,
                group=g,
                port=ports[g],
                sim_shard=g * sim_shards // groups,
                agent_shard=i * agent_shards // n,
            )
        )
    return FleetPlan(
        start=start,
        speed=speed,
        anchor=anchor,
        sites=tuple(planned),
        sim_shards=sim_shards,
        agent_shards=agent_shards,
        poll_s=poll_s or default_poll_s(speed, sites=n, cpus=cpus),
        host=scenario.sim.host,
        step_s=scenario.sim.step_s,
        tick_s=scenario.sim.tick_s,
    )


# -- agents -------------------------------------------------------------------------------------


def agent_config(
    plan: FleetPlan,
    ps: PlannedSite,
    *,
    folder: Path,
    broker: tuple[str, int],
    aggregator_pub: Path,
    db_dir: Path | None = None,
) -> dict[str, Any]:
    """The site config (as `agent.config` reads it) of one simulated site's agent; its
    database in `db_dir/<site>.db` if given, else in its folder."""
    spec = ps.site.spec
    poll = plan.poll_s
    wall = plan.speed  # simulated seconds per wall second
    devices: dict[str, Any] = {}
    for kind, unit in ps.site.units.items():
        devices[kind.value] = {
            "kind": kind.value,
            "profile": ps.site.profiles[kind],
            "host": plan.host,
            "port": ps.port,
            "unit_id": unit,
            "poll_interval_s": poll * (2.0 if kind is DeviceKind.AIRCON else 1.0),
            "timeout_s": 2.0,
            "retries": 1,
            "max_interval_s": heartbeat_s(poll),
        }
    capacity_wh = spec.battery.capacity_ah * NOMINAL_V[spec.battery.chemistry]
    return {
        "profiles_dir": str(PROFILES_DIR),
        "site": {
            "id": spec.id,
            "timezone": spec.tz,
            "key_file": str(folder / "site.key"),
            "aggregator_key_files": [str(aggregator_pub)],
        },
        "broker": {"host": broker[0], "port": broker[1], "keepalive_s": 30},
        "outbox": {
            "path": str(folder / "agent.db" if db_dir is None else db_dir / f"{spec.id}.db"),
            # Time in the outbox is simulated: batches about every 2 wall seconds, but never
            # older than 2 simulated minutes; receipts may take 20 wall seconds.
            "batch_max_age_s": min(MAX_AGE_S, max(5.0, 2.0 * wall)),
            "receipt_timeout_s": max(60.0, 20.0 * wall),
        },
        "polling": {"backoff_max_s": max(300.0, poll * 10)},
        "gateway": {"enabled": False},
        "interlocks": {
            "battery_capacity_wh": capacity_wh,
            "critical_channels": {"breaker": list(CRITICAL_CHANNELS)},
            "coverage_channels": {"breaker": list(COVERAGE_CHANNELS)},
            "capacity_channels": {"breaker": list(CAPACITY_CHANNELS)},
        },
        "clock": plan.clock_section(),
        "devices": devices,
    }


# -- the aggregator -----------------------------------------------------------------------------


def aggregator_config(
    plan: FleetPlan,
    *,
    workdir: Path,
    broker: tuple[str, int],
    http_port: int,
    control: bool,
) -> dict[str, Any]:
    return {
        "log_level": "warning",
        "broker": {"host": broker[0], "port": broker[1], "client_id": "sitewatt-aggregator-fleet"},
        "database": {"path": str(workdir / "aggregator" / "aggregator.db")},
        "keys": {"key_file": str(workdir / "aggregator" / "aggregator.key")},
        "http": {"host": "127.0.0.1", "port": http_port},
        # A command is valid for 10 wall seconds (the default 60 simulated seconds are 0.4 wall
        # seconds at 144x: agents refused most of the loop's commands as expired).
        "commands": {"expires_s": command_expires_s(plan.speed)},
        "control": {
            "enabled": control,
            # The loop's times are simulated: keep rounds, acks and leases sane in wall time.
            # Rounds about every half wall second, but no more often than data comes in: a
            # big fleet polled every 15 simulated minutes is planned every 5.
            "interval_s": min(300.0, max(60.0, plan.speed / 2, plan.poll_s / 3)),
            # An unacknowledged command is a failure once it has expired, not before.
            "ack_timeout_s": command_expires_s(plan.speed),
            # Leases of 2 wall minutes, renewed every minute: a lease is a safety net, not a
            # heartbeat, and each renewal is a whole command (writes and read-backs).
            "lease_s": int(max(600.0, 120.0 * plan.speed)),
            # Readings a few wall seconds old are fresh in a sped-up fleet on a busy machine.
            "stale_s": max(300.0, 5.0 * plan.speed, 1.5 * plan.poll_s + MAX_AGE_S),
            "tariffs_dir": str(TARIFFS_DIR),
            "policies_dir": str(workdir / "aggregator" / "policies"),
        },
        # A site is offline only once its heartbeat (report by exception sends unchanged points
        # that often: at least 300 s and three polls, so two missed polls are covered) is a poll,
        # a batch age and 15 wall seconds late: at 160x the default 300 simulated seconds are
        # under 2 wall seconds, less than a busy loop's lag, and a quiet site of a big fleet was
        # called offline between two heartbeats.
        "alarms": {
            "silence_s": heartbeat_s(plan.poll_s) + plan.poll_s + MAX_AGE_S + 15.0 * plan.speed
        },
        "clock": plan.clock_section(),
    }


def policy_layers(plan: FleetPlan) -> dict[str, dict[str, Any]]:
    """Policy layers beyond the shipped default: lead-acid sites as a named group, so the
    economics see their chemistry (their batteries are usually left alone)."""
    lead = [s.id for s in plan.sites if s.site.spec.battery.chemistry is Chemistry.LEAD_ACID]
    return {
        "20-group-lead-acid.toml": {
            "scope": {"kind": "group", "name": "lead-acid", "sites": lead},
            "battery": {"chemistry": "lead_acid", "nominal_v": NOMINAL_V[Chemistry.LEAD_ACID]},
        }
    }


def enrol_rows(plan: FleetPlan, public_keys: Mapping[str, str]) -> list[dict[str, str]]:
    """Rows for `sitewatt-aggregator sites import` (JSON)."""
    return [
        {
            "site": s.id,
            "public_key": public_keys[s.id],
            "name": f"{s.region} {s.id}",
            "region": s.region,
            "tz": s.site.spec.tz,
            "tariff": s.site.tariff,
        }
        for s in plan.sites
    ]


# -- simulator processes ------------------------------------------------------------------------


def sim_manifest(plan: FleetPlan, shard: int, *, faults: Sequence[Any] = ()) -> dict[str, Any]:
    """What a simulator process (`sitewatt-sim fleet-host`) needs: its sites and the clock."""
    return {
        "clock": plan.clock_section(),
        "host": plan.host,
        "step_s": plan.step_s,
        # Polled sites advance on every request; the ticker only keeps idle ones moving.
        "tick_s": max(plan.tick_s, 2.0),
        # Requests this close (simulated seconds) share one physics step: the five devices of
        # a site polled in one cycle see one instant, and the physics runs once, not five times.
        "min_sync_s": max(0.2, min(plan.step_s / 3.0, 0.05 * plan.speed)),
        "sites": [
            {"site": s.site.model_dump(mode="json"), "port": s.port}
            for s in plan.sites
            if s.sim_shard == shard
        ],
        "faults": [f.model_dump(mode="json") for f in faults],
    }


__all__ = [
    "PROFILES_DIR",
    "TARIFFS_DIR",
    "FleetPlan",
    "PlannedSite",
    "agent_config",
    "aggregator_config",
    "command_expires_s",
    "default_poll_s",
    "enrol_rows",
    "heartbeat_s",
    "plan_fleet",
    "policy_layers",
    "shard_count",
    "sim_manifest",
]
