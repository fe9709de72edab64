"""Battery sizing for generated sites: enough pack for the backup, with room left to shave.

Operators size a site's batteries from its load and the backup hours it must hold, so the
reserve that keeps the backup is reachable: here the reserve SOC at the site's peak DC load (the
shared `protocols.control.reserve.reserve_soc`, with the default floor and efficiency) must not
exceed `max_reserve_pct`. A drawn pack that is too small is grown in 50 Ah steps, up to
`MAX_SITE_AH`: two 400 Ah strings in parallel (DOMAIN.md: 100–400 Ah per string; 5G sites often
carry two). The physics models one pack; a parallel string is the same voltage and twice the
ampere-hours and current limits, so `capacity_ah` stands for the strings together.
"""

from __future__ import annotations

import math

from protocols.control.reserve import reserve_soc
from simulators.physics.battery import nominal_voltage
from simulators.spec import Chemistry

STEP_AH = 50.0
MAX_STRING_AH = 400.0
MAX_SITE_AH = 2 * MAX_STRING_AH


def sized_capacity_ah(
    drawn_ah: float,
    *,
    chemistry: Chemistry,
    soh_pct: float,
    peak_load_w: float,
    backup_hours: float,
    max_reserve_pct: float,
) -> float:
    """The drawn capacity, grown until the reserve at `peak_load_w` is ≤ `max_reserve_pct`
    (at most `MAX_SITE_AH`: a site that needs more keeps the largest pack)."""
    v = nominal_voltage(chemistry)
    cap = drawn_ah
    while cap < MAX_SITE_AH and (
        reserve_soc(peak_load_w, cap * v, backup_hours=backup_hours, soh_pct=soh_pct)
        > max_reserve_pct
    ):
        cap = min(MAX_SITE_AH, (math.floor(cap / STEP_AH) + 1) * STEP_AH)
    return cap


def strings(capacity_ah: float) -> int:
    """How many parallel strings a pack of this size stands for."""
    return max(1, math.ceil(capacity_ah / MAX_STRING_AH - 1e-9))


__all__ = ["MAX_SITE_AH", "MAX_STRING_AH", "STEP_AH", "sized_capacity_ah", "strings"]
