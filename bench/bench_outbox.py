"""Outbox (figure 3): append rate, drain rate, a site's 24 h backlog, 100 sites' 1 h backlogs.

- append: `Outbox.append` of one poll cycle (150 readings) and of 1,000 readings per call, with
  the default bounds (200 MB, 7 days) enforced, WAL, synchronous=NORMAL — readings/s.
- drain: the real `agent.delivery.Delivery` (batches of 500 readings, the config default; 32 in
  flight) forms, signs and publishes QoS 1 through a private mosquitto on loopback to a receipting
  subscriber in another process (tests/support/receiver.py: verifies, decodes, stores each batch
  in its own SQLite, then receipts it); the agent deletes each batch on its signed receipt.
  Timed from `Delivery.run()` (connect, subscribe, birth, the aggregator's retained state) to an
  empty outbox. The drain jitter is set to 0 here: it is a deliberate, configured wait.
- 24 h backlog of one site: 150 points polled every 5 s are 2,592,000 readings a day if every
  value is sent. Report-by-exception (deadbands, 15-min heartbeat) leaves about 1 in 5 on a
  typical site (bench_footprint measures the ratio on the simulated site), so a day's backlog is
  taken as 518,400 readings (6 readings/s); the full 2.59 M is also timed with `--full-day`.
- fleet: 100 agents in one process (one event loop, one outbox and MQTT connection each), each
  with 1 h of backlog (21,600 readings), the link returning for all at once, each waiting a random
  jitter of up to 10 s (the config default) before draining: time until every outbox is empty.

    python -m bench.bench_outbox [--quick] [--runs N] [--full-day] [--sites 100]
"""

from __future__ import annotations

import asyncio
import random
import shutil
import tempfile
import time
from pathlib import Path

from agent.delivery import Delivery, DeliverySettings
from agent.delivery_rules import DeliveryPolicy
from agent.identity import SiteIdentity
from agent.mqtt_link import LinkSettings
from agent.outbox import Outbox, OutboxLimits
from bench.common import (
    ProcSampler,
    Row,
    emit,
    median,
    mosquitto,
    parser,
    receiver,
    runs_of,
    show,
    site_points,
)
from protocols.clock import SystemClock
from protocols.envelope import Keyring, Signer
from protocols.keys import generate_key
from protocols.types import Reading

