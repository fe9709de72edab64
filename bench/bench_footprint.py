"""Agent footprint (figure 2): the full site for N minutes, and the peer workload.

Everything runs as it would on a gateway, each in its own process: `sitewatt-agent run` (the
shipped config/site.toml pointed at this run's ports), the simulated site (`sitewatt-sim site`),
a private mosquitto, and a receipting subscriber (tests/support/receiver.py) standing in for the
aggregator. The agent process is sampled with psutil after a warm-up (start-up excluded).

- full site: 5 devices, 126 points + gateway health, 5 s polls (aircon 10 s), report-by-exception
  as shipped: RSS, CPU % of one core, outbox SQLite size (file + WAL) growth, readings and bytes
  on the wire per hour (telemetry payloads as a passive subscriber sees them). "Sending
  everything" is every point of every poll in batches of 1,000 (config default), its wire size
  computed by encoding and signing exactly those readings (the size is deterministic).
- peer workload: 10 devices x 100 holding registers (bench/peer_server.py, every value changes
  every 250 ms), polled every second, every value published: CPU % and RSS of the agent.
- what the RSS is made of: a fresh interpreter importing only the third-party libraries the
  `run` path uses (the floor with these dependencies), and one after `import agent.cli`.

The agent runs in the environment of the shipped systemd unit, byte-compiled as installed
(`bench.common.deployed_agent_env`).

    python -m bench.bench_footprint [--quick] [--minutes M] [--peer-minutes M]
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.common import (
    REPO,
    Proc,
    ProcSampler,
    Row,
    agent_toml,
    deployed_agent_env,
    emit,
    free_port_range,
    mosquitto,
    parser,
    receiver,
    show,
    sim_site,
    site_profiles,
    venv_script,
)
from bench.peer_server import profile_toml
from protocols import messages
from protocols.envelope import Signer
from protocols.keys import generate_key, public_key_hex, save_private_key
from protocols.topics import DEFAULT_TOPICS, TopicKind
from protocols.types import Reading

RSS_TARGET_MB = 45.0
SITE_CPU_TARGET = 1.0
PEER_CPU_TARGET = 4.0
MB = 1024 * 1024


class WireCounter:
    """A passive subscriber counting the telemetry bytes and messages on the broker."""

    def __init__(self, port: int) -> None:
        self.bytes = 0
        self.messages = 0
        self._lock = threading.Lock()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-wire-counter")
        c.on_message = self._on_message
        c.connect("127.0.0.1", port, 60)
        c.subscribe(DEFAULT_TOPICS.all_sites(TopicKind.TELEMETRY))
        c.loop_start()
        self.client = c

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.bytes += len(msg.payload)
            self.messages += 1

    def snapshot(self) -> tuple[int, int]:
        with self._lock:
            return self.bytes, self.messages

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@contextlib.contextmanager
def agent_process(config: Path, workdir: Path) -> Iterator[Proc]:
    log = open(workdir / "agent.log", "ab")  # noqa: SIM115 - lives with the process
    proc = subprocess.Popen(
        [venv_script("sitewatt-agent"), "run", "--config", str(config), "--log-level", "WARNING"],
        cwd=REPO, stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=deployed_agent_env(),
    )  # fmt: skip
    log.close()
    p = Proc(proc)
    try:
        yield p
    finally:
        p.stop(20)


def db_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.parent.glob(path.name + "*") if f.is_file())


def wait_stored(rx: Any, at_least: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if rx.stored_readings() >= at_least:
            return
        time.sleep(0.5)
    raise SystemExit(f"the agent delivered nothing within {timeout:g} s (see its agent.log)")


def run_site(tmp: Path, minutes: float, warmup_s: float) -> dict[str, float]:
    """The full site with the shipped config for `minutes` after `warmup_s`."""
    site_key, agg_key = generate_key(), generate_key()
    with sim_site(tmp) as sim, mosquitto() as broker:
        cfg = agent_toml(
            tmp, device_ports=sim.ports, broker_port=broker.port,
            aggregator_pub_hex=public_key_hex(agg_key), site_key=site_key,
        )  # fmt: skip
        db = tmp / "sim-site-1.db"
        wire = WireCounter(broker.port)
        with (
            receiver(broker, tmp, agg_key, {"sim-site-1": site_key}) as rx,
            agent_process(cfg, tmp) as agent,
        ):
            wait_stored(rx, 1, 60)
            time.sleep(warmup_s)
            b0, m0 = wire.snapshot()
            r0 = rx.stored_readings()
            size0 = db_bytes(db)
            main0 = db.stat().st_size
            sampler = ProcSampler(agent.pid, interval=1.0).start()
            t0 = time.monotonic()
            size_max = size0
            while time.monotonic() - t0 < minutes * 60:
                time.sleep(2.0)
                size_max = max(size_max, db_bytes(db))
                if agent.proc.poll() is not None:
                    raise SystemExit(f"the agent exited ({agent.proc.returncode}); see agent.log")
            st = sampler.stop()
            b1, m1 = wire.snapshot()
            r1 = rx.stored_readings()
            size1 = db_bytes(db)
            main1 = db.stat().st_size
        wire.close()
    hours = st.wall_s / 3600
    return {
        "rss_mb": st.rss_max / MB,
        "rss_median_mb": st.rss_median / MB,
        "uss_mb": st.uss / MB,
        "pss_mb": st.pss / MB,
        "cpu_pct": st.cpu_pct,
        "db_start_kb": size0 / 1024,
        "db_end_kb": size1 / 1024,
        "db_max_kb": size_max / 1024,
        "db_growth_kb_per_h": (size1 - size0) / 1024 / hours,
        "db_main_start_kb": main0 / 1024,
        "db_main_end_kb": main1 / 1024,
        "readings_per_h": (r1 - r0) / hours,
        "wire_bytes_per_h": (b1 - b0) / hours,
        "messages_per_h": (m1 - m0) / hours,
        "window_s": st.wall_s,
    }


def everything_per_hour() -> tuple[float, float]:
    """(readings/h, wire bytes/h) if every point of every poll were sent, batches of 1,000."""
    polls_per_h = {"rectifier": 720, "battery": 720, "aircon": 360, "breaker": 720, "meter": 720}
    readings: list[Reading] = []
    t0 = 1_750_000_000_000
    profiles = dict(site_profiles())
    for dev, n in polls_per_h.items():
        period = 3_600_000 // n
        for k in range(n):
            readings += [
                Reading(t0 + k * period, dev, p.name, _value(p, k)) for p in profiles[dev].points
            ]
    readings.sort(key=lambda r: r.t)
    signer = Signer(generate_key())
    topic = DEFAULT_TOPICS.telemetry("sim-site-1")
    total = 0
    for i in range(0, len(readings), 1000):
        chunk = tuple(readings[i : i + 1000])
        batch = messages.TelemetryBatch("sim-site-1", "0123456789abcdef", i + 1, chunk[-1].t, chunk)
        total += len(signer.seal_bytes(messages.encode(batch), topic))
    return float(len(readings)), float(total)


def _value(p: Any, k: int) -> Any:
    from bench.common import _sample_value

    return _sample_value(p, k)


# -- the peer workload ------------------------------------------------------------------------


def peer_toml(tmp: Path, *, ports: list[int], broker_port: int, agg_pub: str, key: Any) -> Path:
    profiles = tmp / "profiles"
    profiles.mkdir(exist_ok=True)
    (profiles / "peer_hr100.toml").write_text(profile_toml())
    key_file = tmp / "peer.key"
    save_private_key(key, key_file)
    lines = [
        f'profiles_dir = "{profiles}"',
        "[site]",
        'id = "peer-site"',
        'timezone = "Asia/Shanghai"',
        f'key_file = "{key_file}"',
        f'aggregator_keys = ["{agg_pub}"]',
        "[broker]",
        'host = "127.0.0.1"',
        f"port = {broker_port}",
        "[outbox]",
        f'path = "{tmp / "peer.db"}"',
        "batch_max_readings = 1000",
        "drain_jitter_max_s = 0.0",
        "[gateway]",
        "enabled = false",
    ]
    for i, port in enumerate(ports):
        lines += [
            f"[devices.dev{i:02d}]",
            'kind = "meter"',
            'profile = "peer_hr100"',
            'host = "127.0.0.1"',
            f"port = {port}",
            "unit_id = 1",
            "poll_interval_s = 1.0",
            "max_interval_s = 1.0",
        ]
    path = tmp / "peer.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_peer(tmp: Path, minutes: float, warmup_s: float, devices: int = 10) -> dict[str, float]:
    site_key, agg_key = generate_key(), generate_key()
    base = free_port_range(devices)
    log = open(tmp / "peer-server.log", "ab")  # noqa: SIM115 - lives with the process
    server = Proc(subprocess.Popen(
        [sys.executable, "-m", "bench.peer_server", "--port-base", str(base),
         "--devices", str(devices)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
    ))  # fmt: skip
    log.close()
    try:
        assert server.proc.stdout is not None
        if b"ready" not in server.proc.stdout.readline():
            raise SystemExit("peer server did not start")
        with mosquitto() as broker:
            cfg = peer_toml(tmp, ports=[base + i for i in range(devices)],
                            broker_port=broker.port, agg_pub=public_key_hex(agg_key),
                            key=site_key)  # fmt: skip
            with (
                receiver(broker, tmp, agg_key, {"peer-site": site_key}) as rx,
                agent_process(cfg, tmp) as agent,
            ):
                wait_stored(rx, 1, 60)
                time.sleep(warmup_s)
                r0 = rx.stored_readings()
                sampler = ProcSampler(agent.pid, interval=1.0).start()
                t0 = time.monotonic()
                while time.monotonic() - t0 < minutes * 60:
                    time.sleep(1.0)
                    if agent.proc.poll() is not None:
                        raise SystemExit(f"agent exited ({agent.proc.returncode}); see agent.log")
                st = sampler.stop()
                time.sleep(2.0)  # the last second's batch reaches the receiver
                r1 = rx.stored_readings()
    finally:
        server.stop()
    return {
        "cpu_pct": st.cpu_pct,
        "rss_mb": st.rss_max / MB,
        "rss_median_mb": st.rss_median / MB,
        "uss_mb": st.uss / MB,
        "pss_mb": st.pss / MB,
        "values_per_s": (r1 - r0) / (st.wall_s + 2.0),
        "window_s": st.wall_s,
    }


# -- what the memory consists of --------------------------------------------------------------

# The third-party modules the `run` path imports, used as the agent uses them (one pydantic model
# built), and nothing of ours: the floor under the agent's RSS with these dependencies.
LIBRARIES_ONLY = """
import asyncio, json, logging, sqlite3, tomllib, zoneinfo
import cbor2, paho.mqtt.client, psutil, pymodbus.client, typer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel
class Model(BaseModel):
    x: int
