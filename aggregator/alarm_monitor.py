"""The thin shell around the pure alarm engine: feeds it, persists its events, counts them.

`AlarmMonitor.on_stored` is the hook ingest calls after each committed group (from its worker
thread); `check(now_ms)` is the periodic silence / pending / hold check and `run()` the task that
calls it. On start it rebuilds each site's state from the alarms still active in storage, so a
restart neither re-raises nor forgets them. A lock serialises the hook and the check.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import Counter
from collections.abc import Iterable, Sequence

from aggregator.alarms import (
    SITE_WIDE,
    Alarm,
    AlarmConfig,
    AlarmEvent,
    AlarmKey,
    AlarmKind,
    SiteAlarmState,
    Step,
    Transition,
    evaluate_loss,
    evaluate_readings,
    evaluate_status,
    evaluate_time,
    restore,
)
from aggregator.errors import StorageError
from aggregator.metrics import AggregatorMetrics
from aggregator.storage.base import Storage
from aggregator.storage.types import AlarmRecord, LossRecord, Severity, SiteState
from protocols.clock import Clock, now_ms
from protocols.types import Reading

log = logging.getLogger(__name__)


def alarm_of(record: AlarmRecord) -> Alarm | None:
    """The engine's view of a stored alarm (None for a kind or severity this code does not know)."""
    try:
        kind, severity = AlarmKind(record.kind), Severity(record.severity)
    except ValueError:
        return None
    return Alarm(
        site=record.site,
        kind=kind,
        device=record.device or SITE_WIDE,
        severity=severity,
        point=record.point or "",
        message=record.message,
        raised_ms=record.raised_ms,
        cleared_ms=record.cleared_ms,
    )


def _presence(state: SiteState) -> bool | None:
    """Online/offline from birth and death; None when neither was ever seen (a default state
    is "unknown", not "dead")."""
    if state.birth_ms is None and state.death_ms is None:
        return None
    return state.online


