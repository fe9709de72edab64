"""Shared helpers for the benchmarks: runs, medians, tables, the JSON line, process sampling.

Every bench script follows one shape: parse `--quick`/`--runs`, measure a few figures several
times, print a rich table (figure, median, target, pass/miss) and end with exactly one line of
JSON, `{"bench": name, ...figures}`, that `make bench`, docs/benchmarks.md and the smoke test read.

`python -m bench.common` prints the machine description used in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console
from rich.table import Table

from protocols.profiles import Profile, load_profile
from protocols.profiles import Table as RegTable
from protocols.types import Quality, Reading, Value
from simulators.broker import Broker, free_port, mosquitto_available

REPO = Path(__file__).resolve().parent.parent
console = Console(stderr=False, highlight=False, width=110)

# The full site of DESIGN.md's targets: one device of each kind, ~150 points with gateway health.
SITE_PROFILES: tuple[tuple[str, str], ...] = (
    ("rectifier", "rectifier_ampere_apc4812"),
    ("battery", "battery_lianfa_lf48100"),
    ("aircon", "aircon_coolgate_gw1m"),
    ("breaker", "breaker_breakwell_sb8"),
    ("meter", "meter_gridline_gm1"),
)

PACKAGES = ("cbor2", "cryptography", "paho-mqtt", "pymodbus", "psutil", "rich", "pydantic")


# -- arguments -------------------------------------------------------------------------------


def parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser with the options every bench takes: `--quick` and `--runs`."""
    first = (doc or "").strip().splitlines()
    ap = argparse.ArgumentParser(description=first[0] if first else None)
    ap.add_argument("--quick", action="store_true", help="a fast smoke run (small sizes, 1 run)")
    ap.add_argument("--runs", type=int, default=None, help="repetitions; the median is reported")
    return ap


def runs_of(args: argparse.Namespace, default: int = 5) -> int:
    """How many repetitions: `--runs`, else 1 with `--quick`, else `default`."""
    if args.runs is not None:
        return max(1, int(args.runs))
    return 1 if args.quick else default


# -- measuring -------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    """The `q`-th percentile (0..100), nearest-rank: a value that was actually observed."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return float(ordered[rank - 1])


def rate(count: float, fn: Callable[[], Any]) -> float:
    """`count / seconds` for one call of `fn` (count: operations it performs)."""
    t0 = time.perf_counter()
    fn()
    return count / (time.perf_counter() - t0)


def rate_for(fn: Callable[[], Any], *, seconds: float, batch: int = 1) -> float:
    """Calls per second of `fn` (each doing `batch` operations) over about `seconds`."""
    n = 0
    t0 = time.perf_counter()
    deadline = t0 + seconds
    while True:
        fn()
        n += batch
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - t0)


def median_rate(fn: Callable[[], Any], *, seconds: float, runs: int, batch: int = 1) -> float:
    """The median over `runs` of `rate_for`."""
    return median([rate_for(fn, seconds=seconds, batch=batch) for _ in range(runs)])


@dataclass
class ProcStats:
    """CPU and memory of one process over a sampling window."""

    cpu_s: float  # user + system CPU seconds used in the window
    wall_s: float
    rss_max: int  # bytes
    rss_median: int
    rss_last: int
    uss: int = 0  # memory unique to the process at the end (not shared libraries' pages)
    pss: int = 0  # proportional share: unique + shared pages split among their users

    @property
    def cpu_pct(self) -> float:
        """CPU as % of one core over the window."""
        return 100.0 * self.cpu_s / self.wall_s if self.wall_s > 0 else 0.0


