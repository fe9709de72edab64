"""Aggregator ingest on PostgreSQL (figure 4): readings/s with one and with two ingest workers.

Each worker is the real `sitewatt-aggregator serve --no-http --worker NAME` process, sharing the
telemetry through a shared subscription (`$share/<group>/…`) of a private mosquitto, all on one
private PostgreSQL 15 cluster (tests/support/postgres.py; fsync and synchronous_commit on, as in
production, with shared_buffers 512 MB and max_wal_size 4 GB so no checkpoint lands in a burst).
bench/loadgen.py in another process signs every batch before it starts, then publishes bursts
of 1 M readings (1,000 enrolled sites, 5 % of the batches sent twice) as fast as paho goes,
at 100 and at 1,000 readings per message.

- throughput: readings / (first publish → last receipt back at the generator); every receipt
  is sent only after the commit, so this is verified, deduplicated, durably stored readings/s.
  Each case first warms up (one batch per site: its series are created once in its life).
- CPU per 100k readings of each process group over the bursts — the ingest workers, PostgreSQL
  (server and backends), mosquitto, the generator — from /proc: on two cores these share them,
  which is what bounds the gain of a second worker.
- each case runs on a fresh database, checked at its end: every batch published is stored
  exactly once. At each batch size, one worker and then two are measured back to back.

    python -m bench.bench_ingest_pg [--quick] [--runs N] [--sites 1000] [--per-batch 100 1000]
        [--workers 1 2]
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

from aggregator.config import load_config
from aggregator.sites import SiteRegistry
from aggregator.storage import open_configured
from bench.bench_ingest import LoadGen
from bench.common import (
    REPO,
    Proc,
    Row,
    emit,
    median,
    mosquitto,
    parser,
    runs_of,
    show,
    venv_script,
)
from protocols.clock import SystemClock
from protocols.keys import generate_key, public_key_hex, save_private_key
from simulators.broker import Broker
from tests.support.postgres import PgCluster

BENCH_PG_SETTINGS = {
    "shared_buffers": "512MB",
    "max_wal_size": "4GB",
    "checkpoint_timeout": "30min",
    "max_connections": "50",
}


def cpu_of(pids: list[int], *, children: bool = False) -> float:
    """User + system CPU seconds used so far by `pids` (and their children)."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            p = psutil.Process(pid)
            procs = [p, *p.children(recursive=True)] if children else [p]
            for q in procs:
                with contextlib.suppress(psutil.Error):
                    t = q.cpu_times()
                    total += t.user + t.system
    return total


def write_config(tmp: Path, broker: Broker, url: str, key_file: Path, group: str) -> Path:
    """The aggregator config of one case: its database and its share group."""
    path = tmp / f"aggregator-{group}.toml"
    path.write_text(
        'log_level = "warning"\n'
        f'[broker]\nport = {broker.port}\nclient_id = "bench-{group}"\nshare_group = "{group}"\n'
        f'[database]\nurl = "{url}"\n'
        f'[keys]\nkey_file = "{key_file}"\n'
    )
    return path


