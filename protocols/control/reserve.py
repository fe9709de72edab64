"""The backup reserve: the state of charge a site must keep to ride through an outage.

DOMAIN.md: dispatchable energy E = SOC·E_cap − E_floor − P_load·T_reserve/η. The reserve SOC is
the SOC at which E reaches zero: the floor plus the energy that carries the present load for
`backup_hours` through the discharge path's efficiency. Capacity is the pack's present capacity
(nameplate × SOH), because that is what an outage will find. The agent's interlock uses this same
function, so the planner and the interlock can never disagree about where the reserve is.
"""

from __future__ import annotations

from protocols.control.errors import ControlError

DEFAULT_BACKUP_HOURS = 3.0
DEFAULT_FLOOR_PCT = 10.0
DEFAULT_EFFICIENCY = 0.95


def usable_capacity_wh(capacity_wh: float, soh_pct: float = 100.0) -> float:
    """Nameplate capacity scaled by state of health."""
    if capacity_wh <= 0:
        raise ControlError(f"capacity must be > 0 Wh, got {capacity_wh}")
    if not 0 < soh_pct <= 100:
        raise ControlError(f"SOH must be in (0, 100] %, got {soh_pct}")
    return capacity_wh * soh_pct / 100.0


def backup_energy_wh(
    load_w: float,
    *,
    backup_hours: float = DEFAULT_BACKUP_HOURS,
    efficiency: float = DEFAULT_EFFICIENCY,
) -> float:
    """Energy drawn from the cells to carry `load_w` for `backup_hours`."""
    if not 0 < efficiency <= 1:
        raise ControlError(f"efficiency must be in (0, 1], got {efficiency}")
    if backup_hours < 0:
        raise ControlError(f"backup_hours must be >= 0, got {backup_hours}")
    return max(0.0, load_w) * backup_hours / efficiency


def reserve_soc(
    load_w: float,
    capacity_wh: float,
    *,
    backup_hours: float = DEFAULT_BACKUP_HOURS,
    floor_pct: float = DEFAULT_FLOOR_PCT,
    efficiency: float = DEFAULT_EFFICIENCY,
    soh_pct: float = 100.0,
) -> float:
    """Reserve SOC in percent (0..100): never discharge the battery below it.

    100 means the pack cannot even hold the backup: the site must not discharge at all.
    """
    cap = usable_capacity_wh(capacity_wh, soh_pct)
    if not 0 <= floor_pct <= 100:
        raise ControlError(f"floor must be in 0..100 %, got {floor_pct}")
    need = backup_energy_wh(load_w, backup_hours=backup_hours, efficiency=efficiency)
    return min(100.0, max(0.0, floor_pct + 100.0 * need / cap))


def dispatchable_wh(
    soc_pct: float,
    load_w: float,
    capacity_wh: float,
    *,
    backup_hours: float = DEFAULT_BACKUP_HOURS,
    floor_pct: float = DEFAULT_FLOOR_PCT,
    efficiency: float = DEFAULT_EFFICIENCY,
    soh_pct: float = 100.0,
) -> float:
    """Energy (Wh, from the cells) that can be discharged before reaching the reserve; >= 0."""
    cap = usable_capacity_wh(capacity_wh, soh_pct)
    floor_wh = cap * floor_pct / 100.0
    need = backup_energy_wh(load_w, backup_hours=backup_hours, efficiency=efficiency)
    return max(0.0, cap * min(max(soc_pct, 0.0), 100.0) / 100.0 - floor_wh - need)


__all__ = [
    "DEFAULT_BACKUP_HOURS",
    "DEFAULT_EFFICIENCY",
    "DEFAULT_FLOOR_PCT",
    "backup_energy_wh",
    "dispatchable_wh",
    "reserve_soc",
    "usable_capacity_wh",
]