DAY_MS = 86_400_000
POINTS = 150
POLL_S = 5
RBE_SHARE = 0.2  # readings kept by report-by-exception (see docstring)
DAY_ALL = POINTS * (86_400 // POLL_S)  # 2,592,000
DAY_RBE = int(DAY_ALL * RBE_SHARE)  # 518,400
BATCH = 500
WINDOW = 32

APPEND_TARGET = 100_000
DRAIN_TARGET = 50_000
DAY_TARGET_S = 10.0


def backlog_readings(n: int, span_ms: int, t0: int = 1_750_000_000_000) -> list[Reading]:
    """`n` readings spread evenly over `span_ms`, points in a scattered order (as report-by-
    exception emits them), values in range at each point's resolution."""
    from bench.common import _sample_value

    pts = site_points()
    out = []
    for i in range(n):
        dev, p = pts[(i * 7919) % len(pts)]
        out.append(Reading(t0 + i * span_ms // n, dev, p.name, _sample_value(p, i)))
    return out


def fill(path: Path, n: int, span_ms: int) -> None:
    """A template outbox holding `n` pending readings (copied for each run)."""
    rs = backlog_readings(n, span_ms)
    with Outbox(path) as ob:
        for k in range(0, n, 5000):
            ob.append(rs[k : k + 5000])


# -- append ----------------------------------------------------------------------------------


def append_rate(tmp: Path, per_call: int, total: int) -> float:
    path = tmp / f"append-{per_call}.db"
    rs = backlog_readings(per_call, per_call * 100)
    with Outbox(path, limits=OutboxLimits()) as ob:
        ob.append(rs)  # create pages, warm caches
        calls = max(1, total // per_call)
        t0 = time.perf_counter()
        for _ in range(calls):
            ob.append(rs)
        elapsed = time.perf_counter() - t0
    for f in tmp.glob(f"append-{per_call}.db*"):
        f.unlink()
    return calls * per_call / elapsed


# -- drain -----------------------------------------------------------------------------------


def _delivery(
    port: int, site: str, key: Signer, agg: Keyring, outbox: Outbox, jitter: float, seed: int
) -> Delivery:
    settings = DeliverySettings(
        link=LinkSettings(host="127.0.0.1", port=port, client_id=f"bench-{site}", keepalive_s=30),
        policy=DeliveryPolicy(
            batch_max_readings=BATCH,
            window=WINDOW,
            jitter_max_s=jitter,
            receipt_timeout_s=60.0,
        ),
        idle_tick_s=0.2,
    )
    return Delivery(
        settings, SiteIdentity(site, key, agg), outbox, SystemClock(), rng=random.Random(seed)
    )


async def drain_sites(
    port: int, dbs: dict[str, Path], keys: dict[str, Signer], agg: Keyring, jitter: float
) -> tuple[float, dict[str, float]]:
    """Run one Delivery per site until every outbox is empty; wall seconds, and per site."""
    outboxes = {
        s: Outbox(p, limits=OutboxLimits(max_bytes=None, max_age_s=None)) for s, p in dbs.items()
    }
    deliveries = {
        s: _delivery(port, s, keys[s], agg, outboxes[s], jitter, i) for i, s in enumerate(dbs)
    }
    t0 = time.perf_counter()
    tasks = [asyncio.create_task(d.run()) for d in deliveries.values()]
    done: dict[str, float] = {}
    try:
        while len(done) < len(dbs):
            await asyncio.sleep(0.02)
            for s, ob in outboxes.items():
                if s not in done and ob.pending_readings() == 0 and not ob.batches(limit=1):
                    done[s] = time.perf_counter() - t0
            for t in tasks:
                if t.done() and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
        elapsed = time.perf_counter() - t0
    finally:
        for d in deliveries.values():
            await d.stop()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
        for ob in outboxes.values():
            ob.close()
    return elapsed, done


def drain_run(
    tmp: Path, template: Path, sites: int, jitter: float, tag: str
) -> tuple[float, float, float, float]:
    """(wall s, agent CPU %, receiver CPU %, readings stored at the receiver) of one drain."""
    work = tmp / tag
    work.mkdir()
    keys = {f"site-{i:04d}": generate_key() for i in range(sites)}
    agg_key = generate_key()
    dbs = {}
    for s in keys:
        dbs[s] = work / f"{s}.db"
        shutil.copyfile(template, dbs[s])
    with mosquitto() as broker, receiver(broker, work, agg_key, keys) as rx:
        rx_sampler = ProcSampler(rx.pid).start()
        me = ProcSampler().start()
        elapsed, _ = asyncio.run(
            drain_sites(
                broker.port,
                dbs,
                {s: Signer(k) for s, k in keys.items()},
                Keyring([agg_key.public_key()]),
                jitter,
            )
        )
        agent = me.stop()
        rxs = rx_sampler.stop()
        stored = rx.stored_readings()
    shutil.rmtree(work, ignore_errors=True)
    return elapsed, agent.cpu_pct, rxs.cpu_pct, stored


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument(
        "--full-day",
        action="store_true",
        help="also drain a day without report-by-exception (2.59 M readings)",
    )
    ap.add_argument("--sites", type=int, default=None, help="fleet size (default 100, quick 10)")
    args = ap.parse_args()
    runs = runs_of(args, 3)
    rows: list[Row] = []
    fig: dict[str, float | int] = {}
    with tempfile.TemporaryDirectory(prefix="sitewatt-bench-outbox-") as d:
        tmp = Path(d)
        total = 60_000 if args.quick else 600_000
        for per_call in (150, 1000):
            r = median([append_rate(tmp, per_call, total) for _ in range(runs)])
            fig[f"append_{per_call}_readings_per_s"] = r
            rows.append(
                Row(
                    f"append, {per_call} readings per call",
                    r,
                    "readings/s",
                    f"≥ {APPEND_TARGET:,}",
                    r >= APPEND_TARGET,
                )
            )

        day_n = 21_600 if args.quick else DAY_RBE
        template = tmp / "day.db"
        fill(template, day_n, DAY_MS if not args.quick else DAY_MS // 24)
        res = [drain_run(tmp, template, 1, 0.0, f"day{i}") for i in range(runs)]
        wall = median([r[0] for r in res])
        fig["backlog_readings"] = day_n
        fig["drain_s"] = wall
        fig["drain_readings_per_s"] = day_n / wall
        fig["drain_agent_cpu_pct"] = median([r[1] for r in res])
        fig["drain_receiver_cpu_pct"] = median([r[2] for r in res])
        fig["drain_stored_ok"] = int(all(r[3] == day_n for r in res))
        label = "24 h" if not args.quick else "1 h (quick)"
        rows.append(
            Row(
                "drain: sign + publish + receipt",
                day_n / wall,
                "readings/s",
                f"≥ {DRAIN_TARGET:,}",
                day_n / wall >= DRAIN_TARGET,
            )
        )
        rows.append(
            Row(
                f"drain {label} backlog, one site ({day_n:,} readings)",
                wall,
                "s",
                f"≤ {DAY_TARGET_S:g} s" if not args.quick else "",
                wall <= DAY_TARGET_S if not args.quick else None,
            )
        )
        rows.append(Row("  agent CPU while draining", fig["drain_agent_cpu_pct"], "% core"))
        rows.append(Row("  receiver CPU while draining", fig["drain_receiver_cpu_pct"], "% core"))
        template.unlink()

        if args.full_day:
            fill(template, DAY_ALL, DAY_MS)
            w, _, _, _ = drain_run(tmp, template, 1, 0.0, "full")
            fig["drain_full_day_s"] = w
            fig["drain_full_day_readings_per_s"] = DAY_ALL / w
            rows.append(
                Row(
                    f"drain 24 h, every value ({DAY_ALL:,} readings)",
                    w,
                    "s",
                    f"{DAY_ALL / w:,.0f} readings/s",
                )
            )
            template.unlink()

        sites = args.sites or (10 if args.quick else 100)
        hour_n = DAY_RBE // 24
        jitter = 2.0 if args.quick else 10.0
        fill(template, hour_n, DAY_MS // 24)
        fleet = [drain_run(tmp, template, sites, jitter, f"fleet{i}") for i in range(runs)]
        wall = median([r[0] for r in fleet])
        fig["fleet_sites"] = sites
        fig["fleet_jitter_s"] = jitter
        fig["fleet_drain_s"] = wall
        fig["fleet_readings_per_s"] = sites * hour_n / wall
        fig["fleet_agent_cpu_pct"] = median([r[1] for r in fleet])
        fig["fleet_receiver_cpu_pct"] = median([r[2] for r in fleet])
        fig["fleet_stored_ok"] = int(all(r[3] == sites * hour_n for r in fleet))
        rows.append(
            Row(
                f"{sites} sites x 1 h backlog ({hour_n:,} each), jitter ≤ {jitter:g} s",
                wall,
                "s",
                f"{sites * hour_n / wall:,.0f} readings/s",
            )
        )
        rows.append(Row("  agents' process CPU", fig["fleet_agent_cpu_pct"], "% core"))
        rows.append(Row("  receiver CPU", fig["fleet_receiver_cpu_pct"], "% core"))
    show(
        f"outbox (median of {runs} runs)",
        rows,
        note="every drained reading was stored once at the receiver: "
        f"{bool(fig['drain_stored_ok'] and fig['fleet_stored_ok'])}",
    )
    emit("outbox", fig)


if __name__ == "__main__":
    main()
