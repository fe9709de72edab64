"""15-minute rollups, computed incrementally: pure accumulation and merging, no I/O.

Stored readings are folded into per-(series, bucket) accumulators in memory, which the storage
merges into the `rollups` table every few seconds with one upsert per accumulator — never one
per reading. `merge` is the same rule in Python that the upsert applies in SQL, so a bucket
filled by many groups (or by a historical batch arriving days later) ends up as if computed in
one pass.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from itertools import repeat

from aggregator.storage.types import RollupRow
from protocols.types import Quality

DAY_MS = 86_400_000
BUCKET_MS = 15 * 60 * 1000
ROLLED_QUALITIES = frozenset({Quality.GOOD, Quality.STALE})


def bucket_of(t_ms: int, bucket_ms: int = BUCKET_MS) -> int:
    """Start of the bucket holding `t_ms` (buckets are aligned to the Unix epoch, UTC)."""
    return t_ms - t_ms % bucket_ms


class Acc:
    """A bucket's running statistics. Mutable and slotted: the ingest hot path makes many."""

    __slots__ = ("first", "first_ms", "last", "last_ms", "max", "min", "n", "total")

    def __init__(self, t_ms: int, value: float) -> None:
        self.n = 1
        self.min = value
        self.max = value
        self.total = value
        self.first = value
        self.first_ms = t_ms
        self.last = value
        self.last_ms = t_ms

    def add(self, t_ms: int, value: float) -> None:
        self.n += 1
        self.total += value
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value
        if t_ms < self.first_ms:
            self.first, self.first_ms = value, t_ms
        if t_ms >= self.last_ms:
            self.last, self.last_ms = value, t_ms

    def merge(self, other: Acc) -> None:
        """Fold `other` (same series and bucket) into this one."""
        self.n += other.n
        self.total += other.total
        if other.min < self.min:
            self.min = other.min
        if other.max > self.max:
            self.max = other.max
        if other.first_ms < self.first_ms:
            self.first, self.first_ms = other.first, other.first_ms
        if other.last_ms >= self.last_ms:
            self.last, self.last_ms = other.last, other.last_ms

    def copy(self) -> Acc:
        new = Acc(self.first_ms, self.first)
        new.n, new.min, new.max, new.total = self.n, self.min, self.max, self.total
        new.last, new.last_ms = self.last, self.last_ms
        return new

    def row(self, bucket_ms: int) -> RollupRow:
        return RollupRow(
            bucket_ms,
            self.n,
            self.min,
            self.max,
            self.total / self.n,
            self.first,
            self.last,
            self.first_ms,
            self.last_ms,
        )


AccKey = tuple[int, int]
"""(series id, bucket start ms)."""
Rolled = tuple[Sequence[int], Sequence[int], Sequence[float]]
"""Columns (series ids, times, values) of stored readings that go into the rollups."""


def merged(base: dict[AccKey, Acc], extra: dict[AccKey, Acc]) -> dict[AccKey, Acc]:
    """`base` with `extra` folded in, leaving both untouched."""
    out = dict(base)
    for key, acc in extra.items():
        cur = out.get(key)
        if cur is None:
            out[key] = acc
        else:
            cur = cur.copy()
            cur.merge(acc)
            out[key] = cur
    return out


def merge_into(base: dict[AccKey, Acc], extra: dict[AccKey, Acc]) -> None:
    """Fold `extra` into `base` in place."""
    for key, acc in extra.items():
        cur = base.get(key)
        if cur is None:
            base[key] = acc
        else:
            cur.merge(acc)


def fold(accs: dict[AccKey, Acc], rolled: Iterable[Rolled]) -> None:
    """Fold columns of readings (series ids, times, values) into per-(series, bucket)
    accumulators, in place (`Acc.add` inlined: this runs once per stored reading)."""
    get = accs.get
    for sids, ts, vals in rolled:
        if not ts:
            continue
        b0 = bucket_of(min(ts))
        if b0 == bucket_of(max(ts)):  # the usual batch: one bucket
            keys: Iterable[AccKey] = zip(sids, repeat(b0))
        else:
            keys = [(sid, t - t % BUCKET_MS) for sid, t in zip(sids, ts, strict=True)]
        for key, t, v in zip(keys, ts, vals, strict=True):
            a = get(key)
            if a is None:
                accs[key] = Acc(t, v)
                continue
            a.n += 1
            a.total += v
            if v < a.min:
                a.min = v
            if v > a.max:
                a.max = v
            if t < a.first_ms:
                a.first, a.first_ms = v, t
            if t >= a.last_ms:
                a.last, a.last_ms = v, t


def merge(a: RollupRow, b: RollupRow) -> RollupRow:
    """Two rollups of the same series as one (for the same bucket, or into a coarser step).

    The bucket is `a`'s; ties on time keep `a`'s first and `b`'s last, as the SQL upsert does.
    """
    n = a.n + b.n
    first, first_ms = (b.first, b.first_ms) if b.first_ms < a.first_ms else (a.first, a.first_ms)
    last, last_ms = (b.last, b.last_ms) if b.last_ms >= a.last_ms else (a.last, a.last_ms)
    return RollupRow(
        a.bucket_ms,
        n,
        min(a.min, b.min),
        max(a.max, b.max),
        (a.mean * a.n + b.mean * b.n) / n,
        first,
        last,
        first_ms,
        last_ms,
    )


def coarsen(rows: Iterable[RollupRow], step_ms: int) -> list[RollupRow]:
    """15-minute rows (sorted by bucket) regrouped into buckets of `step_ms` (a multiple)."""
    out: list[RollupRow] = []
    for row in rows:
        start = bucket_of(row.bucket_ms, step_ms)
        if out and out[-1].bucket_ms == start:
            out[-1] = merge(out[-1], row)
        else:
            out.append(row._replace(bucket_ms=start))
    return out


def view(
    stored: Iterable[RollupRow],
    pending: Mapping[int, RollupRow],
    t0: int,
    step_ms: int,
    *,
    limit: int,
    offset: int,
) -> list[RollupRow]:
    """What a rollup query answers: the 15-minute rows read from the database with the ones
    still in memory (`pending`, by bucket) merged in, regrouped to `step_ms`, keeping buckets
    that end after `t0`, then paged."""
    rows = {r.bucket_ms: r for r in stored}
    for bucket, row in pending.items():
        cur = rows.get(bucket)
        rows[bucket] = row if cur is None else merge(cur, row)
    coarse = coarsen((rows[b] for b in sorted(rows)), step_ms)
    coarse = [r for r in coarse if r.bucket_ms + step_ms > t0]
    return coarse[offset : offset + limit]


def step_of(step_s: float) -> int:
    """A query step in ms; ValueError unless it is a positive multiple of the bucket."""
    step_ms = int(step_s * 1000)
    if step_ms <= 0 or step_ms % BUCKET_MS:
        raise ValueError(f"step {step_s} s is not a positive multiple of {BUCKET_MS // 1000} s")
    return step_ms


__all__ = [
    "BUCKET_MS",
    "DAY_MS",
    "ROLLED_QUALITIES",
    "Acc",
    "AccKey",
    "Rolled",
    "bucket_of",
    "coarsen",
    "fold",
    "merge",
    "merge_into",
    "merged",
    "step_of",
    "view",
]
