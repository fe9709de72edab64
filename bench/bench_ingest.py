"""Aggregator ingest (figure 4): verified, deduplicated, stored readings/s; CPU split; lag.

The real `aggregator.ingest.Ingest` (built by `aggregator.service.build_services`, SQLite, no
HTTP) runs in this process; a load generator (bench/loadgen.py) in another process publishes
pre-signed telemetry batches of 1,000 enrolled sites through a private mosquitto on loopback,
QoS 1, 100 readings per batch, 5 % of them sent twice (the dedupe path).

- throughput: each burst (10,000 batches = 1 M readings) is published as fast as the generator
  goes; readings/s = readings stored / time from the first message in to the last commit.
  Every site's series are created by a warm-up batch first (that happens once in a site's life).
- CPU split: the same kind of batches through each stage in-process, one core: COSE verify
  (`envelope.unseal`: signature + CBOR), message decode (`messages.decode`), the rest of
  `verify_message` (topic, kid owner, time window), and `store_batches` in groups of 100.
- lag: the generator paced at 50 % and 100 % of the target rate; lag = publish → signed receipt
  back at the generator (verify, store, commit, receipt), p50 / p99 / max.

    python -m bench.bench_ingest [--quick] [--runs N] [--sites 1000] [--per-batch 100]
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aggregator.config import config_from_dict
from aggregator.service import build_services
from aggregator.storage import VerifiedBatch, open_storage
from aggregator.verify import Window, verify_message
from bench.common import (
    REPO,
    ProcSampler,
    Row,
    emit,
    median,
    mosquitto,
    parser,
    runs_of,
    show,
    site_readings,
)
from protocols import messages
from protocols.envelope import Signer, unseal
from protocols.keys import generate_key, public_key_hex, save_private_key
from protocols.topics import DEFAULT_TOPICS

TARGET = 100_000  # readings/s


# -- the stages in-process --------------------------------------------------------------------


def stage_split(
    tmp: Path, registry_keyring: Any, signers: dict[str, Signer], per_batch: int, n_batches: int
) -> dict[str, float]:
    """Seconds per 100k readings in each stage, measured on `n_batches` fresh batches."""
    topics = DEFAULT_TOPICS
    sites = sorted(signers)
    base = site_readings(per_batch)
    t0 = int(time.time() * 1000)
    sealed: list[tuple[str, bytes]] = []
    for i in range(n_batches):
        site = sites[i % len(sites)]
        seq = 1_000_000 + i
        rs = tuple(r._replace(t=t0 - 60_000 + (r.t - base[0].t)) for r in base)
        topic = topics.telemetry(site)
        msg = messages.TelemetryBatch(site, "split", seq, t0, rs)
        sealed.append((topic, signers[site].seal_bytes(messages.encode(msg), topic)))
    window = Window(t0 + 1000, 30 * 86_400_000, 300_000)
    active = registry_keyring.active

    s = time.perf_counter()
    opened = [unseal(body, topic, active) for topic, body in sealed]
    t_unseal = time.perf_counter() - s
    s = time.perf_counter()
    for o in opened:
        messages.decode(o.payload)
    t_decode = time.perf_counter() - s
    s = time.perf_counter()
    verified = [
        verify_message(topic, body, registry_keyring, topics, window) for topic, body in sealed
    ]
    t_verify_all = time.perf_counter() - s
    batches = []
    for v in verified:
        m = v.message
        assert isinstance(m, messages.TelemetryBatch)
        batches.append(VerifiedBatch(v.site, m.seq, m.boot, m.sent, t0 + 5, m.hist, m.readings))
    store = open_storage(tmp / "split.db")
    try:
        # series creation happens once per site: do it outside the timing
        warm = [
            VerifiedBatch(b.site, 1, b.boot, b.sent_ms, b.received_ms, b.hist, b.readings)
            for b in batches[: len(sites)]
        ]
        store.store_batches(warm)
        s = time.perf_counter()
        for k in range(0, len(batches), 100):
            store.store_batches(batches[k : k + 100])
        t_insert = time.perf_counter() - s
    finally:
        store.close()
    n = n_batches * per_batch
    scale = 100_000 / n
    other = max(0.0, t_verify_all - t_unseal - t_decode)
    return {
        "verify_cose_s": t_unseal * scale,
        "decode_s": t_decode * scale,
        "checks_s": other * scale,
        "insert_s": t_insert * scale,
        "pipeline_readings_per_s": n / (t_verify_all + t_insert),
    }


# -- the real thing through mosquitto ---------------------------------------------------------


class LoadGen:
    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.loadgen", *argv],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "ready" not in line:
            raise RuntimeError(f"load generator did not start (exit {self.proc.poll()})")

    def cmd(self, line: str) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        out: dict[str, Any] = json.loads(self.proc.stdout.readline())
        return out

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            with contextlib.suppress(OSError):
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def watch_burst(ingest: Any, gen: LoadGen, expect_readings: int) -> tuple[float, dict[str, Any]]:
    """Run one burst; (readings/s from first message in to last commit, generator figures)."""
    import threading

    stats = ingest.stats
    base_msgs, base_readings = stats.messages_in, stats.readings_stored
    result: dict[str, Any] = {}
    th = threading.Thread(target=lambda: result.update(gen.cmd("burst")))
    th.start()
    t_first = t_last = None
    while True:
        now = time.perf_counter()
        if t_first is None and stats.messages_in > base_msgs:
            t_first = now
        if stats.readings_stored - base_readings >= expect_readings:
            t_last = now
            break
        if not th.is_alive() and stats.readings_stored - base_readings < expect_readings:
            time.sleep(0.5)
            if stats.readings_stored - base_readings < expect_readings:
                raise RuntimeError(f"burst incomplete: {stats.snapshot()} / {result}")
        time.sleep(0.002)
    th.join()
    assert t_first is not None
    stored = stats.readings_stored - base_readings
    return stored / (t_last - t_first), result


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--sites", type=int, default=1000)
    ap.add_argument("--per-batch", type=int, default=100)
    ap.add_argument(
        "--lag-at",
        type=float,
        nargs="+",
        default=[0.5, 1.0],
        help="offered load for the lag figures, as fractions of the target",
    )
    args = ap.parse_args()
    runs = runs_of(args, 3)
    sites = 100 if args.quick else args.sites
    per_batch = args.per_batch
    burst_batches = 1000 if args.quick else 10_000
    rate_targets = list(args.lag_at)  # fractions of TARGET
    rate_secs = 2.0 if args.quick else 10.0
    rate_batches = [int(TARGET * f / per_batch * rate_secs) for f in rate_targets]
    fig: dict[str, Any] = {"sites": sites, "per_batch": per_batch}
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="sitewatt-bench-ingest-") as d:
        tmp = Path(d)
        agg_key_file = tmp / "aggregator.key"
        save_private_key(generate_key(), agg_key_file)
        keys = {f"site-{i:04d}": generate_key() for i in range(sites)}
        (tmp / "keys.json").write_text(
            json.dumps({s: k.private_bytes_raw().hex() for s, k in keys.items()})
        )
        with mosquitto() as broker:
            config = config_from_dict(
                {
                    "broker": {"port": broker.port, "client_id": "bench-ingest"},
                    "database": {"path": str(tmp / "aggregator.db")},
                    "keys": {"key_file": str(agg_key_file)},
                    "log_level": "warning",
                }
            )
            services = build_services(config)
            for s, k in keys.items():
                services.registry.enrol(s, public_key_hex(k))
            split = stage_split(
                tmp,
                services.registry.keyring(),
                {s: Signer(k) for s, k in keys.items()},
                per_batch,
                200 if args.quick else 2000,
            )
            ingest = services.ingest
            assert ingest is not None
            ingest.start()
            if not ingest.wait_connected(10):
                raise SystemExit("ingest did not connect")
            gen = LoadGen(
                [
                    "--port",
                    str(broker.port),
                    "--keys",
                    str(tmp / "keys.json"),
                    "--per-batch",
                    str(per_batch),
                    "--burst-batches",
                    str(burst_batches),
                    "--bursts",
                    str(runs),
                    "--rate-batches",
                    *map(str, rate_batches),
                ]
            )
            try:
                warm = gen.cmd("warm")
                if not warm["all_receipted"]:
                    raise SystemExit(f"warm-up not receipted: {warm}")
                rates, cpus, gens = [], [], []
                for _ in range(runs):
                    sampler = ProcSampler().start()
                    r, g = watch_burst(ingest, gen, burst_batches * per_batch)
                    ps = sampler.stop()
                    rates.append(r)
                    cpus.append(ps.cpu_pct)
                    gens.append(g)
                lags = []
                for f in rate_targets:
                    lags.append(gen.cmd(f"rate {TARGET * f / per_batch} {rate_secs}"))
                snap = ingest.stats.snapshot()
            finally:
                gen.close()
                ingest.stop()
                services.storage.close()
    thr = median(rates)
    fig["readings_per_s"] = thr
    fig["ingest_cpu_pct"] = median(cpus)
    fig["duplicates_dropped"] = snap["duplicates"]
    fig["rejected"] = sum(snap["rejected"].values())
    fig["all_receipted"] = all(g["all_receipted"] for g in gens)
    fig["generator_publish_readings_per_s"] = median([g["readings"] / g["publish_s"] for g in gens])
    rows.append(
        Row(
            "verified + deduplicated + stored (through mosquitto)",
            thr,
            "readings/s",
            f"≥ {TARGET:,}",
            thr >= TARGET,
        )
    )
    rows.append(Row("  ingest process CPU during bursts", fig["ingest_cpu_pct"], "% core"))
    rows.append(
        Row(
            "  generator publish rate (ceiling of this measure)",
            fig["generator_publish_readings_per_s"],
            "readings/s",
        )
    )
    rows.append(
        Row("  duplicates dropped / rejected", f"{snap['duplicates']:,} / {fig['rejected']}", "")
    )
    total = split["verify_cose_s"] + split["decode_s"] + split["checks_s"] + split["insert_s"]
    for key, label in (
        ("verify_cose_s", "COSE verify (signature, CBOR)"),
        ("decode_s", "decode (messages.decode)"),
        ("checks_s", "other checks (topic, owner, times)"),
        ("insert_s", "insert (store_batches, 100 per txn)"),
    ):
        fig[f"split_{key}"] = split[key]
        rows.append(
            Row(
                f"  CPU per 100k readings: {label}",
                split[key],
                "s",
                f"{100 * split[key] / total:.0f} %",
            )
        )
    fig["pipeline_readings_per_s"] = split["pipeline_readings_per_s"]
    rows.append(
        Row(
            "  in-process pipeline (verify..insert), one core",
            split["pipeline_readings_per_s"],
            "readings/s",
        )
    )
    for f, lag in zip(rate_targets, lags, strict=True):
        pct = int(f * 100)
        for q in ("p50", "p99", "max"):
            fig[f"lag_{pct}pct_{q}_ms"] = lag[f"lag_{q}_ms"]
        fig[f"lag_{pct}pct_all_receipted"] = lag["all_receipted"]
        offered = lag["readings"] / lag["publish_s"]
        rows.append(
            Row(
                f"lag at {offered:,.0f} readings/s offered: p50 / p99 / max",
                f"{lag['lag_p50_ms']:.0f} / {lag['lag_p99_ms']:.0f} / {lag['lag_max_ms']:.0f}",
                "ms",
            )
        )
    show(
        f"aggregator ingest, SQLite ({sites} sites, {per_batch} readings/batch, "
        f"median of {runs} bursts of {burst_batches:,} batches)",
        rows,
    )
    emit("ingest", fig)


if __name__ == "__main__":
    main()
