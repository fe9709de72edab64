"""The fleet runner: a broker, the aggregator, simulator processes and agent processes, on one
simulated clock, started in order, watched, injected into, and stopped leaving nothing behind.

The simulators never import the agent or the aggregator: they run as child processes through
their own CLIs (`sitewatt-aggregator serve`, `sitewatt-agent fleet-host`), configured by files
this module writes into the run's work directory:

    WORKDIR/
      fleet.json              the plan, the children's pids and every port (tests read it)
      aggregator/             aggregator.toml, its key, database, policies, sites.json
      agents/<site>/          site.toml, site.key, agent.db;  agents/shard-K.txt lists configs
      sims/shard-K.json       a simulator process's sites;  *.status.json: processes' status
      broker/  logs/

`FleetRunner.prepare()` writes everything and enrols the sites (one bulk import), `start()`
brings the processes up, `watch()` reports figures and carries out the scheduled injections
until told to stop (or the simulated duration is over), `shutdown()` ends every child: agents
first (they publish their offline state), then the simulators, the aggregator, the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from protocols.clock import SimClock, local_time, parse_time
from protocols.keys import generate_key, public_key_hex, save_private_key
from simulators.broker import Broker, mosquitto_available
from simulators.control import request
from simulators.errors import ControlError, FleetError
from simulators.fleet_figures import CpuSampler, FleetFigures, add_alarms, add_sites, metric_value
from simulators.fleet_plan import (
    DEFAULT_POLICY,
    REPO,
    FleetPlan,
    agent_config,
    aggregator_config,
    enrol_rows,
    plan_fleet,
    policy_layers,
    sim_manifest,
)
from simulators.fleet_ports import PortPool, pick_http_port
from simulators.fleet_run import (
    Action,
    BrokerAction,
    FaultAction,
    FleetRun,
    Inject,
    MainsAction,
    load_run,
    schedule,
)
from simulators.procs import Children
from simulators.toml_out import dumps

log = logging.getLogger(__name__)

DEFAULT_SCENARIO = REPO / "config" / "scenarios" / "fleet-20.toml"
DEFAULT_HTTP_PORT = 8080
STOP_ORDER = ("agents", "sims", "aggregator")


@dataclass(frozen=True)
class FleetOptions:
    """What `sitewatt-sim fleet` (and `demo`, `scenario`) was asked for."""

    scenario: Path = DEFAULT_SCENARIO
    sites: int | None = None
    speed: float | None = None
    start: str | None = None
    duration_h: float | None = None
    broker: str = "auto"  # auto | mosquitto | embedded | HOST:PORT
    aggregator: str = "start"  # start (our own) | the URL of a running aggregator
    admin_token: str | None = None  # with an aggregator URL: to enrol sites and make tokens
    aggregator_key: str | None = None  # with an aggregator URL: its public key (hex or file)
    workdir: Path | None = None
    http_port: int = DEFAULT_HTTP_PORT  # 0: a free port
    control: bool | None = None  # None: the run file's [run] control
    poll_s: float | None = None
    injects: tuple[Inject, ...] = ()
    # Where the agents' SQLite files go. None: a fresh directory on tmpfs (/dev/shm) when there
    # is one, removed at the end — a simulated gateway's flash need not be real, and an fsync per
    # command outcome on a real disk stalls a process of hundreds of agents; else WORKDIR/agents.
    agent_db_dir: Path | None = None
    sites_per_agent_process: int = 250
    sites_per_sim_process: int = 500
    log_level: str = "warning"


def console_script(name: str) -> str:
    """A console script of this installation (next to the running Python), else on PATH."""
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    found = shutil.which(name)
    if found is None:
        raise FleetError(f"{name} not found next to {sys.executable} or on PATH")
    return found


def startup_estimate_s(sites: int) -> float:
    """Wall seconds a fleet of this size takes to come up on a small machine (measured: 20
    sites about 7 s, 1,000 sites about 70 s)."""
    return 6.0 + 0.06 * sites


class FleetRunner:
    def __init__(self, options: FleetOptions) -> None:
        self.options = options
        self.run: FleetRun = load_run(options.scenario)
        self.own_workdir = options.workdir is None
        self.workdir = (
            Path(tempfile.mkdtemp(prefix="sitewatt-fleet-"))
            if options.workdir is None
            else options.workdir.resolve()
        )
        self.children = Children(self.workdir / "logs")
        self.broker: Broker | None = None
        self.broker_addr: tuple[str, int] = ("127.0.0.1", 0)
        self.broker_kind = "external"
        self.broker_pids: list[int] = []  # every broker process we started (restarts too)
        self.http_port = 0
        self.tokens: dict[str, str] = {}
        self.plan: FleetPlan | None = None
        self.clock: SimClock | None = None
        self.actions: list[Action] = []
        self.done_actions = 0
        self.events: list[str] = []
        self.timings: dict[str, float] = {}
        self.control_ports: dict[int, int] = {}
        self.ports = PortPool()
        self.agent_db_dir: Path | None = None
        self._own_db_dir = False
        self._cpu = CpuSampler()
        self._stored_prev: tuple[float, float] | None = None
        self._t_started = time.monotonic()

    # -- derived --------------------------------------------------------------------------------

    @property
    def external(self) -> bool:
        """True when pointed at a running aggregator instead of starting one."""
        return self.options.aggregator != "start"

    @property
    def url(self) -> str:
        if self.external:
            return self.options.aggregator.rstrip("/")
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dashboard_url(self) -> str:
        return f"{self.url}/ui"

    @property
    def control(self) -> bool:
        return self.run.run.control if self.options.control is None else self.options.control

    @property
    def duration_s(self) -> float | None:
        h = self.options.duration_h
        if h is None:
            h = self.run.run.duration_h
        return None if h is None else h * 3600.0

    def _p(self, *parts: str) -> Path:
        return self.workdir.joinpath(*parts)

    # -- prepare --------------------------------------------------------------------------------

    def prepare(self, progress: Callable[[str], None] = lambda _: None) -> None:
        """Plan the fleet, write every file, create keys, enrol the sites, create tokens."""
        o = self.options
        sc = self.run.scenario
        if o.sites is not None:
            sc = sc.model_copy(update={"fleet": sc.fleet.model_copy(update={"sites": o.sites})})
        for sub in ("agents", "aggregator", "sims", "broker", "logs"):
            shutil.rmtree(self._p(sub), ignore_errors=True)
        for sub in ("agents", "aggregator/policies", "sims", "logs"):
            self._p(sub).mkdir(parents=True, exist_ok=True)
        speed = o.speed or sc.sim.speed
        start = parse_time(o.start) if o.start else sc.sim.start_time(time.time())
        if self.external:
            self._check_external()
            # An aggregator we did not start keeps its own (wall) clock: so must the fleet.
            speed, start = 1.0, time.time()
        self._choose_broker()
        if not self.external:
            self.http_port = pick_http_port(o.http_port, self.ports)
        # Simulated time reaches `start` about when the fleet is up, not minutes before.
        anchor = time.time() + startup_estimate_s(sc.fleet.sites)
        self.plan = plan = plan_fleet(
            sc,
            start=start,
            speed=speed,
            anchor=anchor,
            port_for=lambda _g: self.ports.take(),
            cpus=os.cpu_count() or 1,
            poll_s=o.poll_s or self.run.run.poll_s,
            sites_per_agent_process=o.sites_per_agent_process,
            sites_per_sim_process=o.sites_per_sim_process,
        )
        self.clock = SimClock(start=start, speed=speed, anchor=anchor)
        self.actions = schedule((*self.run.injects, *o.injects), plan.regions(), start=plan.start)
        t = time.monotonic()
        progress(f"keys for {len(plan.sites)} sites")
        pub_file = self._p("aggregator", "aggregator.pub")
        if self.external:
            pub_file.write_text(self._external_key() + "\n")
        else:
            agg_key = generate_key()
            save_private_key(agg_key, self._p("aggregator", "aggregator.key"))
            pub_file.write_text(public_key_hex(agg_key) + "\n")
        self._choose_db_dir()
        public: dict[str, str] = {}
        shards: dict[int, list[str]] = {}
        for ps in plan.sites:
            folder = self._p("agents", ps.id)
            folder.mkdir(parents=True)
            key = generate_key()
            save_private_key(key, folder / "site.key")
            public[ps.id] = public_key_hex(key)
            cfg = agent_config(
                plan,
                ps,
                folder=folder,
                broker=self.broker_addr,
                aggregator_pub=pub_file,
                db_dir=self.agent_db_dir,
            )
            (folder / "site.toml").write_text(dumps(cfg))
            shards.setdefault(ps.agent_shard, []).append(str(folder / "site.toml"))
        for k, paths in shards.items():
            self._p("agents", f"shard-{k}.txt").write_text("\n".join(paths) + "\n")
        for k in range(plan.sim_shards):
            manifest = sim_manifest(plan, k, faults=sc.faults)
            self._p("sims", f"shard-{k}.json").write_text(json.dumps(manifest))
        self.timings["files_s"] = time.monotonic() - t

        if self.external:
            rows = enrol_rows(plan, public)
            progress(f"enrolling {len(rows)} sites at {self.url}")
            t = time.monotonic()
            self._enrol_by_api(rows)
            self.timings["enrol_s"] = time.monotonic() - t
            self._write_state()
            return
        agg = aggregator_config(
            plan,
            workdir=self.workdir,
            broker=self.broker_addr,
            http_port=self.http_port,
            control=self.control,
        )
        self._p("aggregator", "aggregator.toml").write_text(dumps(agg))
        if DEFAULT_POLICY.exists():
            shutil.copy(DEFAULT_POLICY, self._p("aggregator", "policies", DEFAULT_POLICY.name))
        for name, layer in policy_layers(plan).items():
            self._p("aggregator", "policies", name).write_text(dumps(layer))
        rows = enrol_rows(plan, public)
        self._p("aggregator", "sites.json").write_text(json.dumps(rows, indent=1))
        progress(f"enrolling {len(rows)} sites")
        t = time.monotonic()
        self._aggregator_cli("sites", "import", str(self._p("aggregator", "sites.json")))
        self.timings["enrol_s"] = time.monotonic() - t
        for role in ("operator", "viewer"):
            self.tokens[role] = self._aggregator_cli(
                "tokens", "create", "--role", role, "--name", f"fleet-{role}"
            ).strip()
        self._write_state()

    def _check_external(self) -> None:
        o = self.options
        if not o.aggregator.startswith(("http://", "https://")):
            raise FleetError(f"--aggregator {o.aggregator!r}: 'start' or an http(s):// URL")
        missing = [
            flag
            for flag, value in (
                ("--admin-token", o.admin_token),
                ("--aggregator-key", o.aggregator_key),
            )
            if not value
        ]
        if missing:
            raise FleetError(f"--aggregator URL needs {' and '.join(missing)}")
        if o.broker in ("auto", "mosquitto", "embedded"):
            raise FleetError("--aggregator URL needs --broker HOST:PORT (the aggregator's broker)")
        if (o.speed or 1.0) != 1.0 or o.start:
            raise FleetError(
                "--aggregator URL: a running aggregator keeps its own clock; run at speed 1 "
                "(or start the aggregator with the fleet's [clock] and use --aggregator start)"
            )

    def _external_key(self) -> str:
        value = (self.options.aggregator_key or "").strip()
        text = Path(value).read_text() if Path(value).is_file() else value
        found = re.search(r"\b[0-9a-fA-F]{64}\b", text)
        if found is None:
            raise FleetError("--aggregator-key: no 64-hex-digit public key in it")
        return found.group(0).lower()

    def _enrol_by_api(self, rows: Sequence[Mapping[str, str]]) -> None:
        auth = {"Authorization": f"Bearer {self.options.admin_token}"}
        with httpx.Client(base_url=self.url, headers=auth, timeout=30.0) as client:
            try:
                for row in rows:
                    r = client.post("/api/sites", json=dict(row))
                    if r.status_code != 201:
                        raise FleetError(f"enrolling {row['site']}: {r.status_code} {r.text}")
                for role in ("operator", "viewer"):
                    r = client.post("/api/tokens", json={"role": role, "name": f"fleet-{role}"})
                    if r.status_code != 201:
                        raise FleetError(f"creating a {role} token: {r.status_code} {r.text}")
                    self.tokens[role] = r.json()["token"]
            except httpx.HTTPError as exc:
                raise FleetError(f"aggregator {self.url}: {exc}") from exc

    def _choose_db_dir(self) -> None:
        if self.options.agent_db_dir is not None:
            self.agent_db_dir = self.options.agent_db_dir.resolve()
            self.agent_db_dir.mkdir(parents=True, exist_ok=True)
            return
        shm = Path("/dev/shm")
        if shm.is_dir() and os.access(shm, os.W_OK):
            self.agent_db_dir = Path(tempfile.mkdtemp(prefix="sitewatt-fleet-agents-", dir=shm))
            self._own_db_dir = True

    def _choose_broker(self) -> None:
        wanted = self.options.broker
        if wanted not in ("auto", "mosquitto", "embedded"):
            host, _, port = wanted.rpartition(":")
            try:
                self.broker_addr = (host or "127.0.0.1", int(port))
            except ValueError:
                raise FleetError(
                    f"--broker {wanted!r}: not mosquitto, embedded or HOST:PORT"
                ) from None
            return
        if wanted == "mosquitto" and not mosquitto_available():
            raise FleetError("--broker mosquitto: mosquitto is not installed")
        use_mosquitto = wanted == "mosquitto" or (wanted == "auto" and mosquitto_available())
        self.broker_kind = "mosquitto" if use_mosquitto else "amqtt"
        self.broker = Broker(
            kind=self.broker_kind, workdir=self._p("broker"), die_with_parent=True, autosave_s=60
        )
        self.broker_addr = (self.broker.host, self.broker.port)

    def _aggregator_cli(self, *args: str) -> str:
        cmd = [
            console_script("sitewatt-aggregator"),
            *args,
            "--config",
            str(self._p("aggregator", "aggregator.toml")),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
        if done.returncode != 0:
            raise FleetError(f"{' '.join(args[:2])} failed: {done.stderr.strip() or done.stdout}")
        return done.stdout

    # -- start ----------------------------------------------------------------------------------

    async def start(self, progress: Callable[[str], None] = lambda _: None) -> None:
        self._plan()
        if self.broker is not None:
            progress(f"broker ({self.broker_kind}) on port {self.broker.port}")
            await self._start_broker()
        progress(f"aggregator on {self.url}")
        t = time.monotonic()
        if not self.external:
            self._spawn_aggregator()
        self._write_state()
        await self._until(self._aggregator_up, "the aggregator's API to answer", 60.0)
        self.timings["aggregator_s"] = time.monotonic() - t
        await self._start_sims_and_agents(progress)

    def _spawn_aggregator(self) -> None:
        self.children.spawn(
            "aggregator",
            "aggregator",
            [
                console_script("sitewatt-aggregator"),
                "serve",
                "--config",
                str(self._p("aggregator", "aggregator.toml")),
            ],
        )

    async def _start_sims_and_agents(self, progress: Callable[[str], None]) -> None:
        plan = self._plan()
        progress(f"{plan.sim_shards} simulator process(es) for {len(plan.sites)} sites")
        t = time.monotonic()
        for k in range(plan.sim_shards):
            self.children.spawn(
                f"sims-{k}",
                "sims",
                [
                    console_script("sitewatt-sim"),
                    "fleet-host",
                    "--manifest",
                    str(self._p("sims", f"shard-{k}.json")),
                    "--status-file",
                    str(self._p("sims", f"shard-{k}.status.json")),
                ],
            )
        self._write_state()
        await self._until(self._sims_up, "the simulators to listen", 60.0 + len(plan.sites) / 20)
        self.timings["sims_s"] = time.monotonic() - t
        progress(f"{plan.agent_shards} agent process(es)")
        t = time.monotonic()
        spread = min(10.0, 0.01 * len(plan.sites))
        for k in range(plan.agent_shards):
            self.children.spawn(
                f"agents-{k}",
                "agents",
                [
                    console_script("sitewatt-agent"),
                    "fleet-host",
                    "--config-list",
                    str(self._p("agents", f"shard-{k}.txt")),
                    "--status-file",
                    str(self._p("agents", f"shard-{k}.status.json")),
                    "--start-spread",
                    str(spread),
                    "--log-level",
                    self.options.log_level,
                ],
            )
        self._write_state()
        await self._until(self._agents_up, "the agents to start", 60.0 + len(plan.sites) / 10)
        self.timings["agents_s"] = time.monotonic() - t
        self._write_state()

    def _plan(self) -> FleetPlan:
        if self.plan is None:
            raise FleetError("prepare() first")
        return self.plan

    async def _until(self, cond: Callable[[], bool], what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self._check_children()
            if await asyncio.to_thread(cond):
                return
            if time.monotonic() > deadline:
                raise FleetError(f"timed out after {timeout:.0f} s waiting for {what}")
            await asyncio.sleep(0.2)

    def _aggregator_up(self) -> bool:
        try:
            return httpx.get(f"{self.url}/api/health", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def _status(self, path: Path) -> dict[str, Any] | None:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _sims_up(self) -> bool:
        for k in range(self._plan().sim_shards):
            st = self._status(self._p("sims", f"shard-{k}.status.json"))
            if st is None:
                return False
            self.control_ports[k] = int(st["control_port"])
        return True

    def _agents_up(self) -> bool:
        for k in range(self._plan().agent_shards):
            st = self._status(self._p("agents", f"shard-{k}.status.json"))
            if st is None or st["started"] < st["agents"]:
                return False
        return True

    def _check_children(self) -> None:
        dead = self.children.dead()
        proc = None if self.broker is None else self.broker.proc
        if proc is not None and proc.poll() is not None:
            raise FleetError(f"the broker exited with {proc.returncode}")
        if dead:
            c = dead[0]
            tail = ""
            with contextlib.suppress(OSError):
                tail = c.log.read_text(errors="replace")[-800:]
            raise FleetError(
                f"{c.name} exited with code {c.proc.returncode} (log {c.log}):\n{tail}"
            )

    # -- state file -----------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        plan = self.plan
        pids = self.children.pids()
        for i, pid in enumerate(self.broker_pids):
            pids["broker" if i == len(self.broker_pids) - 1 else f"broker-{i}"] = pid
        return {
            "workdir": str(self.workdir),
            "url": self.url,
            "dashboard": self.dashboard_url,
            "http_port": self.http_port,
            "broker": {
                "kind": self.broker_kind,
                "host": self.broker_addr[0],
                "port": self.broker_addr[1],
            },
            "pids": pids,
            "agent_db_dir": None if self.agent_db_dir is None else str(self.agent_db_dir),
            "modbus_ports": [] if plan is None else plan.ports(),
            "control_ports": sorted(self.control_ports.values()),
            "sites": []
            if plan is None
            else [
                {
                    "site": s.id,
                    "region": s.region,
                    "tariff": s.site.tariff,
                    "chemistry": s.site.spec.battery.chemistry.value,
                    "port": s.port,
                }
                for s in plan.sites
            ],
            "clock": None if plan is None else plan.clock_section(),
            "speed": None if plan is None else plan.speed,
            "timings": self.timings,
        }

    def _write_state(self) -> None:
        path = self._p("fleet.json")
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state(), indent=1))
        tmp.replace(path)

    # -- watching -------------------------------------------------------------------------------

    async def figures(self, client: httpx.AsyncClient) -> FleetFigures:
        """One look at the fleet through the aggregator's API (viewer token) and /metrics."""
        plan = self._plan()
        assert self.clock is not None
        t_look = time.monotonic()
        f = FleetFigures(sim_time=self.clock.now(), wall_s=t_look - self._t_started)
        f.sites = len(plan.sites)
        f.injections_total = len(self.actions)
        f.injections_done = self.done_actions
        f.last_event = self.events[-1] if self.events else ""
        auth = {"Authorization": f"Bearer {self.tokens['viewer']}"}
        add_sites(f, (await client.get(f"{self.url}/api/sites", headers=auth)).json())
        active: dict[str, str | int] = {"active": "true", "limit": 1000}
        page = (await client.get(f"{self.url}/api/alarms", params=active, headers=auth)).json()
        add_alarms(f, page["alarms"])
        metrics = (await client.get(f"{self.url}/metrics")).text
        stored = metric_value(metrics, "sitewatt_aggregator_readings_stored_total")
        f.readings_stored = int(stored)
        now = time.monotonic()
        if self._stored_prev is not None and now > self._stored_prev[0]:
            f.readings_per_s = (stored - self._stored_prev[1]) / (now - self._stored_prev[0])
        self._stored_prev = (now, stored)
        procs = [(c.role, c.pid) for c in self.children.children]
        if self.broker is not None and self.broker.proc is not None:
            procs.append(("broker", self.broker.proc.pid))
        procs.append(("runner", os.getpid()))
        f.cpu_pct, f.rss_mb = self._cpu.sample(procs)
        f.look_ms = (time.monotonic() - t_look) * 1000
        return f

    async def apply_due(self) -> None:
        """Carry out the injections whose simulated time has come."""
        assert self.clock is not None
        while self.done_actions < len(self.actions):
            action = self.actions[self.done_actions]
            if action.t > self.clock.now():
                return
            self.done_actions += 1
            try:
                await self._apply(action)
            except (ControlError, OSError) as exc:
                self.events.append(f"injection failed: {exc}")
                log.warning("injection failed: %s", exc)

    async def _apply(self, action: Action) -> None:
        plan = self._plan()
        shard_of = {s.id: s.sim_shard for s in plan.sites}
        when = local_time(action.t).strftime("%H:%M")
        if isinstance(action, MainsAction):
            for site in action.sites:
                port = self.control_ports[shard_of[site]]
                await asyncio.to_thread(
                    request,
                    f"127.0.0.1:{port}",
                    {"op": "mains", "site": site, "present": action.present},
                )
            what = "mains off" if action.present is False else "mains back"
            self.events.append(f"{when} {what} at {len(action.sites)} site(s)")
        elif isinstance(action, FaultAction):
            for dev in action.devices:
                port = self.control_ports[shard_of[dev.split("/", 1)[0]]]
                await asyncio.to_thread(
                    request,
                    f"127.0.0.1:{port}",
                    {
                        "op": "fault",
                        "device": dev,
                        "kind": action.fault.value,
                        "for_s": action.duration_s / plan.speed,
                        "latency_ms": action.latency_ms,
                    },
                )
            self.events.append(f"{when} {action.fault.value} on {len(action.devices)} device(s)")
        elif isinstance(action, BrokerAction):
            await self.restart_broker(action.down_s)
            self.events.append(f"{when} broker restarted ({action.down_s:g} s down)")

    async def restart_broker(self, down_s: float) -> None:
        if self.broker is None:
            raise ControlError("the broker is external: it cannot be restarted from here")
        await asyncio.to_thread(self.broker.stop)
        await asyncio.sleep(down_s)
        await self._start_broker()

    async def _start_broker(self) -> None:
        assert self.broker is not None
        try:
            await asyncio.to_thread(self.broker.start, 20.0)
        finally:
            if self.broker.proc is not None:
                self.broker_pids.append(self.broker.proc.pid)
            self._write_state()

    async def watch(
        self,
        stop: asyncio.Event,
        on_figures: Callable[[FleetFigures], None] = lambda _: None,
        *,
        every_s: float = 2.0,
    ) -> FleetFigures:
        """Report figures and apply injections until `stop`, the duration's end, or a failure
        (a child that died: FleetError)."""
        assert self.clock is not None
        plan = self._plan()
        end = None if self.duration_s is None else plan.start + self.duration_s
        done = asyncio.Event()
        guard = asyncio.create_task(self._guard(stop, done, end), name="fleet-guard")
        last = FleetFigures()
        try:
            async with httpx.AsyncClient(timeout=30.0) as client:
                while not done.is_set():
                    t = time.monotonic()
                    try:
                        last = await self.figures(client)
                    except (httpx.HTTPError, ValueError, KeyError) as exc:
                        log.warning("figures: %r", exc)
                    on_figures(last)
                    # The fleet list costs the aggregator a query per site: look less often at
                    # large fleets, and never spend more than a third of the time looking.
                    pause = max(every_s, len(plan.sites) / 100, 3 * (time.monotonic() - t))
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(done.wait(), pause)
        finally:
            guard.cancel()
            await asyncio.gather(guard, return_exceptions=True)
        failure = None if guard.cancelled() else guard.exception()
        if failure is not None:
            raise failure
        return last

    async def _guard(self, stop: asyncio.Event, done: asyncio.Event, end: float | None) -> None:
        """Every quarter second: children alive, injections due, the end reached or asked for."""
        assert self.clock is not None
        try:
            while not stop.is_set():
                self._check_children()
                await self.apply_due()
                if end is not None and self.clock.now() >= end:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.25)
        finally:
            done.set()

    # -- stopping -------------------------------------------------------------------------------

    def shutdown(self, *, timeout: float = 30.0) -> None:
        """End every child we started, in order; the broker last. Idempotent."""
        self.children.stop_all(STOP_ORDER, timeout=timeout)
        if self.broker is not None:
            self.broker.stop()
        if self._own_db_dir and self.agent_db_dir is not None:
            shutil.rmtree(self.agent_db_dir, ignore_errors=True)  # tmpfs: memory, not disk
        self._write_state()


def default_demo_start(scenario: Path = DEFAULT_SCENARIO) -> str:
    """07:30 local time on the scenario's first day: the morning peak starts half an hour in."""
    run = load_run(scenario)
    t0 = run.scenario.sim.start_time(time.time())
    d = local_time(t0, run.scenario.fleet.tz).replace(hour=7, minute=30, second=0, microsecond=0)
    return d.isoformat()


__all__ = [
    "DEFAULT_HTTP_PORT",
    "DEFAULT_SCENARIO",
    "FleetFigures",
    "FleetOptions",
    "FleetRunner",
    "console_script",
    "default_demo_start",
    "startup_estimate_s",
]
