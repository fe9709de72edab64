"""The fleet plan, its config files and the injection schedule: pure, no processes."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from agent.config import parse_config
from aggregator.config import config_from_dict
from aggregator.control.settings import ControlSettings
from protocols.clock import SimClock, parse_time
from protocols.types import DeviceKind
from simulators.errors import ScenarioError
from simulators.fleet import DEFAULT_SCENARIO
from simulators.fleet_plan import (
    FleetPlan,
    agent_config,
    aggregator_config,
    default_poll_s,
    enrol_rows,
    plan_fleet,
    policy_layers,
    sim_manifest,
)
from simulators.fleet_run import (
    BrokerAction,
    FaultAction,
    MainsAction,
    OutageInject,
    load_run,
    parse_inject_option,
    parse_run,
    schedule,
    targets,
)
from simulators.modbus.faults import FaultKind
from simulators.toml_out import dumps

START = parse_time("2025-07-01T00:00:00+08:00")


def _plan(n: int = 45, cpus: int = 2) -> FleetPlan:
    run = load_run(DEFAULT_SCENARIO)
    sc = run.scenario.model_copy(
        update={"fleet": run.scenario.fleet.model_copy(update={"sites": n})}
    )
    ports = iter(range(20000, 21000))
    return plan_fleet(
        sc, start=START, speed=60.0, anchor=1000.0, port_for=lambda _g: next(ports), cpus=cpus
    )


def test_plan_spreads_sites_over_ports_and_processes() -> None:
    plan = _plan(45)
    assert len(plan.sites) == 45
    assert len({s.id for s in plan.sites}) == 45
    # 10 sites per port in the template: 5 ports, each site's five devices on distinct unit ids
    assert plan.ports() == [20000, 20001, 20002, 20003, 20004]
    for s in plan.sites:
        assert len(set(s.site.units.values())) == 5
    by_port: dict[int, set[int]] = {}
    for s in plan.sites:
        units = set(s.site.units.values())
        assert not (by_port.get(s.port, set()) & units), "two sites share a unit id on a port"
        by_port.setdefault(s.port, set()).update(units)
    assert plan.sim_shards == 1 and plan.agent_shards == 1
    assert {s.region for s in plan.sites} <= {"sichuan-basin", "mountain", "yangtze-hot"}


def test_large_fleets_get_several_processes_bounded_by_cores() -> None:
    plan = _plan(1000, cpus=2)
    assert plan.agent_shards == 4  # 250 sites per agent process, at most 2 per core
    assert plan.sim_shards == 2
    counts = [len(plan.sites_of_shard(agent=k)) for k in range(plan.agent_shards)]
    assert counts == [250, 250, 250, 250]
    # one port group never straddles two simulator processes
    for port in plan.ports():
        assert len({s.sim_shard for s in plan.sites if s.port == port}) == 1


@pytest.mark.parametrize(
    ("speed", "sites", "cpus", "expected"),
    [
        (1.0, 20, 2, 5.0),  # never faster than every 5 simulated seconds
        (60.0, 20, 2, 60.0),  # about once a wall second
        (600.0, 20, 2, 120.0),  # at most every 2 simulated minutes…
        (160.0, 100, 2, 120.0),
        (144.0, 1000, 2, 900.0),  # …unless the fleet's polls would swamp two cores
        (144.0, 1000, 8, 225.0),
    ],
)
def test_default_poll_interval(speed: float, sites: int, cpus: int, expected: float) -> None:
    assert default_poll_s(speed, sites=sites, cpus=cpus) == pytest.approx(expected)


def test_big_fast_fleet_polls_less_often_and_its_alarms_wait_for_it(tmp_path: Path) -> None:
    run = load_run(DEFAULT_SCENARIO)
    sc = run.scenario.model_copy(
        update={"fleet": run.scenario.fleet.model_copy(update={"sites": 1000})}
    )
    ports = iter(range(20000, 21000))
    plan = plan_fleet(
        sc, start=START, speed=144.0, anchor=0.0, port_for=lambda _g: next(ports), cpus=2
    )
    assert plan.poll_s == 900.0
    cfg = aggregator_config(plan, workdir=tmp_path, broker=("h", 1), http_port=0, control=True)
    assert cfg["control"]["stale_s"] >= plan.poll_s + 120
    assert cfg["alarms"]["silence_s"] >= 2 * plan.poll_s
    # A site whose values do not change still sends its heartbeat before it is called offline.
    site_cfg = agent_config(
        plan, plan.sites[0], folder=tmp_path, broker=("h", 1), aggregator_pub=tmp_path / "k"
    )
    heartbeat = min(d["max_interval_s"] for d in site_cfg["devices"].values())
    assert cfg["alarms"]["silence_s"] > heartbeat + plan.poll_s


def test_agent_config_is_valid_toml_the_agent_accepts(tmp_path: Path) -> None:
    plan = _plan(3)
    ps = plan.sites[0]
    pub = tmp_path / "aggregator.pub"
    pub.write_text("ab" * 32 + "\n")
    text = dumps(agent_config(plan, ps, folder=tmp_path, broker=("127.0.0.1", 1883),
                              aggregator_pub=pub))  # fmt: skip
    cfg = parse_config(tomllib.loads(text), base=tmp_path, source=tmp_path / "site.toml")
    assert cfg.site_id == ps.id
    assert set(cfg.devices) == {"rectifier", "battery", "aircon", "breaker", "meter"}
    assert {d.port for d in cfg.devices.values()} == {ps.port}
    assert cfg.devices["battery"].unit_id == ps.site.units[DeviceKind.BATTERY]
    clock = cfg.clock.build()
    assert isinstance(clock, SimClock)
    assert (clock.start, clock.speed, clock.anchor) == (START, 60.0, 1000.0)
    assert cfg.site.pinned_keys() == ("ab" * 32,)
    assert cfg.devices["meter"].poll_interval_s == plan.poll_s == 60.0


def test_aggregator_config_and_policy_layers_validate(tmp_path: Path) -> None:
    plan = _plan(20)
    agg = config_from_dict(
        tomllib.loads(
            dumps(
                aggregator_config(
                    plan, workdir=tmp_path, broker=("127.0.0.1", 1), http_port=0, control=True
                )
            )
        )
    )
    clock = agg.clock.build()
    assert isinstance(clock, SimClock) and clock.now() == pytest.approx(
        SimClock(START, 60.0, 1000.0).now(), abs=1.0
    )
    assert agg.control.enabled
    # The 300 s heartbeat, a 60 s poll, 120 s batch age and 15 wall seconds of slack at 60x.
    assert agg.alarms.silence_s == 1380.0
    # Commands stay valid 10 wall seconds (60 simulated ones would be 1 s at 60x), and the loop
    # does not call one failed before it has expired.
    assert agg.commands.expires_s == 600.0
    assert ControlSettings.model_validate(agg.control.model_dump()).ack_timeout_s == 600.0
    layer = tomllib.loads(dumps(policy_layers(plan)["20-group-lead-acid.toml"]))
    lead = [s.id for s in plan.sites if s.site.spec.battery.chemistry.value == "lead_acid"]
    assert lead and layer["scope"]["sites"] == lead
    rows = enrol_rows(plan, {s.id: "cd" * 32 for s in plan.sites})
    assert {r["tariff"] for r in rows} == {"sichuan-2023", "shanghai-two-part"}
    assert all(r["region"] for r in rows)
    manifest = sim_manifest(plan, 0)
    assert len(manifest["sites"]) == 20 and manifest["clock"]["speed"] == 60.0


def test_toml_writer_round_trips() -> None:
    data = {
        "a": 1,
        "b": 'x "quoted" ü',
        "c": [1.5, 2.0],
        "t": {"flag": True, "inner": {"k": [1, 2]}, "none": None},
        "arr": [{"n": 1}, {"n": 2}],
        "odd key": 0.1,
    }
    back = tomllib.loads(dumps(data))
    assert back == {**data, "t": {"flag": True, "inner": {"k": [1, 2]}}}


SITES = [("s1", "north"), ("s2", "north"), ("s3", "south"), ("s4", "north"), ("s5", "east")]


@pytest.mark.parametrize(
    ("region", "share", "expected"),
    [
        ("north", 1.0, ("s1", "s2", "s4")),
        ("south", 1.0, ("s3",)),
        ("west", 1.0, ()),
        (None, 1.0, ("s1", "s2", "s3", "s4", "s5")),
    ],
)
def test_targets_by_region(region: str | None, share: float, expected: tuple[str, ...]) -> None:
    assert targets(SITES, region=region, share=share, seed=1) == expected


def test_targets_share_is_deterministic_and_at_least_one() -> None:
    a = targets(SITES, region=None, share=0.4, seed=7)
    assert len(a) == 2 and a == targets(SITES, region=None, share=0.4, seed=7)
    assert len(targets(SITES, region="north", share=0.01, seed=1)) == 1


def test_schedule_orders_actions_and_ends_outages() -> None:
    injects = [
        parse_inject_option("broker_restart:after_h=3,down_s=2"),
        parse_inject_option("outage:region=north,after_h=1,duration_h=0.5"),
        parse_inject_option(
            "device_fault:device=battery,fault=timeout,share=1,after_h=2,duration_h=1"
        ),
    ]
    acts = schedule(injects, SITES, start=START)
    assert [type(a) for a in acts] == [MainsAction, MainsAction, FaultAction, BrokerAction]
    off, back, fault, broker = acts
    assert isinstance(off, MainsAction) and off.present is False and off.t == START + 3600
    assert isinstance(back, MainsAction) and back.present is None and back.t == START + 5400
    assert off.sites == back.sites == ("s1", "s2", "s4")
    assert isinstance(fault, FaultAction) and fault.fault is FaultKind.TIMEOUT
    assert fault.devices == tuple(f"{s}/battery" for s, _ in SITES) and fault.duration_s == 3600
    assert isinstance(broker, BrokerAction) and broker.down_s == 2


def test_run_sections_parse_and_errors_name_the_key() -> None:
    base = tomllib.loads(DEFAULT_SCENARIO.read_text())
    run = parse_run(
        {
            **base,
            "run": {"duration_h": 2, "poll_s": 30},
            "inject": [{"kind": "outage", "region": "mountain", "after_h": 1, "duration_h": 1}],
        }
    )
    assert run.run.duration_h == 2 and run.run.poll_s == 30
    assert isinstance(run.injects[0], OutageInject) and run.injects[0].region == "mountain"
    with pytest.raises(ScenarioError, match=r"inject\[0\].*duration_h"):
        parse_run({**base, "inject": [{"kind": "outage", "after_h": 1}]})
    with pytest.raises(ScenarioError, match=r"run\.speed"):
        parse_run({**base, "run": {"speed": 3}})
    with pytest.raises(ScenarioError, match="not key=value"):
        parse_inject_option("outage:region")