@dataclass
class ProcSampler:
    """Samples a process's RSS on a background thread; CPU from cpu_times at start/stop.

    For the current process (pid None) the sampling thread's own cost is tiny (one /proc read
    per `interval`), and excluded from nothing: it is part of what is measured, and reported.
    """

    pid: int | None = None
    interval: float = 0.5
    _proc: psutil.Process = field(init=False)
    _rss: list[int] = field(default_factory=list, init=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)
    _t0: float = 0.0
    _cpu0: float = 0.0

    def __post_init__(self) -> None:
        self._proc = psutil.Process(self.pid or os.getpid())

    def _cpu(self) -> float:
        t = self._proc.cpu_times()
        return float(t.user + t.system)

    def start(self) -> ProcSampler:
        self._rss.clear()
        self._stop.clear()
        self._t0 = time.monotonic()
        self._cpu0 = self._cpu()
        self._thread = threading.Thread(target=self._run, daemon=True, name="proc-sampler")
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(psutil.Error):
                self._rss.append(int(self._proc.memory_info().rss))
            self._stop.wait(self.interval)

    def stop(self) -> ProcStats:
        cpu = self._cpu()
        wall = time.monotonic() - self._t0
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        rss = self._rss or [int(self._proc.memory_info().rss)]
        uss = pss = 0
        with contextlib.suppress(psutil.Error, AttributeError):
            full = self._proc.memory_full_info()
            uss, pss = int(full.uss), int(getattr(full, "pss", 0))
        return ProcStats(cpu - self._cpu0, wall, max(rss), int(median(rss)), rss[-1], uss, pss)


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds a process has used so far."""
    t = psutil.Process(pid or os.getpid()).cpu_times()
    return float(t.user + t.system)


# -- brokers ---------------------------------------------------------------------------------


@contextlib.contextmanager
def mosquitto(extra_config: str = "") -> Iterator[Broker]:
    """A private mosquitto on a free loopback port (simulators.broker), stopped afterwards."""
    if not mosquitto_available():
        raise SystemExit("mosquitto is not installed (apt-get install mosquitto)")
    broker = Broker(kind="mosquitto", extra_config=extra_config)
    broker.start()
    try:
        yield broker
    finally:
        broker.close()


# -- realistic readings ----------------------------------------------------------------------


def _sample_value(point: Any, i: int) -> Value:
    if point.table in (RegTable.COIL, RegTable.DISCRETE) or point.bits:
        return bool(i % 2) if point.table.is_bits else (i * 7) % 16
    lo = point.min if point.min is not None else 0.0
    hi = point.max if point.max is not None else lo + 100.0
    frac = ((i * 37) % 101) / 100.0
    v = lo + (hi - lo) * frac
    step = point.scale or 1.0
    if step >= 1 and float(step).is_integer():
        return int(round(v / step) * step)
    return round(round(v / step) * step, 6)


def site_profiles() -> list[tuple[str, Profile]]:
    """(device id, profile) for the full benchmark site."""
    return [(dev, load_profile(name)) for dev, name in SITE_PROFILES]


def site_points() -> list[tuple[str, Any]]:
    """(device id, PointDef) for every point of the full site (~130 points, plus gateway)."""
    return [(dev, p) for dev, prof in site_profiles() for p in prof.points]


def site_readings(n: int, *, t0: int = 1_750_000_000_000, period_ms: int = 5000) -> list[Reading]:
    """`n` readings as one site produces them: every point of the site per poll, in poll order,
    values within each point's valid range at its resolution (so CBOR sizes are realistic)."""
    pts = site_points()
    out: list[Reading] = []
    i = 0
    while len(out) < n:
        cycle, k = divmod(i, len(pts))
        dev, p = pts[k]
        out.append(Reading(t0 + cycle * period_ms + k, dev, p.name, _sample_value(p, i)))
        i += 1
    return out


GOOD = Quality.GOOD


# -- output ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One line of a bench table: a figure, its unit, and the target it is held to (if any)."""

    figure: str
    value: float | int | str
    unit: str = ""
    target: str = ""
    ok: bool | None = None


def fmt(value: float | int | str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and value > 99):
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:,.1f}"
    return f"{value:,.3g}"


def show(title: str, rows: Sequence[Row], *, note: str = "") -> None:
    """Print the bench's table with rich."""
    table = Table(title=title, title_justify="left")
    table.add_column("figure")
    table.add_column("median", justify="right")
    table.add_column("unit")
    table.add_column("target")
    table.add_column("")
    for r in rows:
        mark = "" if r.ok is None else ("[green]pass[/]" if r.ok else "[red]MISS[/]")
        table.add_row(r.figure, fmt(r.value), r.unit, r.target, mark)
    console.print(table)
    if note:
        console.print(note)


