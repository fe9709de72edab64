"""The wire actions the planners ask for, as (action, params) pairs.

The names match DESIGN.md's command actions; the shell wraps a `Command` in a signed command
message (protocols/messages.py) with id, seq, lease and expiry. Times in params are Unix
milliseconds, the unit on the wire.
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple

ParamValue = float | int | bool | str | list[str] | None


class Action(StrEnum):
    BATTERY_PEAK_SHAVE = "battery.peak_shave"
    BATTERY_CHARGE = "battery.charge"
    BATTERY_AUTO = "battery.auto"
    SITE_DORMANT = "site.dormant"
    SITE_WAKE = "site.wake"


class Command(NamedTuple):
    """What to send: an action name and its params (a CBOR-friendly map)."""

    action: Action
    params: dict[str, ParamValue]


__all__ = ["Action", "Command", "ParamValue"]
