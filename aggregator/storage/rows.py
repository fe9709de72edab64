"""What the SQL backends share, with no SQL in it: how a reading is encoded into a row (and back)
and how a row becomes a record. Both schemas keep the same columns in the same order for it.

A reading's value is stored as a float (or NULL) and its quality as an integer whose low byte is
the `protocols.types.Quality` code; bit 8 (`BOOL_FLAG`) marks a value that was a bool.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from itertools import compress, repeat
from operator import is_
from typing import Any, cast

from aggregator.storage.rollup import ROLLED_QUALITIES, Rolled
from aggregator.storage.types import CommandRecord, SiteInfo, SiteState
from protocols.types import Quality, Value

BOOL_FLAG = 0x100  # set in `readings.quality` when the value was a bool
QUALITY_MASK = 0xFF
_ROLLED = frozenset(int(q) for q in ROLLED_QUALITIES)
_ROLLED_CODES = _ROLLED | {q | BOOL_FLAG for q in _ROLLED}
_QUALITIES = {int(q): q for q in Quality}
_FLOAT = {float}
_NONE = type(None)


def is_rolled(value: float | None, quality: int) -> bool:
    """Whether a stored reading counts in the rollups (a value, of good or stale quality)."""
    return value is not None and quality & QUALITY_MASK in _ROLLED


def encode(
    sids: Sequence[int],
    ts: Sequence[int],
    values: Sequence[Value],
    qualities: Sequence[Quality],
) -> tuple[list[float | None], list[int], Rolled]:
    """One batch's columns as stored: (values, quality codes, the columns the rollups take).

    This is the ingest hot path: every per-reading step is a C iterator; Python loops per
    reading only for a batch holding bools or readings without a value.
    """
    types = set(map(type, values))
    quals = list(map(int, qualities))
    if bool in types:
        for i in compress(range(len(values)), map(is_, map(type, values), repeat(bool))):
            quals[i] |= BOOL_FLAG
    vals: list[float | None]
    if _NONE in types:
        vals = [None if v is None else float(v) for v in values]
    elif types == _FLOAT:
        vals = list(cast(Sequence[float], values))
    else:
        vals = list(map(float, cast(Sequence[float], values)))
    if _NONE not in types and set(quals).issubset(_ROLLED_CODES):
        return vals, quals, (sids, ts, cast(list[float], vals))
    keep = [is_rolled(v, q) for v, q in zip(vals, quals, strict=True)]
    rolled = (
        list(compress(sids, keep)),
        list(compress(ts, keep)),
        cast(list[float], list(compress(vals, keep))),
    )
    return vals, quals, rolled


def decode(value: float | None, quality: int) -> tuple[Value, Quality]:
    """A stored (value, quality code) as the reading's value and quality."""
    q = _QUALITIES.get(quality & QUALITY_MASK, Quality.BAD_VALUE)
    if value is not None and quality & BOOL_FLAG:
        return bool(value), q
    return value, q


def dump_json(value: dict[str, Any]) -> str:
    """The one JSON form of a stored map (devices, params, read-back): keys sorted."""
    return json.dumps(value, sort_keys=True)


def site_info(row: Sequence[Any]) -> SiteInfo:
    site, name, region, tz, tariff, created_ms, enabled = row
    return SiteInfo(site, name, region, tz, tariff, created_ms, bool(enabled))


def site_state(row: Sequence[Any]) -> SiteState:
    site, online, boot, version, devices, last_seen, birth, death = row
    return SiteState(
        site, bool(online), boot, version, dict(json.loads(devices)), last_seen, birth, death
    )


def command(row: Sequence[Any]) -> CommandRecord:
    (cid, site, seq, action, params, issued, expires, lease, by, sent, status, ack, reason,
     readback, rtt) = row  # fmt: skip
    return CommandRecord(
        cid,
        site,
        seq,
        action,
        json.loads(params),
        issued,
        expires,
        lease,
        by,
        sent,
        status,
        ack,
        reason,
        None if readback is None else json.loads(readback),
        rtt,
    )


__all__ = [
    "BOOL_FLAG",
    "QUALITY_MASK",
    "command",
    "decode",
    "dump_json",
    "encode",
    "is_rolled",
    "site_info",
    "site_state",
]