def _round(v: Any) -> Any:
    if isinstance(v, float):
        return round(v, 4) if abs(v) < 100 else round(v, 1)
    if isinstance(v, dict):
        return {k: _round(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_round(x) for x in v]
    return v


def emit(bench: str, figures: dict[str, Any]) -> None:
    """The last line a bench prints: `{"bench": name, ...figures}` as one JSON line."""
    print(json.dumps({"bench": bench, **_round(figures)}, sort_keys=False), flush=True)


# -- the machine -----------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    model = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for pkg in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[pkg] = metadata.version(pkg)
    mosq = ""
    with contextlib.suppress(OSError, ValueError):
        import subprocess

        out = subprocess.run(
            ["/usr/sbin/mosquitto", "-h"], capture_output=True, text=True, timeout=5
        ).stdout
        mosq = out.splitlines()[0].split("version", 1)[1].strip()
    import sqlite3

    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "mem_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "mosquitto": mosq,
        "packages": versions,
    }


if __name__ == "__main__":
    print(json.dumps(machine(), indent=2))


# -- a receipting subscriber in its own process ----------------------------------------------


@dataclass
class ReceiverProc:
    """tests/support/receiver.py run as a subprocess: verifies, dedupes, stores in its own
    SQLite and receipts, standing in for the aggregator's ingest where that is not measured."""

    proc: Any
    db: Path

    @property
    def pid(self) -> int:
        return int(self.proc.pid)

    def stored_readings(self) -> int:
        import sqlite3

        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        try:
            return int(conn.execute("SELECT coalesce(sum(n), 0) FROM batches").fetchone()[0])
        finally:
            conn.close()


@contextlib.contextmanager
def receiver(
    broker: Broker, workdir: Path, aggregator_key: Any, site_keys: dict[str, Any]
) -> Iterator[ReceiverProc]:
    """Start the receipting subscriber for `site_keys` (site -> private key) on `broker`."""
    import subprocess
    import sys

    from protocols.keys import public_key_hex, save_private_key

    key_file = workdir / "aggregator.key"
    if not key_file.exists():
        save_private_key(aggregator_key, key_file)
    db = workdir / f"receiver-{len(list(workdir.glob('receiver-*.db')))}.db"
    argv = [
        sys.executable,
        "-m",
        "tests.support.receiver",
        "--port",
        str(broker.port),
        "--db",
        str(db),
        "--aggregator-key",
        str(key_file),
        "--client-id",
        f"bench-receiver-{os.getpid()}-{db.stem}",
    ]
    for site, key in site_keys.items():
        argv += ["--site", f"{site}={public_key_hex(key)}"]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if b"ready" not in line:
            raise RuntimeError(f"receiver did not start (exit {proc.poll()})")
        yield ReceiverProc(proc, db)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


# -- the simulated site and the agent's config -----------------------------------------------

SIM_SITE_TOML = REPO / "config" / "sim-site.toml"
SITE_TOML = REPO / "config" / "site.toml"
DEVICE_PORT_ORDER = ("rectifier", "battery", "aircon", "breaker", "meter")


def free_port_range(n: int) -> int:
    """A port base such that base .. base+n-1 are all free on loopback right now."""
    import socket

    for _ in range(200):
        base = free_port()
        if base + n >= 65535:
            continue
        ok = True
        for p in range(base, base + n):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free port range")


AGENT_UNIT = REPO / "config" / "sitewatt-agent.service"


def deployed_agent_env(unit: Path = AGENT_UNIT) -> dict[str, str]:
    """The environment to run `sitewatt-agent` in so it is measured as a gateway runs it.

    The shipped systemd unit's `Environment=` settings are applied (MALLOC_ARENA_MAX, …), and
    agent/ and protocols/ are byte-compiled first, as `pip install` does: sessions here run with
    PYTHONDONTWRITEBYTECODE, and compiling ~45 modules at every start-up costs ~1.3 MB of RSS
    that no installed agent pays.
    """
    import compileall
    import shlex

    for package in ("agent", "protocols"):
        compileall.compile_dir(REPO / package, quiet=1)
    env = dict(os.environ)
    for line in unit.read_text(encoding="utf-8").splitlines():
        if line.startswith("Environment="):
            for assignment in shlex.split(line.removeprefix("Environment=")):
                key, _, value = assignment.partition("=")
                env[key] = value
    return env


