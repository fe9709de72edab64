"""The alarm shell against a real SQLite storage: persistence, restart dedupe, periodic check."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from aggregator.alarm_monitor import AlarmMonitor
from aggregator.alarms import AlarmConfig, AlarmKind, LossRecord, Transition
from aggregator.metrics import AggregatorMetrics
from aggregator.storage import SiteInfo, SiteState, SqliteStorage, open_storage
from protocols.clock import ManualClock
from protocols.types import Reading

T = 1_767_225_600_000


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[SqliteStorage]:
    s = open_storage(tmp_path / "agg.db")
    s.add_site(SiteInfo("s1", created_ms=T))
    yield s
    s.close()


def gauge(m: AggregatorMetrics, severity: str) -> float:
    v = m.registry.get_sample_value("sitewatt_aggregator_alarms_active", {"severity": severity})
    assert v is not None
    return v


def test_raise_and_clear_are_persisted_with_times(storage: SqliteStorage) -> None:
    metrics = AggregatorMetrics()
    mon = AlarmMonitor(storage, metrics=metrics, clock=ManualClock(T / 1000))
    events = mon.on_stored("s1", [Reading(T + 10, "meter", "mains_present", 0)])
    assert [e.transition for e in events] == [Transition.RAISED]
    (active,) = storage.active_alarms("s1")
    assert (active.kind, active.severity, active.device, active.point, active.raised_ms) == (
        "mains_failure",
        "major",
        "meter",
        "mains_present",
        T + 10,
    )
    assert gauge(metrics, "major") == 1
    mon.on_stored("s1", [Reading(T + 20, "meter", "mains_present", 0)])  # dedupe
    assert len(storage.alarm_history("s1")) == 1
    mon.on_stored("s1", [Reading(T + 90, "meter", "mains_present", 1)])
    assert storage.active_alarms("s1") == []
    (record,) = storage.alarm_history("s1")
    assert record.cleared_ms == T + 90
    assert gauge(metrics, "major") == 0


def test_restart_does_not_raise_twice_and_still_clears(storage: SqliteStorage) -> None:
    clock = ManualClock(T / 1000)
    AlarmMonitor(storage, clock=clock).on_stored("s1", [Reading(T, "rect", "module_fault", 3)])
    again = AlarmMonitor(storage, clock=clock)  # a restarted aggregator
    assert again.on_stored("s1", [Reading(T + 5, "rect", "module_fault", 3)]) == []
    assert len(storage.alarm_history("s1")) == 1
    events = again.on_stored("s1", [Reading(T + 9, "rect", "module_fault", 0)])
    assert [e.transition for e in events] == [Transition.CLEARED]
    assert storage.active_alarms() == []


def test_periodic_check_raises_offline_on_silence_and_clears_on_news(
    storage: SqliteStorage,
) -> None:
    clock = ManualClock(T / 1000)
    mon = AlarmMonitor(storage, config=AlarmConfig(silence_s=60), clock=clock)
    storage.put_site_state(SiteState("s1", True, "b", "v", {}, T, T, None))
    assert mon.check() == []
    clock.advance(61)
    events = mon.check()
    assert [(e.transition, e.alarm.kind) for e in events] == [
        (Transition.RAISED, AlarmKind.SITE_OFFLINE)
    ]
    assert mon.check() == []  # deduplicated
    storage.put_site_state(SiteState("s1", True, "b", "v", {}, T + 62_000, T, None))
    clock.advance(1)
    events = mon.check()
    assert [e.transition for e in events] == [Transition.CLEARED]
    assert storage.active_alarms() == []


def test_death_raises_offline_at_once(storage: SqliteStorage) -> None:
    clock = ManualClock(T / 1000)
    mon = AlarmMonitor(storage, clock=clock)
    state = SiteState("s1", False, "b", "v", {}, T, T - 1000, T)
    events = mon.on_stored("s1", [], state)
    assert [e.alarm.kind for e in events] == [AlarmKind.SITE_OFFLINE]
    assert storage.active_alarms("s1")[0].severity == "critical"


def test_data_loss_report(storage: SqliteStorage) -> None:
    mon = AlarmMonitor(storage, clock=ManualClock(T / 1000))
    mon.on_loss("s1", LossRecord(T, 1200, T - 86_400_000, T - 3_600_000))
    (a,) = storage.active_alarms("s1")
    assert a.kind == "data_loss" and a.severity == "warning" and "1200 readings" in a.message
    assert a.device is None


async def test_run_checks_until_cancelled(storage: SqliteStorage) -> None:
    clock = ManualClock(T / 1000)
    mon = AlarmMonitor(storage, config=AlarmConfig(silence_s=10), clock=clock)
    storage.put_site_state(SiteState("s1", True, "b", "v", {}, T - 60_000, T - 60_000, None))
    task = asyncio.create_task(mon.run(interval_s=1))
    try:
        for _ in range(200):
            if storage.active_alarms("s1"):
                break
            await asyncio.sleep(0.01)
        assert [a.kind for a in storage.active_alarms("s1")] == ["site_offline"]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_readings_with_unknown_presence_are_not_offline(storage: SqliteStorage) -> None:
    """Ingest hands a default SiteState when it has seen no birth yet (after its restart)."""
    clock = ManualClock(T / 1000 + 3600)
    mon = AlarmMonitor(storage, clock=clock)
    events = mon.on_stored("s1", [Reading(T, "meter", "mains_present", 1)], SiteState("s1"))
    assert events == []
    assert mon.check() == []  # heard at the time of the call: not silent either
    clock.advance(301)
    assert [e.alarm.kind for e in mon.check()] == [AlarmKind.SITE_OFFLINE]
