"""Pure polling rules: jitter, backoff, schedules, report by exception, RTU frame gap."""

from __future__ import annotations

import math

import pytest

from agent.polling import (
    DeviceSchedule,
    ExceptionFilter,
    backoff_delay,
    frame_gap_s,
    jittered,
    next_due,
)
from protocols.types import Quality

G, C = Quality.GOOD, Quality.COMM_ERROR


@pytest.mark.parametrize(
    ("interval", "jitter", "u", "expected"),
    [(10, 0.1, 0.5, 10), (10, 0.1, 0.0, 9), (10, 0.1, 1.0, 11), (5, 0.0, 0.9, 5)],
)
def test_jittered(interval: float, jitter: float, u: float, expected: float) -> None:
    assert jittered(interval, jitter, u) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("failures", "expected"),
    [(0, 5), (1, 10), (2, 20), (3, 40), (6, 300), (7, 300), (10_000, 300)],
)
def test_backoff_doubles_then_caps(failures: int, expected: float) -> None:
    assert backoff_delay(failures, interval=5, factor=2, cap=300) == expected


def test_backoff_never_below_interval() -> None:
    assert backoff_delay(3, interval=60, factor=2, cap=10) == 60


@pytest.mark.parametrize(
    ("baud", "parity", "expected_ms"),
    [(9600, "N", 3.5 * 10 / 9600 * 1000), (9600, "E", 3.5 * 11 / 9600 * 1000), (38400, "N", 1.75)],
)
def test_frame_gap(baud: int, parity: str, expected_ms: float) -> None:
    assert frame_gap_s(baud, parity=parity) * 1000 == pytest.approx(expected_ms)


def test_schedule_anchored_without_drift_and_restarts_when_behind() -> None:
    s = DeviceSchedule(interval=5, jitter=0.0)
    s.start(100.0, 0.5)
    assert s.next_due == 100.0
    s.on_success(100.3, 0.5)  # the poll took 0.3 s: next due stays on the 5 s grid
    assert s.next_due == 105.0
    s.on_success(121.0, 0.5)  # fell far behind: no burst of catch-up polls
    assert s.next_due == 126.0
    assert s.due_in(125.0) == 1.0 and s.due_in(127.0) == 0.0


def test_schedule_backs_off_and_reports_streak_edges_once() -> None:
    s = DeviceSchedule(interval=5, jitter=0.0, backoff_factor=2, backoff_max=60)
    s.start(0.0, 0.0)
    starts = [s.on_failure(t, 0.5, "timeout") for t in (0.0, 10.0, 30.0, 70.0, 130.0)]
    assert starts == [True, False, False, False, False]
    assert s.failures == 5 and s.last_error == "timeout"
    assert s.next_due == 190.0  # capped at 60 s
    assert s.on_success(190.0, 0.5) is True
    assert s.on_success(195.0, 0.5) is False
    assert s.failures == 0 and s.last_ok == 195.0


def test_next_due_picks_earliest_first_in_ties() -> None:
    a, b, c = (DeviceSchedule(interval=1, next_due=t) for t in (3.0, 1.0, 1.0))
    assert next_due([a, b, c]) == 1


def test_exception_filter_deadband_heartbeat_and_quality() -> None:
    f = ExceptionFilter(deadbands=[0.5, 0.0, 0.0], max_interval_ms=60_000)
    assert f.select(0, [50.0, 1, True], [G, G, G]) == [0, 1, 2]  # first readings
    assert f.select(5_000, [50.4, 1, True], [G, G, G]) == []  # inside deadband, no change
    assert f.select(10_000, [50.9, 2, True], [G, G, G]) == [0, 1]  # drift vs last *sent*
    assert f.select(15_000, [51.2, 2, False], [G, G, G]) == [2]  # 0.3 from 50.9; bool flip
    assert f.select(20_000, [None, None, None], [C, C, C]) == [0, 1, 2]  # quality change
    assert f.select(25_000, [None, None, None], [C, C, C]) == []
    assert f.select(80_000, [None, None, None], [C, C, C]) == [0, 1, 2]  # heartbeat
    assert f.select(85_000, [51.0, 2, False], [G, G, G]) == [0, 1, 2]  # recovery
    f.forget()
    assert f.select(86_000, [51.0, 2, False], [G, G, G]) == [0, 1, 2]


def test_exception_filter_nan_and_int_bool_mix() -> None:
    f = ExceptionFilter(deadbands=[1.0], max_interval_ms=10**9)
    assert f.select(0, [math.nan], [G]) == [0]
    assert f.select(1, [math.nan], [G]) == []
    assert f.select(2, [3.0], [G]) == [0]
