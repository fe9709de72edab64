"""Aggregator ingest (figure 4): verified, deduplicated, stored readings/s; CPU split; lag.

The real `aggregator.ingest.Ingest` (built by `aggregator.service.build_services`, SQLite, the
alarm monitor on its hooks, no HTTP) runs in this process; a load generator (bench/loadgen.py)
in another process publishes pre-signed telemetry batches of 1,000 enrolled sites through a
private mosquitto on loopback, QoS 1, 5 % of them sent twice (the dedupe path), at each batch
size asked for (100 readings per message, and 1,000: the agent's default batch_max_readings).

- throughput: each burst (1 M readings) is published as fast as the generator goes;
  readings/s = readings stored / time from the first message in to the last commit. Every
  site's series are created by a warm-up batch first (that happens once in a site's life).
  Ingest's own CPU per 100k readings is given too: it does not depend on how much of the two
  cores the generator, mosquitto and other work leave to ingest.
- backlog drain: the same batches queued by mosquitto in ingest's persistent session while it
  is stopped, then drained by a fresh ingest (timed from its connection to the last commit), and
  a second pass of the same batches (all duplicates: receipted, none stored). Nothing publishes
  meanwhile, so this is ingest's capacity with the generator off the cores.
- CPU split: the same kind of batches through each stage in-process, one core: COSE verify
  (`envelope.unseal`: signature + CBOR), message decode (`messages.decode`), the rest of
  `verify_message` (topic, kid owner, time window), and `store_batches` in groups of 100.
- lag: the generator paced at 50 % and 100 % of the target rate; lag = publish → signed receipt
  back at the generator (verify, store, commit, receipt), p50 / p99 / max.

    python -m bench.bench_ingest [--quick] [--runs N] [--sites 1000] [--per-batch 100 1000]
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from aggregator.config import config_from_dict
from aggregator.service import build_services, tune_gc
from aggregator.storage import VerifiedBatch, open_storage
from aggregator.verify import Window, verify_message
from bench.common import (
    REPO,
    ProcSampler,
    Row,
    cpu_seconds,
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
    """CPU seconds (of this thread, so other load does not leak in) per 100k readings in each
    stage, measured on `n_batches` fresh batches, with the cyclic GC off: each stage keeps all
    its results alive, so collections would charge one stage for another's objects (the
    process figures include the GC)."""
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
    gc.collect()
    gc.disable()

    s = time.thread_time()
    opened = [unseal(body, topic, active) for topic, body in sealed]
    t_unseal = time.thread_time() - s
    s = time.thread_time()
    for o in opened:
        messages.decode(o.payload)
    t_decode = time.thread_time() - s
    s = time.thread_time()
    verified = [
        verify_message(topic, body, registry_keyring, topics, window) for topic, body in sealed
    ]
    t_verify_all = time.thread_time() - s
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
        s = time.thread_time()
        for k in range(0, len(batches), 100):
            store.store_batches(batches[k : k + 100])
        t_insert = time.thread_time() - s
    finally:
        store.close()
        gc.enable()
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
        # 10 ms: ±0.1 % of a burst, and few GIL hand-offs taken from ingest's threads
        time.sleep(0.01)
    th.join()
    assert t_first is not None
    stored = stats.readings_stored - base_readings
    return stored / (t_last - t_first), result


def sign_backlog(
    signers: dict[str, Signer], per_batch: int, n_batches: int
) -> list[tuple[str, bytes]]:
    """`n_batches` sealed batches round-robin over the sites, seqs far above the generator's."""
    sites = sorted(signers)
    base = site_readings(per_batch)
    t0 = int(time.time() * 1000) - 600_000
    out = []
    for i in range(n_batches):
        site = sites[i % len(sites)]
        seq = 10_000_000 + i // len(sites)
        t = t0 + (i // len(sites)) * 5000
        rs = tuple(r._replace(t=t + (r.t - base[0].t)) for r in base)
        topic = DEFAULT_TOPICS.telemetry(site)
        msg = messages.TelemetryBatch(site, "backlog", seq, t, rs)
        out.append((topic, signers[site].seal_bytes(messages.encode(msg), topic)))
    return out


def publish_all(port: int, payloads: list[tuple[str, bytes]]) -> None:
    """Publish QoS 1 and wait for every PUBACK (the broker holds them all)."""
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-backlog-{port}")
    pub.max_inflight_messages_set(1000)
    pub.max_queued_messages_set(0)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    try:
        infos = [pub.publish(topic, body, qos=1) for topic, body in payloads]
        for info in infos:
            info.wait_for_publish(120)
    finally:
        pub.disconnect()
        pub.loop_stop()


def drain(config: Any, want_stored: int, want_dups: int) -> tuple[float, float, dict[str, Any]]:
    """Start a fresh ingest on the queued session; (seconds to drain, CPU s, its stats)."""
    services = build_services(config)
    ingest = services.ingest
    assert ingest is not None
    try:
        ingest.start()
        if not ingest.wait_connected(10):
            raise SystemExit("ingest did not connect")
        cpu0, start = cpu_seconds(), time.perf_counter()  # from the connection
        deadline = time.monotonic() + 600
        st = ingest.stats
        while st.batches_stored < want_stored or st.duplicates < want_dups:
            if time.monotonic() > deadline:
                raise RuntimeError(f"backlog not drained: {st.snapshot()}")
            time.sleep(0.01)
        return time.perf_counter() - start, cpu_seconds() - cpu0, st.snapshot()
    finally:
        ingest.stop()
        services.storage.close()


def backlog_figures(
    config: Any, port: int, signers: dict[str, Signer], per_batch: int, n_batches: int
) -> dict[str, float]:
    """Drain a queued backlog (ingest stopped while it was published), then the same again
    (all duplicates). Call with ingest stopped after it has connected once (the session)."""
    payloads = sign_backlog(signers, per_batch, n_batches)
    n = n_batches * per_batch
    publish_all(port, payloads)
    secs, cpu, snap = drain(config, n_batches, 0)
    if snap["readings_stored"] != n:
        raise RuntimeError(f"backlog drain stored {snap['readings_stored']} of {n}")
    publish_all(port, payloads)
    secs_dup, _, snap_dup = drain(config, 0, n_batches)
    if snap_dup["readings_stored"] != 0:
        raise RuntimeError(f"the re-sent backlog stored {snap_dup['readings_stored']} readings")
    return {
        "readings_per_s": n / secs,
        "cpu_s_per_100k": cpu * 100_000 / n,
        "duplicate_messages_per_s": n_batches / secs_dup,
    }


def burst_figures(
    ingest: Any, port: int, keys_file: Path, per_batch: int, readings: int, runs: int,
    rate_targets: list[float], rate_secs: float, seq_base: int,
) -> dict[str, Any]:  # fmt: skip
    """Bursts (and, if `rate_targets`, the paced lag runs) at one batch size."""
    burst_batches = readings // per_batch
    rate_batches = [int(TARGET * f / per_batch * rate_secs) for f in rate_targets]
    gen = LoadGen(
        ["--port", str(port), "--keys", str(keys_file), "--per-batch", str(per_batch),
         "--burst-batches", str(burst_batches), "--bursts", str(runs), "--seq-base", str(seq_base),
         "--start-ago-s", str(3600 - seq_base // 1000),
         "--rate-batches", *map(str, rate_batches)]
    )  # fmt: skip
    try:
        warm = gen.cmd("warm")
        if not warm["all_receipted"]:
            raise SystemExit(f"warm-up not receipted: {warm}")
        rates, cpus, cpu_per, gens = [], [], [], []
        for _ in range(runs):
            sampler = ProcSampler().start()
            r, g = watch_burst(ingest, gen, burst_batches * per_batch)
            ps = sampler.stop()
            rates.append(r)
            cpus.append(ps.cpu_pct)
            cpu_per.append(ps.cpu_s * 100_000 / (burst_batches * per_batch))
            gens.append(g)
        lags = [gen.cmd(f"rate {TARGET * f / per_batch} {rate_secs}") for f in rate_targets]
    finally:
        gen.close()
    return {
        "readings_per_s": median(rates),
        "cpu_pct": median(cpus),
        "cpu_s_per_100k": median(cpu_per),
        "all_receipted": all(g["all_receipted"] for g in gens),
        "generator_readings_per_s": median([g["readings"] / g["publish_s"] for g in gens]),
        "lags": lags,
    }


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--sites", type=int, default=1000)
    ap.add_argument(
        "--per-batch",
        type=int,
        nargs="+",
        default=[100, 1000],
        help="readings per message; the first size also gives the split, lag and backlog",
    )
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
    sizes: list[int] = list(args.per_batch)
    per_burst = 100_000 if args.quick else 1_000_000  # readings per burst
    rate_targets = list(args.lag_at)  # fractions of TARGET
    rate_secs = 2.0 if args.quick else 10.0
    fig: dict[str, Any] = {"sites": sites, "per_batch": sizes, "load_avg_1m": os.getloadavg()[0]}
    tune_gc()  # as `sitewatt-aggregator serve` does
    bursts: dict[int, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="sitewatt-bench-ingest-") as d:
        tmp = Path(d)
        agg_key_file = tmp / "aggregator.key"
        save_private_key(generate_key(), agg_key_file)
        keys = {f"site-{i:04d}": generate_key() for i in range(sites)}
        signers = {s: Signer(k) for s, k in keys.items()}
        keys_file = tmp / "keys.json"
        keys_file.write_text(json.dumps({s: k.private_bytes_raw().hex() for s, k in keys.items()}))
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
                tmp, services.registry.keyring(), signers, sizes[0], 200 if args.quick else 2000
            )
            ingest = services.ingest
            assert ingest is not None
            ingest.start()
            try:
                if not ingest.wait_connected(10):
                    raise SystemExit("ingest did not connect")
                for i, per_batch in enumerate(sizes):
                    bursts[per_batch] = burst_figures(
                        ingest, broker.port, keys_file, per_batch, per_burst, runs,
                        rate_targets if i == 0 else [], rate_secs, i * 1_000_000,
                    )  # fmt: skip
                snap = ingest.stats.snapshot()
            finally:
                ingest.stop()
                services.storage.close()
            backlog = backlog_figures(config, broker.port, signers, sizes[0], per_burst // sizes[0])
    fig["load_avg_1m_end"] = os.getloadavg()[0]
    rows: list[Row] = []
    for per_batch, b in bursts.items():
        thr = b["readings_per_s"]
        fig[f"readings_per_s_{per_batch}"] = thr
        fig[f"ingest_cpu_pct_{per_batch}"] = b["cpu_pct"]
        fig[f"ingest_cpu_s_per_100k_{per_batch}"] = b["cpu_s_per_100k"]
        fig[f"all_receipted_{per_batch}"] = b["all_receipted"]
        fig[f"generator_readings_per_s_{per_batch}"] = b["generator_readings_per_s"]
        rows.append(
            Row(
                f"verified + deduplicated + stored, {per_batch} readings/message",
                thr,
                "readings/s",
                f"≥ {TARGET:,}",
                thr >= TARGET,
            )
        )
        rows.append(Row("  ingest process CPU during bursts", b["cpu_pct"], "% core"))
        rows.append(
            Row(
                "  ingest CPU per 100k readings (its one-core ceiling)",
                f"{b['cpu_s_per_100k']:.2f} s ({100_000 / b['cpu_s_per_100k']:,.0f}/s)",
                "",
            )
        )
        rows.append(
            Row(
                "  generator publish rate (ceiling of this measure)",
                b["generator_readings_per_s"],
                "readings/s",
            )
        )
    fig["readings_per_s"] = bursts[sizes[0]]["readings_per_s"]  # the headline: first size
    fig["duplicates_dropped"] = snap["duplicates"]
    fig["rejected"] = sum(snap["rejected"].values())
    rows.append(
        Row("  duplicates dropped / rejected", f"{snap['duplicates']:,} / {fig['rejected']}", "")
    )
    fig["backlog_readings_per_s"] = backlog["readings_per_s"]
    fig["backlog_cpu_s_per_100k"] = backlog["cpu_s_per_100k"]
    fig["backlog_duplicate_messages_per_s"] = backlog["duplicate_messages_per_s"]
    rows.append(
        Row(
            f"queued backlog drained (nothing publishing), {sizes[0]} readings/message",
            backlog["readings_per_s"],
            "readings/s",
            f"≥ {TARGET:,}",
            backlog["readings_per_s"] >= TARGET,
        )
    )
    rows.append(Row("  ingest CPU per 100k readings", backlog["cpu_s_per_100k"], "s"))
    rows.append(
        Row(
            "  the same backlog again (all duplicates)",
            backlog["duplicate_messages_per_s"],
            "messages/s",
        )
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
    for f, lag in zip(rate_targets, bursts[sizes[0]]["lags"], strict=True):
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
        f"aggregator ingest, SQLite ({sites} sites, median of {runs} bursts of "
        f"{per_burst:,} readings; load average {fig['load_avg_1m']:.1f} → "
        f"{fig['load_avg_1m_end']:.1f})",
        rows,
    )
    emit("ingest", fig)


if __name__ == "__main__":
    main()