class AlarmMonitor:
    """Holds every site's alarm state; persists raise/clear events through storage."""

    def __init__(
        self,
        storage: Storage,
        *,
        config: AlarmConfig | None = None,
        metrics: AggregatorMetrics | None = None,
        clock: Clock,
    ) -> None:
        self.storage = storage
        self.config = config or AlarmConfig()
        self.metrics = metrics
        self.clock = clock
        self._lock = threading.Lock()
        self._states: dict[str, SiteAlarmState] = {}
        self._ids: dict[tuple[str, AlarmKey], int] = {}
        self._active_by_severity: Counter[str] = Counter()  # kept in step with `_states`
        self._loaded = False

    # ---- state ---------------------------------------------------------------------------

    def load(self) -> None:
        """Rebuild states from the alarms active in storage (idempotent)."""
        with self._lock:
            self._load_locked()

    def _load_locked(self) -> None:
        if self._loaded:
            return
        by_site: dict[str, list[Alarm]] = {}
        for record in self.storage.active_alarms():
            alarm = alarm_of(record)
            if alarm is None:
                continue
            by_site.setdefault(alarm.site, []).append(alarm)
            self._ids[(alarm.site, alarm.key)] = record.id
        for site, alarms in by_site.items():
            self._states[site] = restore(site, alarms)
        self._active_by_severity = Counter(
            a.severity.value for s in self._states.values() for a in s.active.values()
        )
        self._loaded = True
        self._update_gauge()

    def _state(self, site: str) -> SiteAlarmState:
        state = self._states.get(site)
        if state is None:
            state = self._states[site] = SiteAlarmState(site=site)
        return state

    def active(self) -> list[Alarm]:
        with self._lock:
            return [a for s in self._states.values() for a in s.active.values()]

    # ---- inputs ------------------------------------------------------------------------------

    def on_stored(
        self,
        site: str,
        readings: Sequence[Reading],
        site_state: SiteState | None = None,
        losses: Iterable[LossRecord] = (),
    ) -> list[AlarmEvent]:
        """Ingest's hook after a commit: the site's new (live) readings, state and loss reports."""
        now = now_ms(self.clock)
        with self._lock:
            self._load_locked()
            events: list[AlarmEvent] = []
            if readings:
                events += self._apply(evaluate_readings(self._state(site), readings, self.config))
            if site_state is not None:
                last_seen = site_state.last_seen_ms
                if readings:  # the site was heard just now, whatever the state says
                    last_seen = now if last_seen is None else max(last_seen, now)
                events += self._apply(
                    evaluate_status(
                        self._state(site),
                        online=_presence(site_state),
                        last_seen_ms=last_seen,
                        now_ms=now,
                        cfg=self.config,
                    )
                )
            for loss in losses:
                events += self._apply(evaluate_loss(self._state(site), loss, self.config))
            return events

    def on_loss(self, site: str, loss: LossRecord) -> list[AlarmEvent]:
        """An agent's data-loss report."""
        return self.on_stored(site, (), None, (loss,))

    def check(self, now: int | None = None) -> list[AlarmEvent]:
        """The periodic check over every known site, with presence read back from storage."""
        t = now_ms(self.clock) if now is None else now
        states = {s.site: s for s in self.storage.site_states()}
        with self._lock:
            self._load_locked()
            events: list[AlarmEvent] = []
            for site in sorted(set(states) | set(self._states)):
                st = states.get(site)
                if st is not None:
                    events += self._apply(
                        evaluate_status(
                            self._state(site),
                            online=_presence(st),
                            last_seen_ms=st.last_seen_ms,
                            now_ms=t,
                            cfg=self.config,
                        )
                    )
                events += self._apply(evaluate_time(self._state(site), t, self.config))
            return events

    async def run(self, interval_s: float = 5.0) -> None:
        """Run `check` every `interval_s` (of the clock) until cancelled; storage errors are
        logged and retried on the next round."""
        while True:
            try:
                await asyncio.to_thread(self.check)
            except StorageError as exc:
                log.warning("alarm check failed, retrying in %.0f s: %s", interval_s, exc)
            await self.clock.sleep(interval_s)

    # ---- persistence -------------------------------------------------------------------------

    def _apply(self, step: Step) -> list[AlarmEvent]:
        """Persist a step's events, then adopt its state (so a failed write is retried)."""
        state, events = step
        for event in events:
            self._persist(event)
        self._states[state.site] = state
        if events:
            for event in events:
                raised = event.transition is Transition.RAISED
                self._active_by_severity[event.alarm.severity.value] += 1 if raised else -1
            self._update_gauge()
        return events

    def _persist(self, event: AlarmEvent) -> None:
        a = event.alarm
        key = (a.site, a.key)
        if event.transition is Transition.RAISED:
            record = self.storage.add_alarm(
                a.site,
                a.kind.value,
                a.severity.value,
                a.message,
                a.raised_ms,
                device=a.device or None,
                point=a.point or None,
            )
            self._ids[key] = record.id
            log.info("alarm raised: %s %s %s: %s", a.site, a.kind, a.device, a.message)
            if self.metrics is not None:
                self.metrics.alarms_raised.labels(kind=a.kind.value).inc()
        else:
            alarm_id = self._ids.pop(key, None)
            if alarm_id is not None and a.cleared_ms is not None:
                self.storage.clear_alarm(alarm_id, a.cleared_ms)
            log.info("alarm cleared: %s %s %s", a.site, a.kind, a.device)
            if self.metrics is not None:
                self.metrics.alarms_cleared.labels(kind=a.kind.value).inc()

    def _update_gauge(self) -> None:
        """Set the gauge from the running counts (a recount over every site per event cost
        O(active alarms): 3 % of ingest when a 1,000-site fleet raised its alarms at start)."""
        if self.metrics is not None:
            self.metrics.set_active_alarms(self._active_by_severity)


__all__ = ["AlarmMonitor", "alarm_of"]
