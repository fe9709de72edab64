"""Pure summaries the API shows: a site's key points, its active mode, query limits.

No I/O: each function takes what storage returned and the time, so the rules are tested directly
and the dashboard (a later issue) can reuse them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from aggregator.storage.types import CommandRecord, CommandStatus
from protocols.messages import Action
from protocols.types import Quality, Reading

# --- key points ---------------------------------------------------------------------------------

_TRUSTED = frozenset({Quality.GOOD, Quality.STALE})


@dataclass(frozen=True, slots=True)
class KeyPoints:
    """What an operator looks at first, from the site's newest readings (None: not known)."""

    load_w: float | None = None
    """Telecom DC load: rectifier load current × DC voltage, summed over rectifier plants."""
    grid_import_w: float | None = None
    """Grid meter import power, summed over meters."""
    soc: float | None = None
    """Battery state of charge (%), averaged over batteries."""
    room_temp_c: float | None = None
    """Room temperature (°C), the hottest air-conditioned room."""


def _values(latest: Mapping[tuple[str, str], Reading], point: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for (device, name), r in latest.items():
        if name == point and r.quality in _TRUSTED and r.value is not None:
            out[device] = float(r.value)
    return out


def key_points(latest: Mapping[tuple[str, str], Reading]) -> KeyPoints:
    """The key points from a site's latest readings, keyed (device, point)."""
    currents = _values(latest, "load_current")
    volts = _values(latest, "dc_voltage")
    loads = [abs(i) * abs(volts[d]) for d, i in currents.items() if d in volts]
    imports = list(_values(latest, "import_power").values())
    socs = list(_values(latest, "soc").values())
    temps = list(_values(latest, "room_temp").values())
    return KeyPoints(
        load_w=sum(loads) if loads else None,
        grid_import_w=sum(imports) if imports else None,
        soc=sum(socs) / len(socs) if socs else None,
        room_temp_c=max(temps) if temps else None,
    )


# --- active mode -------------------------------------------------------------------------------


class Mode(StrEnum):
    NORMAL = "normal"
    PEAK_SHAVING = "peak-shaving"
    CHARGING = "charging"
    DORMANT = "dormant"


MODE_OF_ACTION: Mapping[str, Mode] = {
    Action.BATTERY_PEAK_SHAVE.value: Mode.PEAK_SHAVING,
    Action.BATTERY_CHARGE.value: Mode.CHARGING,
    Action.BATTERY_AUTO.value: Mode.NORMAL,
    Action.SITE_DORMANT.value: Mode.DORMANT,
    Action.SITE_WAKE.value: Mode.NORMAL,
}
"""Actions that set the site's mode; setpoint, breaker and ECO commands leave it as it is."""


def active_mode(commands: Iterable[CommandRecord], now_ms: int) -> Mode:
    """The mode set by the newest applied mode command, if its lease (or window) still runs.

    A lapsed lease sends the agent back to its safe default, which is normal operation.
    """
    newest: CommandRecord | None = None
    for c in commands:
        if c.status != CommandStatus.APPLIED.value or c.action not in MODE_OF_ACTION:
            continue
        if newest is None or (c.issued_ms, c.seq) > (newest.issued_ms, newest.seq):
            newest = c
    if newest is None:
        return Mode.NORMAL
    start = newest.ack_ms if newest.ack_ms is not None else newest.issued_ms
    if now_ms >= start + newest.lease_s * 1000:
        return Mode.NORMAL
    until = newest.params.get("until")
    if newest.action == Action.SITE_DORMANT.value and isinstance(until, int) and now_ms >= until:
        return Mode.NORMAL
    return MODE_OF_ACTION[newest.action]


# --- history query limits ------------------------------------------------------------------------

ROLLUP_STEP_S = 900
"""Rollups are kept per 15 minutes; a coarser step is a multiple of it."""
DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000
MAX_RAW_RANGE_S = 7 * 86_400
MAX_ROLLUP_RANGE_S = 400 * 86_400
DEFAULT_RANGE_S = 86_400


def readings_query_problems(t0_ms: int, t1_ms: int, step_s: int | None, limit: int) -> list[str]:
    """Why a readings query is refused (empty if it is fine), in words an operator can act on."""
    problems: list[str] = []
    if t1_ms <= t0_ms:
        problems.append(f"'to' ({t1_ms}) must be after 'from' ({t0_ms})")
    span_s = (t1_ms - t0_ms) / 1000
    if step_s is None:
        if span_s > MAX_RAW_RANGE_S:
            problems.append(
                f"raw readings span at most {MAX_RAW_RANGE_S // 86_400} days "
                f"(asked {span_s / 86_400:.1f}); use step={ROLLUP_STEP_S} or coarser for longer"
            )
    else:
        if step_s <= 0 or step_s % ROLLUP_STEP_S:
            problems.append(f"step must be a positive multiple of {ROLLUP_STEP_S} s (15 minutes)")
        if span_s > MAX_ROLLUP_RANGE_S:
            problems.append(
                f"rollups span at most {MAX_ROLLUP_RANGE_S // 86_400} days "
                f"(asked {span_s / 86_400:.1f})"
            )
    if not 1 <= limit <= MAX_LIMIT:
        problems.append(f"limit must be within 1..{MAX_LIMIT} (asked {limit})")
    return problems


__all__ = [
    "DEFAULT_LIMIT",
    "DEFAULT_RANGE_S",
    "MAX_LIMIT",
    "MAX_RAW_RANGE_S",
    "MAX_ROLLUP_RANGE_S",
    "MODE_OF_ACTION",
    "ROLLUP_STEP_S",
    "KeyPoints",
    "Mode",
    "active_mode",
    "key_points",
    "readings_query_problems",
]
