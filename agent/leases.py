"""Leases: every command's effect lasts only as long as the aggregator keeps renewing it.

Each applied command holds (or releases) one *lease key*: `battery`, `dormant`, `ac`,
`rectifier` or `breaker.N`. A command that moves a key away from its safe default holds the key
until `now + lease_s`; the next command on the same key renews (or replaces) it; a command that
returns the key to default (battery.auto, site.wake, breaker closed, ECO at the site's own
setting) releases it. When a lease runs out, or the aggregator goes offline, the agent applies
the key's safe default: battery auto/float, breaker closed, AC back to its default setpoint,
rectifier ECO back to the site's own setting (`interlocks.rectifier_eco_default`, off unless
configured), dormant left (site.wake). Pure: times are arguments; the command side persists the
book and acts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from protocols.messages import (
    AcSetpoint,
    BatteryAuto,
    BreakerSet,
    Charge,
    Dormant,
    Params,
    PeakShave,
    RectifierEco,
    Wake,
)

BATTERY, DORMANT, AC, RECTIFIER = "battery", "dormant", "ac", "rectifier"


def breaker_key(channel: int) -> str:
    return f"breaker.{channel}"


@dataclass(frozen=True, slots=True)
class Lease:
    """A key held by a command until `expires` (Unix seconds)."""

    key: str
    command_id: str
    seq: int
    expires: float


def effect(
    params: Params, *, ac_default_c: float, eco_default: bool = False
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(keys the command holds, keys it releases)."""
    match params:
        case PeakShave() | Charge():
            return (BATTERY,), ()
        case BatteryAuto():
            return (), (BATTERY,)
        case Dormant():
            return (DORMANT,), ()
        case Wake():
            return (), (DORMANT, AC, RECTIFIER, "breaker.*")
        case AcSetpoint(setpoint_c=sp):
            return ((AC,), ()) if sp != ac_default_c else ((), (AC,))
        case BreakerSet(channel=n, closed=closed):
            key = breaker_key(n)
            return ((), (key,)) if closed else ((key,), ())
        case RectifierEco(enabled=on):
            return ((RECTIFIER,), ()) if on != eco_default else ((), (RECTIFIER,))
    return (), ()  # pragma: no cover - Params is closed


def safe_default(key: str, *, ac_default_c: float, eco_default: bool = False) -> Params:
    """The command that returns `key` to its safe default."""
    if key == BATTERY:
        return BatteryAuto()
    if key == DORMANT:
        return Wake()
    if key == AC:
        return AcSetpoint(ac_default_c)
    if key == RECTIFIER:
        return RectifierEco(eco_default)
    if key.startswith("breaker."):
        return BreakerSet(int(key.removeprefix("breaker.")), True)
    raise ValueError(f"unknown lease key {key!r}")


@dataclass
class LeaseBook:
    """The leases in force, by key."""

    leases: dict[str, Lease] = field(default_factory=dict)

    def apply(
        self,
        params: Params,
        *,
        command_id: str,
        seq: int,
        now: float,
        lease_s: float,
        ac_default_c: float,
        eco_default: bool = False,
    ) -> None:
        """Record that a command was applied at `now`."""
        hold, release = effect(params, ac_default_c=ac_default_c, eco_default=eco_default)
        for key in release:
            if key == "breaker.*":
                for k in [k for k in self.leases if k.startswith("breaker.")]:
                    del self.leases[k]
            else:
                self.leases.pop(key, None)
        for key in hold:
            self.leases[key] = Lease(key, command_id, seq, now + lease_s)

    def lapsed(self, now: float) -> list[Lease]:
        """Leases whose time is up, soonest first (still in the book until `release`)."""
        return sorted(
            (x for x in self.leases.values() if x.expires <= now), key=lambda x: x.expires
        )

    def held(self) -> list[Lease]:
        """Every lease in force (what to undo when the aggregator goes offline)."""
        return sorted(self.leases.values(), key=lambda x: x.expires)

    def release(self, keys: Iterable[str]) -> None:
        for key in keys:
            self.leases.pop(key, None)

    def next_expiry(self) -> float | None:
        return min((x.expires for x in self.leases.values()), default=None)

    def holds(self, key: str) -> bool:
        return key in self.leases


def restore_order(leases: Iterable[Lease]) -> list[str]:
    """Keys to restore, safest first: stop a discharge, then wake, then the rest."""
    rank = {BATTERY: 0, DORMANT: 1}
    return sorted({x.key for x in leases}, key=lambda k: (rank.get(k, 2), k))


__all__ = [
    "AC",
    "BATTERY",
    "DORMANT",
    "RECTIFIER",
    "Lease",
    "LeaseBook",
    "breaker_key",
    "effect",
    "restore_order",
    "safe_default",
]
