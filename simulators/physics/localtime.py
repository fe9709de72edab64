"""Local hour of day, cheaply: the zone's UTC offset is looked up once per UTC hour.

Traffic and the outdoor temperature follow the site's local day; a fleet steps thousands of
sites, so converting through datetime on every step would dominate the run time. The traffic
curve and the climate ask for the same instant within one step, so the last answer is kept too.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, tzinfo

from protocols.clock import zone


class LocalHour:
    """`hour(t)` in [0, 24) and `day(t)` (local day number) for one time zone."""

    def __init__(self, tz: str | tzinfo | None = None) -> None:
        self._zone = tz if isinstance(tz, tzinfo) else zone(tz)
        self._utc_hour = -1
        self._offset = 0.0
        self._hour_at = math.nan
        self._hour = 0.0

    def offset(self, t: float) -> float:
        """Seconds to add to Unix time to get local wall time."""
        h = int(t // 3600)
        if h != self._utc_hour:
            off = datetime.fromtimestamp(h * 3600, UTC).astimezone(self._zone).utcoffset()
            self._offset = off.total_seconds() if off is not None else 0.0
            self._utc_hour = h
        return self._offset

    def hour(self, t: float) -> float:
        if t != self._hour_at:
            self._hour = ((t + self.offset(t)) % 86400.0) / 3600.0
            self._hour_at = t
        return self._hour

    def day(self, t: float) -> int:
        return int((t + self.offset(t)) // 86400.0)


__all__ = ["LocalHour"]
