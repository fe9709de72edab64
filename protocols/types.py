"""Shared names and small value types used across the wire, the agent and the aggregator."""

from __future__ import annotations

from enum import IntEnum, StrEnum
from typing import NamedTuple

Value = float | int | bool | None
"""A reading's value: a scaled number, a flag, or None when there is nothing trustworthy."""


class Quality(IntEnum):
    """How far a reading can be trusted. The integer is the wire code (see docs/protocol.md)."""

    GOOD = 0
    STALE = 1  # the device answered, but the value has not been refreshed when it should have
    COMM_ERROR = 2  # the read failed (timeout, disconnect, exception response); value is None
    OUT_OF_RANGE = 3  # decoded, but outside the profile's valid range; value kept for diagnosis
    SENSOR_MISSING = 4  # the device returned its sentinel for "no sensor" (0x7FFF, 0xFFFF, …)
    BAD_VALUE = 5  # the registers could not be decoded (NaN float, impossible bitfield)

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")


class Reading(NamedTuple):
    """One point's value at one instant. `t` is Unix milliseconds (UTC)."""

    t: int
    device: str
    point: str
    value: Value
    quality: Quality = Quality.GOOD


class DeviceKind(StrEnum):
    """Kinds of site equipment; profiles and simulators agree on these and on point names."""

    RECTIFIER = "rectifier"
    BATTERY = "battery"
    AIRCON = "aircon"
    BREAKER = "breaker"
    METER = "meter"
    GATEWAY = "gateway"


__all__ = ["DeviceKind", "Quality", "Reading", "Value"]
