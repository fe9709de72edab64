"""Aggregator storage throughput: readings/s through `SqliteStorage.store_batches`.

A fleet of sites each sending batches of one reading per point; groups of batches go into one
transaction each, as ingest does. Prints readings/s for the insert path alone (batches, readings,
rollups, losses, last-seen), which must leave ample headroom over the ingest target of 100k/s.

    .venv/bin/python -m bench.bench_aggregator_storage [--sites 1000] [--batches 20000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from aggregator.storage import VerifiedBatch, open_storage
from protocols.types import Reading


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sites", type=int, default=1000)
    ap.add_argument("--points", type=int, default=150)
    ap.add_argument("--batches", type=int, default=20_000)
    ap.add_argument("--group", type=int, default=40, help="batches per transaction")
    args = ap.parse_args()
    t0 = 1_700_000_000_000
    names = [(f"dev{p % 5}", f"point{p}") for p in range(args.points)]
    with tempfile.TemporaryDirectory() as tmp:
        store = open_storage(Path(tmp) / "bench.db")
        batches = []
        for i in range(args.batches):
            site = f"site{i % args.sites:05d}"
            seq = i // args.sites + 1
            t = t0 + seq * 5_000
            rs = [Reading(t, d, p, float(i % 97) + j) for j, (d, p) in enumerate(names)]
            batches.append(VerifiedBatch(site, seq, "b", t, t + 10, False, rs))
        # the first round creates every series (once in a site's life): timed apart
        warm = time.perf_counter()
        for k in range(0, args.sites, args.group):
            store.store_batches(batches[k : min(k + args.group, args.sites)])
        warm = time.perf_counter() - warm
        batches = batches[args.sites :]
        n = sum(len(b.readings) for b in batches)
        start = time.perf_counter()
        for k in range(0, len(batches), args.group):
            store.store_batches(batches[k : k + args.group])
        elapsed = time.perf_counter() - start
        store.close()
    print(
        f"storage: {n:,} readings in {len(batches):,} batches ({args.sites} sites x "
        f"{args.points} points, {args.group} batches/transaction): {elapsed:.2f} s, "
        f"{n / elapsed:,.0f} readings/s (first batch of each site, creating its series: "
        f"{args.sites * args.points / warm:,.0f} readings/s)"
    )


if __name__ == "__main__":
    main()
