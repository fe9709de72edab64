"""The shaded backgrounds of the site charts: tariff periods and dormant windows.

Pure: a tariff (or a site's command log) and a time range in, bands out, all in Unix ms, so the
charts shade exactly what the tariff and the agents' acks say and the rules are tested directly.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from aggregator.storage.types import CommandRecord, CommandStatus
from protocols.control.tariff import Tariff
from protocols.messages import Action

MAX_BANDS = 2000
"""A chart over a year of 15-minute tariff changes would still stay under this; more is a bug."""


@dataclass(frozen=True, slots=True)
class Band:
    """A stretch [start_ms, end_ms) of one kind: a tariff period name, or "dormant"."""

    start_ms: int
    end_ms: int
    kind: str
    price: float | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
            "kind": self.kind,
            "price": self.price,
        }


def tariff_bands(tariff: Tariff, t0_ms: int, t1_ms: int) -> list[Band]:
    """The tariff's periods over [t0_ms, t1_ms), clipped to it (empty if the range is empty)."""
    if t1_ms <= t0_ms:
        return []
    out: list[Band] = []
    for seg in tariff.segments(t0_ms / 1000, t1_ms / 1000):
        out.append(
            Band(round(seg.start * 1000), round(seg.end * 1000), seg.period.value, seg.price)
        )
        if len(out) >= MAX_BANDS:
            break
    return out


_ENDS_DORMANCY = frozenset({Action.SITE_WAKE.value})


def dormant_windows(
    commands: Iterable[CommandRecord], t0_ms: int, t1_ms: int, now_ms: int
) -> list[Band]:
    """When the site was dormant, as far as its acknowledged commands tell, within [t0, t1).

    A window opens when an applied `site.dormant` takes effect (its ack, else its issue time) and
    closes at the first of: its `until`, the end of its lease (the agent reverts by itself), the
    next applied `site.wake` or `site.dormant` (a renewal opens the next window), or now.
    """
    applied = sorted(
        (
            c
            for c in commands
            if c.status == CommandStatus.APPLIED.value
            and (c.action == Action.SITE_DORMANT.value or c.action in _ENDS_DORMANCY)
        ),
        key=lambda c: (c.ack_ms if c.ack_ms is not None else c.issued_ms, c.seq),
    )
    out: list[Band] = []
    for i, c in enumerate(applied):
        if c.action != Action.SITE_DORMANT.value:
            continue
        start = c.ack_ms if c.ack_ms is not None else c.issued_ms
        end = min(start + int(c.lease_s * 1000), now_ms)
        until = c.params.get("until")
        if isinstance(until, int) and not isinstance(until, bool):
            end = min(end, until)
        if i + 1 < len(applied):
            nxt = applied[i + 1]
            end = min(end, nxt.ack_ms if nxt.ack_ms is not None else nxt.issued_ms)
        lo, hi = max(start, t0_ms), min(end, t1_ms)
        if hi > lo:
            if out and out[-1].end_ms >= lo:  # a renewal: one continuous window
                out[-1] = Band(out[-1].start_ms, max(hi, out[-1].end_ms), "dormant")
            else:
                out.append(Band(lo, hi, "dormant"))
    return out


__all__ = ["MAX_BANDS", "Band", "dormant_windows", "tariff_bands"]