def venv_script(name: str) -> str:
    """A console script installed next to this interpreter (sitewatt-sim, sitewatt-agent…)."""
    import sys

    return str(Path(sys.executable).parent / name)


@dataclass
class Proc:
    """A child process we started; `stop()` ends exactly it."""

    proc: Any
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return int(self.proc.pid)

    def stop(self, timeout: float = 10.0) -> None:
        import subprocess

        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)


@contextlib.contextmanager
def sim_site(workdir: Path, *, config: Path = SIM_SITE_TOML, speed: float = 1.0) -> Iterator[Proc]:
    """`sitewatt-sim site` in its own process on five free loopback ports (port-per-device)."""
    import subprocess

    from simulators.broker import wait_port

    base = free_port_range(5)
    log = open(workdir / "sim-site.log", "ab")  # noqa: SIM115 - lives with the process
    proc = subprocess.Popen(
        [venv_script("sitewatt-sim"), "site", "--config", str(config), "--port-base", str(base),
         "--no-control", "--no-live", "--speed", str(speed)],
        cwd=REPO, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    log.close()
    p = Proc(proc, {k: base + i for i, k in enumerate(DEVICE_PORT_ORDER)})
    try:
        for port in p.ports.values():
            wait_port("127.0.0.1", port, 30, proc=proc)
        yield p
    finally:
        p.stop()


def agent_toml(
    workdir: Path,
    *,
    device_ports: dict[str, int],
    broker_port: int,
    aggregator_pub_hex: str,
    site_key: Any,
    site_id: str = "sim-site-1",
    poll_interval_s: float | None = None,
    max_interval_s: float | None = None,
    drain_jitter_max_s: float = 0.0,
    gateway: bool = True,
) -> Path:
    """The shipped config/site.toml, pointed at this run's ports, key and database.

    Edited as text (the shipped file is the reference; only values change), so what is
    benchmarked is what a technician installs.
    """
    import re

    from protocols.keys import save_private_key

    key_file = workdir / f"{site_id}.key"
    if not key_file.exists():
        save_private_key(site_key, key_file)
    text = SITE_TOML.read_text()
    text = re.sub(r'^profiles_dir = .*$', f'profiles_dir = "{REPO / "config" / "profiles"}"',
                  text, flags=re.M)  # fmt: skip
    text = re.sub(r'^id = "sim-site-1"', f'id = "{site_id}"', text, flags=re.M)
    text = re.sub(r"^key_file = .*$", f'key_file = "{key_file}"', text, count=1, flags=re.M)
    text = re.sub(r"^aggregator_keys = .*$", f'aggregator_keys = ["{aggregator_pub_hex}"]',
                  text, flags=re.M)  # fmt: skip
    text = re.sub(r"^aggregator_key_files = .*$", "aggregator_key_files = []", text, flags=re.M)
    text = re.sub(r"^port = 1883", f"port = {broker_port}", text, flags=re.M)
    text = re.sub(r'^path = "\.\./var/.*\.db"', f'path = "{workdir / (site_id + ".db")}"', text,
                  flags=re.M)  # fmt: skip
    text = re.sub(r"^drain_jitter_max_s = .*$", f"drain_jitter_max_s = {drain_jitter_max_s}",
                  text, flags=re.M)  # fmt: skip
    head, *sections = re.split(r"^(?=\[devices\.)", text, flags=re.M)
    out = [head]
    for sec in sections:
        dev = sec[len("[devices.") : sec.index("]")]
        if dev in device_ports:
            sec = re.sub(r"^port = \d+", f"port = {device_ports[dev]}", sec, flags=re.M)
        if poll_interval_s is not None:
            sec = re.sub(r"^poll_interval_s = .*$", f"poll_interval_s = {poll_interval_s}", sec,
                         flags=re.M)  # fmt: skip
        if max_interval_s is not None:
            sec = re.sub(r"^max_interval_s = .*$", f"max_interval_s = {max_interval_s}", sec,
                         flags=re.M)  # fmt: skip
        out.append(sec)
    text = "".join(out)
    if not gateway:
        text = re.sub(r"(\[gateway\][^\[]*?)^enabled = true", r"\g<1>enabled = false", text,
                      flags=re.M | re.S)  # fmt: skip
    path = workdir / f"{site_id}.toml"
    path.write_text(text)
    return path