@contextlib.contextmanager
def workers(config: Path, n: int, tmp: Path, problems: list[str]) -> Iterator[list[Proc]]:
    """`n` ingest worker processes (`serve --no-http --worker k`), each connected and
    subscribed (its "connected" log line is written after it subscribes) when yielded; their
    warnings and errors are added to `problems` when they stop."""
    procs: list[Proc] = []
    logs: list[Path] = []
    try:
        for k in range(1, n + 1):
            logs.append(tmp / f"{config.stem}-{time.monotonic_ns()}-worker-{k}.log")
            log = open(logs[-1], "ab")  # noqa: SIM115 - lives with the process
            proc = subprocess.Popen(
                [venv_script("sitewatt-aggregator"), "serve", "--config", str(config),
                 "--no-http", "--worker", str(k), "--log-level", "info"],
                cwd=REPO, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
            )  # fmt: skip
            log.close()
            procs.append(Proc(proc))
        deadline = time.monotonic() + 60
        while not all("connected to" in path.read_text() for path in logs):
            for p, path in zip(procs, logs, strict=True):
                if p.proc.poll() is not None:
                    raise SystemExit(f"ingest worker exited: {path.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise SystemExit("ingest workers did not connect")
            time.sleep(0.02)
        yield procs
    finally:
        for p in procs:
            p.stop()
        for path in logs:
            text = path.read_text()
            problems += [x for x in text.splitlines() if " WARNING " in x or " ERROR " in x]
            if " ERROR " in text:  # the first error with its traceback, for the record
                first = text[text.index(" ERROR ") - 24 :]
                (REPO / "var").mkdir(exist_ok=True)
                (REPO / "var" / "bench_ingest_pg-worker-error.log").write_text(first[:20_000])


def run_case(
    *, n_workers: int, per_batch: int, burst: int, runs: int, seq_base: int,
    config: Path, keys_file: Path, broker: Broker, cluster: PgCluster, tmp: Path,
) -> dict[str, Any]:  # fmt: skip
    """Bursts at one batch size with `n_workers` workers."""
    batches = burst // per_batch
    assert broker.proc is not None and cluster.proc is not None
    problems: list[str] = []
    with workers(config, n_workers, tmp, problems) as procs:
        gen = LoadGen(
            ["--port", str(broker.port), "--keys", str(keys_file), "--per-batch", str(per_batch),
             "--burst-batches", str(batches), "--bursts", str(runs), "--seq-base", str(seq_base),
             "--start-ago-s", str(3600 - seq_base // 1000)]
        )  # fmt: skip
        try:
            warm = gen.cmd("warm")
            if not warm["all_receipted"]:
                raise SystemExit(f"warm-up not receipted: {warm}")
            groups = {
                "workers": ([p.pid for p in procs], False),
                "postgres": ([cluster.proc.pid], True),
                "mosquitto": ([broker.proc.pid], False),
                "generator": ([gen.proc.pid], False),
            }
            rates, publish, cpu = [], [], {g: [] for g in groups}
            for _ in range(runs):
                before = {g: cpu_of(pids, children=ch) for g, (pids, ch) in groups.items()}
                out = gen.cmd("burst")
                if not out["all_receipted"]:
                    raise SystemExit(f"burst not receipted: {out}")
                rates.append(out["readings"] / out["receipted_s"])
                publish.append(out["readings"] / out["publish_s"])
                for g, (pids, ch) in groups.items():
                    used = cpu_of(pids, children=ch) - before[g]
                    cpu[g].append(used * 100_000 / out["readings"])
        finally:
            gen.close()
    return {
        "readings_per_s": median(rates),
        "runs": rates,
        "generator_readings_per_s": median(publish),
        "cpu_s_per_100k": {g: median(v) for g, v in cpu.items()},
        "worker_problems": problems[-5:],
        "worker_problem_count": len(problems),
    }


def enrol(config: Path, keys: dict[str, Any]) -> None:
    """Every site, enrolled in the database `config` names."""
    storage = open_configured(load_config(config).database)
    try:
        registry = SiteRegistry(storage, SystemClock())
        for site, key in keys.items():
            registry.enrol(site, public_key_hex(key))
    finally:
        storage.close()


def stored_counts(url: str) -> tuple[int, int]:
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT (SELECT count(*) FROM batches), (SELECT count(*) FROM "
                           "readings)").fetchone()  # fmt: skip
    assert row is not None
    return int(row[0]), int(row[1])


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--sites", type=int, default=1000)
    ap.add_argument("--per-batch", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    runs = runs_of(args, 3)
    sites = 100 if args.quick else args.sites
    burst = 100_000 if args.quick else 1_000_000
    fig: dict[str, Any] = {
        "sites": sites,
        "per_batch": args.per_batch,
        "workers": args.workers,
        "load_avg_1m": os.getloadavg()[0],
    }
    results: dict[tuple[int, int], dict[str, Any]] = {}
    checks: list[tuple[int, int, int, int]] = []  # stored and expected batches, readings
    with tempfile.TemporaryDirectory(prefix="sitewatt-bench-ingest-pg-") as d:
        tmp = Path(d)
        key_file = tmp / "aggregator.key"
        save_private_key(generate_key(), key_file)
        keys = {f"site-{i:04d}": generate_key() for i in range(sites)}
        keys_file = tmp / "keys.json"
        keys_file.write_text(json.dumps({s: k.private_bytes_raw().hex() for s, k in keys.items()}))
        with PgCluster(settings=BENCH_PG_SETTINGS) as cluster, mosquitto() as broker:
            case = 0
            # one worker then two at each size, back to back (the load of the machine drifts);
            # each case on a fresh database and share group, so neither the tables' size nor
            # another case's sessions weigh on it
            for per_batch in args.per_batch:
                for n in args.workers:
                    url = cluster.create_database(f"c{case}")
                    fig["postgres"] = _server_version(url)
                    config = write_config(tmp, broker, url, key_file, f"g{case}")
                    enrol(config, keys)
                    results[(n, per_batch)] = run_case(
                        n_workers=n, per_batch=per_batch, burst=burst, runs=runs, seq_base=0,
                        config=config, keys_file=keys_file, broker=broker, cluster=cluster,
                        tmp=tmp,
                    )  # fmt: skip
                    batches = sites + runs * (burst // per_batch)
                    checks.append((*stored_counts(url), batches, batches * per_batch))
                    cluster.drop_database(f"c{case}")
                    case += 1
    fig["load_avg_1m_end"] = os.getloadavg()[0]
    fig["exactly_once"] = all(sb == eb and sr == er for sb, sr, eb, er in checks)
    stored_batches, stored_readings = sum(c[0] for c in checks), sum(c[1] for c in checks)
    expected_batches, expected_readings = sum(c[2] for c in checks), sum(c[3] for c in checks)
    rows: list[Row] = []
    for (n, per_batch), r in results.items():
        rate = r["readings_per_s"]
        fig[f"readings_per_s_{n}w_{per_batch}"] = rate
        fig[f"runs_{n}w_{per_batch}"] = r["runs"]
        fig[f"generator_readings_per_s_{n}w_{per_batch}"] = r["generator_readings_per_s"]
        fig[f"worker_problems_{n}w_{per_batch}"] = r["worker_problem_count"]
        for line in r["worker_problems"]:
            print(f"worker log ({n}w, {per_batch}): {line}")
        label = f"{n} worker{'s' if n > 1 else ''}, {per_batch:,} readings/message"
        gain = ""
        if n > 1 and (1, per_batch) in results:
            x = rate / results[(1, per_batch)]["readings_per_s"]
            fig[f"gain_{n}w_{per_batch}"] = x
            gain = f"×{x:.2f} vs 1 worker"
        rows.append(Row(label, rate, "readings/s", gain))
        split = r["cpu_s_per_100k"]
        for g, v in split.items():
            fig[f"cpu_s_per_100k_{g}_{n}w_{per_batch}"] = v
        rows.append(
            Row(
                "  CPU s per 100k: workers / postgres / mosquitto / generator",
                " / ".join(f"{split[g]:.2f}" for g in split),
                "s",
                f"{sum(split.values()):.2f} s total",
            )
        )
    rows.append(
        Row(
            "stored exactly once (batches, readings)",
            f"{stored_batches:,} / {stored_readings:,}",
            "",
            f"expected {expected_batches:,} / {expected_readings:,}",
            fig["exactly_once"],
        )
    )
    show(
        f"aggregator ingest on PostgreSQL ({sites} sites, median of {runs} bursts of {burst:,} "
        f"readings; load average {fig['load_avg_1m']:.1f} → {fig['load_avg_1m_end']:.1f})",
        rows,
    )
    emit("ingest_pg", fig)


def _server_version(url: str) -> str:
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else ""


if __name__ == "__main__":
    main()
