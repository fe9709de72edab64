"""Demand-response events: "hold the fleet's (or a group's) grid import under X kW from t1 to t2".

An operator creates them through the API or the CLI; the loop shares the reduction among the
sites in scope (`protocols.control.fleet.allocate`) while an event runs and staggers the
recharge once it ends. Events are few, so they live as one JSON document in the storage's meta
table (`control.dr_events`) behind `DrStore`; the model itself is pure.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass, replace
from typing import Any

from aggregator.control.policies import MetaStore
from aggregator.errors import ConfigError

DR_META_KEY = "control.dr_events"
MAX_EVENT_S = 24 * 3600.0


class DrEventError(ConfigError):
    """An event that does not validate (the message names the field)."""


class UnknownEventError(DrEventError):
    """No event with that id."""


@dataclass(frozen=True, slots=True)
class DrEvent:
    """Times are Unix seconds. `group` None: the whole fleet; else a region or named group."""

    id: str
    cap_w: float
    start: float
    end: float
    group: str | None = None
    recharge_ceiling_w: float | None = None
    created_by: str = ""
    created_ms: int = 0
    cancelled_ms: int | None = None
    note: str = ""

    @property
    def effective_end(self) -> float:
        """When it stops: its end, or its cancellation if earlier."""
        if self.cancelled_ms is None:
            return self.end
        return max(self.start, min(self.end, self.cancelled_ms / 1000.0))

    def active(self, now: float) -> bool:
        return self.start <= now < self.effective_end

    def state(self, now: float) -> str:
        if self.cancelled_ms is not None and self.cancelled_ms / 1000.0 <= self.start:
            return "cancelled"
        if now < self.start:
            return "scheduled"
        if now < self.effective_end:
            return "active"
        return "cancelled" if self.effective_end < self.end else "finished"

    def to_map(self) -> dict[str, Any]:
        return asdict(self)


def new_event(
    *,
    cap_w: float,
    start: float,
    end: float,
    group: str | None = None,
    recharge_ceiling_w: float | None = None,
    created_by: str,
    created_ms: int,
    note: str = "",
    event_id: str | None = None,
) -> DrEvent:
    """A validated event; DrEventError names the field at fault."""
    if not cap_w >= 0:
        raise DrEventError(f"cap_w: must be ≥ 0 W, got {cap_w}")
    if not end > start:
        raise DrEventError(f"end: {end} is not after start {start}")
    if end - start > MAX_EVENT_S:
        raise DrEventError(f"end: an event lasts at most {MAX_EVENT_S / 3600:g} h")
    if recharge_ceiling_w is not None and not recharge_ceiling_w > 0:
        raise DrEventError(f"recharge_ceiling_w: must be > 0 W, got {recharge_ceiling_w}")
    if group is not None and not group.strip():
        raise DrEventError("group: must not be empty (omit it for the whole fleet)")
    return DrEvent(
        id=event_id or str(uuid.uuid4()),
        cap_w=float(cap_w),
        start=float(start),
        end=float(end),
        group=group,
        recharge_ceiling_w=recharge_ceiling_w,
        created_by=created_by,
        created_ms=created_ms,
        note=note,
    )


class DrStore:
    """Events kept in the storage's meta table (a few hundred at most; old ones age out)."""

    KEEP_S = 30 * 86400.0

    def __init__(self, store: MetaStore) -> None:
        self.store = store

    def events(self) -> list[DrEvent]:
        raw = self.store.get_meta(DR_META_KEY)
        if not raw:
            return []
        return sorted((DrEvent(**e) for e in json.loads(raw)), key=lambda e: (e.start, e.id))

    def _save(self, events: list[DrEvent], now: float) -> None:
        kept = [e for e in events if e.effective_end > now - self.KEEP_S]
        self.store.set_meta(DR_META_KEY, json.dumps([e.to_map() for e in kept]))

    def get(self, event_id: str) -> DrEvent:
        for e in self.events():
            if e.id == event_id:
                return e
        raise UnknownEventError(f"no demand-response event {event_id!r}")

    def add(self, event: DrEvent, *, now: float) -> DrEvent:
        events = self.events()
        if any(e.id == event.id for e in events):
            raise DrEventError(f"event {event.id!r} exists already")
        self._save([*events, event], now)
        return event

    def cancel(self, event_id: str, *, now_ms: int) -> DrEvent:
        events = self.events()
        for i, e in enumerate(events):
            if e.id == event_id:
                if e.cancelled_ms is None:
                    events[i] = replace(e, cancelled_ms=now_ms)
                    self._save(events, now_ms / 1000.0)
                return events[i]
        raise UnknownEventError(f"no demand-response event {event_id!r}")


__all__ = [
    "DR_META_KEY",
    "DrEvent",
    "DrEventError",
    "DrStore",
    "UnknownEventError",
    "new_event",
]
