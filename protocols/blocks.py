"""Block planning: read a device's points in as few Modbus requests as the device allows.

A request reads one contiguous run of one table, at most `max_block` registers (`max_coil_block`
bits), and may span unmapped addresses between points only up to `max_gap` in a row (devices that
answer an unmapped address with an exception set `max_gap = 0`). A request never splits a point.

Why greedy is optimal. Sort a table's points by address. Any request covers a consecutive run of
them, so a plan is a partition of the sorted points into runs, each *feasible* (span within the
limit, every internal gap within `max_gap`). Feasibility is inherited by sub-runs. Greedy opens a
request at the first uncovered point and extends it while the run stays feasible. By induction its
k-th request ends at or after the k-th request of any plan: if that plan's k-th request is the run
[p..q], greedy's k-th request starts at some g with p <= g <= q + 1 (its (k-1)-th ended no earlier),
and [g..q] is a sub-run of a feasible run, so greedy reaches q too. Hence greedy uses no more
requests than any plan. tests/protocols/test_blocks.py checks it against brute force.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from protocols.codec import BlockDecoder
from protocols.errors import ConfigError
from protocols.profiles import PointDef, Profile, Table
from protocols.types import Quality, Reading, Value


@dataclass(frozen=True, slots=True)
class ReadBlock:
    """One read request: `count` registers (or bits) of `table` from `start`, and its points."""

    table: Table
    start: int
    count: int
    points: tuple[PointDef, ...]
    _decoder: BlockDecoder = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        decoder = BlockDecoder(self.table, self.start, self.count, self.points)
        object.__setattr__(self, "_decoder", decoder)

    @property
    def end(self) -> int:
        return self.start + self.count

    def decode(self, values: Sequence[int] | Sequence[bool]) -> list[tuple[str, Value, Quality]]:
        """(point, value, quality) for every point of the block, from the words (bits) read."""
        return self._decoder.decode(values)

    def readings(
        self, values: Sequence[int] | Sequence[bool], *, t: int, device: str
    ) -> list[Reading]:
        """The block's readings at time `t` (Unix ms) for `device`."""
        return [Reading(t, device, n, v, q) for n, v, q in self._decoder.decode(values)]

    def failed(self, *, t: int, device: str) -> list[Reading]:
        """The block's readings when the request failed: no value, comm-error quality."""
        return [Reading(t, device, p.name, None, Quality.COMM_ERROR) for p in self.points]


def plan_table(
    points: Iterable[PointDef], *, table: Table, max_block: int, max_gap: int
) -> list[ReadBlock]:
    """Fewest requests covering `points` of one table (greedy; optimal, see module docstring)."""
    todo = sorted((p for p in points if p.table is table), key=lambda p: p.address)
    blocks: list[ReadBlock] = []
    run: list[PointDef] = []
    for p in todo:
        if p.width > max_block:
            raise ConfigError(f"{p.name}: {p.width} registers exceed max_block {max_block}")
        if run and (p.address - run[-1].end > max_gap or p.end - run[0].address > max_block):
            blocks.append(_block(table, run))
            run = []
        run.append(p)
    if run:
        blocks.append(_block(table, run))
    return blocks


def _block(table: Table, run: list[PointDef]) -> ReadBlock:
    start = run[0].address
    end = max(p.end for p in run)
    return ReadBlock(table, start, end - start, tuple(run))


def plan_blocks(
    points: Iterable[PointDef], *, max_block: int, max_coil_block: int, max_gap: int
) -> list[ReadBlock]:
    """Requests for points of any tables: registers limited by `max_block`, bits by coils'."""
    pts = list(points)
    blocks: list[ReadBlock] = []
    for table in Table:
        limit = max_coil_block if table.is_bits else max_block
        blocks += plan_table(pts, table=table, max_block=limit, max_gap=max_gap)
    return blocks


def plan_profile(profile: Profile, names: Iterable[str] | None = None) -> list[ReadBlock]:
    """The read plan for a profile's points (or only those named), within its device's limits."""
    pts = profile.points if names is None else [profile.point(n) for n in names]
    dev = profile.device
    return plan_blocks(
        pts, max_block=dev.max_block, max_coil_block=dev.max_coil_block, max_gap=dev.max_gap
    )


__all__ = ["ReadBlock", "plan_blocks", "plan_profile", "plan_table"]