"""
AGENT_IMPORTED = "import agent.cli"
PRINT_RSS = """
for line in open("/proc/self/status"):
    if line.startswith("VmRSS:"):
        print(int(line.split()[1]) * 1024)
"""


def import_rss(code: str, runs: int = 3) -> float:
    """Median RSS (bytes) of a fresh interpreter, in the agent's environment, after `code`."""
    env = deployed_agent_env()
    rss = [
        float(subprocess.run([sys.executable, "-c", code + PRINT_RSS], cwd=REPO, env=env,
                             capture_output=True, text=True, check=True).stdout)
        for _ in range(runs)
    ]  # fmt: skip
    return sorted(rss)[len(rss) // 2]


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--minutes", type=float, default=None, help="full-site window (default 5)")
    ap.add_argument("--peer-minutes", type=float, default=None, help="peer window (default 2)")
    ap.add_argument("--skip-site", action="store_true")
    ap.add_argument("--skip-peer", action="store_true")
    args = ap.parse_args()
    minutes = args.minutes or (0.5 if args.quick else 5.0)
    peer_minutes = args.peer_minutes or (0.3 if args.quick else 2.0)
    warmup = 10.0 if args.quick else 30.0
    fig: dict[str, Any] = {}
    rows: list[Row] = []
    libs, imported = import_rss(LIBRARIES_ONLY), import_rss(AGENT_IMPORTED)
    fig["libraries_only_rss_mb"] = libs / MB
    fig["agent_imported_rss_mb"] = imported / MB
    rows += [
        Row("RSS of the run path's libraries alone, nothing of ours", libs / MB, "MB",
            "the floor with these dependencies"),
        Row("RSS after `import agent.cli` (no device, no broker)", imported / MB, "MB"),
    ]  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="sitewatt-bench-footprint-") as d:
        tmp = Path(d)
        if not args.skip_site:
            (tmp / "site").mkdir()
            s = run_site(tmp / "site", minutes, warmup)
            fig.update({f"site_{k}": v for k, v in s.items()})
            all_n, all_b = everything_per_hour()
            fig["site_everything_readings_per_h"] = all_n
            fig["site_everything_wire_bytes_per_h"] = all_b
            fig["site_rbe_share"] = s["readings_per_h"] / all_n
            rows += [
                Row("full site: agent RSS (max)", s["rss_mb"], "MB", f"≤ {RSS_TARGET_MB:g} MB",
                    s["rss_mb"] <= RSS_TARGET_MB),
                Row("full site: agent USS / PSS (unique / proportional)",
                    f"{s['uss_mb']:.1f} / {s['pss_mb']:.1f}", "MB"),
                Row("full site: agent CPU", s["cpu_pct"], "% core", f"≤ {SITE_CPU_TARGET:g} %",
                    s["cpu_pct"] <= SITE_CPU_TARGET),
                Row("full site: outbox SQLite main file, start / end",
                    f"{s['db_main_start_kb']:,.0f} / {s['db_main_end_kb']:,.0f}", "KB"),
                Row("full site: outbox SQLite file + WAL, start / end",
                    f"{s['db_start_kb']:,.0f} / {s['db_end_kb']:,.0f}", "KB",
                    "WAL reused after its checkpoint (≈ 4 MB)"),
                Row("full site: readings sent per hour, report-by-exception", s["readings_per_h"],
                    "readings/h", f"{100 * fig['site_rbe_share']:.0f} % of every poll"),
                Row("full site: readings per hour, every point of every poll", all_n,
                    "readings/h"),
                Row("full site: wire bytes per hour, report-by-exception", s["wire_bytes_per_h"],
                    "B/h", f"{s['messages_per_h']:,.0f} messages/h"),
                Row("full site: wire bytes per hour, sending everything (computed)", all_b, "B/h",
                    f"RBE saves {100 * (1 - s['wire_bytes_per_h'] / all_b):.0f} %"),
            ]  # fmt: skip
        if not args.skip_peer:
            (tmp / "peer").mkdir()
            p = run_peer(tmp / "peer", peer_minutes, 5.0 if args.quick else 15.0)
            fig.update({f"peer_{k}": v for k, v in p.items()})
            rows += [
                Row("peer workload: agent CPU", p["cpu_pct"], "% core",
                    f"≤ {PEER_CPU_TARGET:g} % (TB gateway 20.7 %)",
                    p["cpu_pct"] <= PEER_CPU_TARGET),
                Row("peer workload: agent RSS (max)", p["rss_mb"], "MB",
                    f"≤ {RSS_TARGET_MB:g} MB (TB gateway 67 MB)", p["rss_mb"] <= RSS_TARGET_MB),
                Row("peer workload: agent USS / PSS (unique / proportional)",
                    f"{p['uss_mb']:.1f} / {p['pss_mb']:.1f}", "MB"),
                Row("peer workload: values stored at the receiver", p["values_per_s"], "values/s",
                    "1,000 offered"),
            ]  # fmt: skip
    show(f"agent footprint (site {minutes:g} min, peer {peer_minutes:g} min, after warm-up)", rows)
    emit("footprint", fig)


if __name__ == "__main__":
    main()
