"""The pure alarm engine: raise, dedupe, clear, hysteresis, persistence, silence, data loss."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from aggregator.alarms import (
    SITE_WIDE,
    Alarm,
    AlarmConfig,
    AlarmEvent,
    AlarmKind,
    LossRecord,
    RuleConfig,
    Severity,
    SiteAlarmState,
    Transition,
    evaluate_loss,
    evaluate_readings,
    evaluate_status,
    evaluate_time,
    restore,
    site_reserve_soc,
)
from protocols.types import Quality, Reading, Value

S = 1000  # ms per second
CFG = AlarmConfig()
IMMEDIATE = AlarmConfig(
    high_temperature=RuleConfig(severity=Severity.MAJOR),
    comm_loss=RuleConfig(severity=Severity.MAJOR),
)


def r(t_s: float, device: str, point: str, value: Value, q: Quality = Quality.GOOD) -> Reading:
    return Reading(int(t_s * S), device, point, value, q)


def run(
    readings_by_step: list[list[Reading]], cfg: AlarmConfig = IMMEDIATE
) -> tuple[SiteAlarmState, list[AlarmEvent]]:
    state = SiteAlarmState(site="s1")
    events: list[AlarmEvent] = []
    for batch in readings_by_step:
        state, ev = evaluate_readings(state, batch, cfg)
        events += ev
    return state, events


def summary(events: list[AlarmEvent]) -> list[tuple[str, str, str, int]]:
    out = []
    for e in events:
        t = e.alarm.raised_ms if e.transition is Transition.RAISED else e.alarm.cleared_ms
        assert t is not None
        out.append((e.transition.value, e.alarm.kind.value, e.alarm.device, t // S))
    return out


# --- value rules: raise, dedupe, clear, hysteresis ---------------------------------------------


@pytest.mark.parametrize(
    ("name", "steps", "expected"),
    [
        (
            "mains failure raised and cleared",
            [[r(10, "meter", "mains_present", 0)], [r(70, "meter", "mains_present", 1)]],
            [("raised", "mains_failure", "meter", 10), ("cleared", "mains_failure", "meter", 70)],
        ),
        (
            "mains failure deduplicated across repeated readings",
            [
                [r(10, "meter", "mains_present", 0)],
                [r(20, "meter", "mains_present", 0), r(30, "meter", "mains_present", False)],
                [r(40, "meter", "mains_present", 0)],
            ],
            [("raised", "mains_failure", "meter", 10)],
        ),
        (
            "mains present: nothing",
            [[r(10, "meter", "mains_present", 1)]],
            [],
        ),
        (
            "comm-error value does not clear or raise a value alarm",
            [
                [r(10, "meter", "mains_present", 0)],
                [
                    r(20, "meter", "mains_present", None, Quality.COMM_ERROR),
                    r(20, "meter", "voltage", 230.0),
                ],
            ],
            [("raised", "mains_failure", "meter", 10)],
        ),
        (
            "high temperature with hysteresis: 34 holds, 33 holds, 31.9 clears",
            [
                [r(0, "ac", "room_temp", 30.0)],
                [r(10, "ac", "room_temp", 35.0)],
                [r(20, "ac", "room_temp", 34.0)],
                [r(30, "ac", "room_temp", 36.0)],
                [r(40, "ac", "room_temp", 33.0)],
                [r(50, "ac", "room_temp", 31.9)],
                [r(60, "ac", "room_temp", 34.9)],
            ],
            [("raised", "high_temperature", "ac", 10), ("cleared", "high_temperature", "ac", 50)],
        ),
        (
            "rectifier module fault",
            [[r(5, "rect", "module_fault", 2)], [r(9, "rect", "module_fault", 0)]],
            [("raised", "rectifier_fault", "rect", 5), ("cleared", "rectifier_fault", "rect", 9)],
        ),
        (
            "battery low against the fallback reserve 30 %, clears at 35 %",
            [
                [r(1, "bat", "soc", 50.0)],
                [r(2, "bat", "soc", 29.5)],
                [r(3, "bat", "soc", 34.0)],
                [r(4, "bat", "soc", 35.0)],
            ],
            [("raised", "battery_low", "bat", 2), ("cleared", "battery_low", "bat", 4)],
        ),
        (
            "one alarm per device: two aircons each raise",
            [[r(1, "ac1", "room_temp", 40.0), r(1, "ac2", "room_temp", 41.0)]],
            [("raised", "high_temperature", "ac1", 1), ("raised", "high_temperature", "ac2", 1)],
        ),
        (
            "readings in one batch are taken in time order whatever their order",
            [[r(20, "meter", "mains_present", 1), r(10, "meter", "mains_present", 0)]],
            [("raised", "mains_failure", "meter", 10), ("cleared", "mains_failure", "meter", 20)],
        ),
        (
            "a historical reading older than one seen does not move the alarm",
            [[r(100, "meter", "mains_present", 1)], [r(50, "meter", "mains_present", 0)]],
            [],
        ),
    ],
)
def test_value_rules(
    name: str, steps: list[list[Reading]], expected: list[tuple[str, str, str, int]]
) -> None:
    _, events = run(steps)
    assert summary(events) == expected, name


def test_severity_and_message_follow_config() -> None:
    cfg = AlarmConfig(mains_failure=RuleConfig(severity=Severity.CRITICAL))
    _, events = run([[r(1, "meter", "mains_present", 0)], [r(2, "ac", "room_temp", 50.0)]], cfg)
    assert [e.alarm.severity for e in events] == [Severity.CRITICAL]  # temp still pending (60 s)
    assert "mains" in events[0].alarm.message
    assert events[0].alarm.point == "mains_present"
    assert events[0].alarm.site == "s1"


def test_disabled_rule_never_raises() -> None:
    cfg = AlarmConfig(mains_failure=RuleConfig(enabled=False, severity=Severity.MAJOR))
    state, events = run([[r(1, "meter", "mains_present", 0)]], cfg)
    assert events == [] and state.active == {}


def test_raise_after_holds_condition_before_raising() -> None:
    # high_temperature waits 60 s by default: a 30 s excursion raises nothing.
    _, events = run(
        [
            [r(0, "ac", "room_temp", 38.0)],
            [r(30, "ac", "room_temp", 33.0)],
            [r(40, "ac", "room_temp", 38.0)],
            [r(90, "ac", "room_temp", 38.5)],
            [r(100, "ac", "room_temp", 38.5)],
        ],
        CFG,
    )
    # Band value (33) cancels the pending raise; from 40 s on it holds, confirmed at 100 s.
    assert summary(events) == [("raised", "high_temperature", "ac", 100)]


def test_time_check_confirms_pending_condition_without_new_reading() -> None:
    state, events = run([[r(0, "ac", "room_temp", 38.0)]], CFG)
    assert events == [] and state.pending
    state, events = evaluate_time(state, 59 * S, CFG)
    assert events == []
    state, events = evaluate_time(state, 60 * S, CFG)
    assert summary(events) == [("raised", "high_temperature", "ac", 60)]
    assert not state.pending


def test_hysteresis_config_must_leave_a_band() -> None:
    with pytest.raises(ValidationError, match="room_temp_clear_c"):
        AlarmConfig(room_temp_high_c=30, room_temp_clear_c=30)


# --- battery reserve -----------------------------------------------------------------------------


def test_reserve_from_site_values_uses_protocols_formula() -> None:
    # 4 kW load (80 A × 50 V), 400 Ah × 48 V = 19.2 kWh: 10 % + 100·12000/0.95/19200 ≈ 75.8 %.
    values = {"load_current": 80.0, "dc_voltage": 50.0, "capacity_ah": 400.0, "voltage": 48.0}
    assert site_reserve_soc(values, CFG) == pytest.approx(10 + 100 * 12000 / 0.95 / 19200)
    assert site_reserve_soc({"load_current": 80.0}, CFG) == CFG.battery_low_soc_pct


def test_battery_low_uses_site_reserve_when_known() -> None:
    base = [
        r(0, "rect", "load_current", 40.0),
        r(0, "rect", "dc_voltage", 50.0),
        r(0, "bat", "capacity_ah", 400.0),
        r(0, "bat", "voltage", 48.0),
    ]
    # reserve = 10 + 100·6000/0.95/19200 ≈ 42.9 %: 40 % is low although above the 30 % fallback.
    _, events = run([[*base, r(1, "bat", "soc", 40.0)]])
    assert summary(events) == [("raised", "battery_low", "bat", 1)]
    assert "reserve 42.9 %" in events[0].alarm.message


# --- comm loss ---------------------------------------------------------------------------------


def comm_poll(t: float, device: str = "bat", *, ok: bool = False) -> list[Reading]:
    q = Quality.GOOD if ok else Quality.COMM_ERROR
    v: Value = 50.0 if ok else None
    return [r(t, device, "soc", v, q), r(t, device, "voltage", 52.0 if ok else None, q)]


@pytest.mark.parametrize(
    ("name", "polls", "expected"),
    [
        ("comm-error for 30 s: not yet", [comm_poll(0), comm_poll(30)], []),
        (
            "comm-error persisting 60 s raises, first good poll clears",
            [comm_poll(0), comm_poll(30), comm_poll(60), comm_poll(65, ok=True)],
            [("raised", "comm_loss", "bat", 60), ("cleared", "comm_loss", "bat", 65)],
        ),
        (
            "an answer in between restarts the persistence",
            [comm_poll(0), comm_poll(40, ok=True), comm_poll(50), comm_poll(100)],
            [],
        ),
        (
            "a partial poll (some points good) is not comm loss",
            [
                comm_poll(0),
                [*comm_poll(60)[:1], r(60, "bat", "voltage", 52.0)],
                comm_poll(70),
            ],
            [],
        ),
    ],
)
def test_comm_loss_persistence(
    name: str, polls: list[list[Reading]], expected: list[tuple[str, str, str, int]]
) -> None:
    _, events = run(polls, CFG)
    assert summary(events) == expected, name


def test_comm_loss_confirmed_by_time_check_when_readings_come_by_exception() -> None:
    state, _ = run([comm_poll(0)], CFG)
    state, _ = evaluate_status(state, online=True, last_seen_ms=50 * S, now_ms=50 * S, cfg=CFG)
    state, events = evaluate_time(state, 61 * S, CFG)
    assert summary(events) == [("raised", "comm_loss", "bat", 61)]


@pytest.mark.parametrize(
    ("name", "check_after_s", "expected"),
    [
        ("before raise_after_s: still pending", 59.9, []),
        ("at raise_after_s: raised by the time check", 60, [("raised", "comm_loss", "bat", 60)]),
        ("long after: raised at the check's time", 600, [("raised", "comm_loss", "bat", 600)]),
    ],
)
def test_comm_loss_from_one_reported_failure_confirmed_by_time_check_alone(
    name: str, check_after_s: float, expected: list[tuple[str, str, str, int]]
) -> None:
    """One comm-error poll at t, no further readings (report by exception, device backed off),
    no presence input: the time check at t + raise_after_s confirms the alarm by itself."""
    state, events = run([comm_poll(0)], CFG)
    assert events == []
    state, events = evaluate_time(state, int(check_after_s * S), CFG)
    assert summary(events) == expected, name


# --- site offline --------------------------------------------------------------------------------


def test_death_raises_offline_and_birth_clears_it() -> None:
    state = SiteAlarmState(site="s1")
    state, ev1 = evaluate_status(state, online=True, last_seen_ms=1 * S, now_ms=1 * S, cfg=CFG)
    state, ev2 = evaluate_status(state, online=False, last_seen_ms=1 * S, now_ms=5 * S, cfg=CFG)
    state, ev3 = evaluate_status(state, online=False, last_seen_ms=1 * S, now_ms=6 * S, cfg=CFG)
    state, ev4 = evaluate_status(state, online=True, last_seen_ms=9 * S, now_ms=9 * S, cfg=CFG)
    assert ev1 == [] and ev3 == []
    assert summary(ev2) == [("raised", "site_offline", SITE_WIDE, 5)]
    assert ev2[0].alarm.severity is Severity.CRITICAL
    assert summary(ev4) == [("cleared", "site_offline", SITE_WIDE, 9)]


@pytest.mark.parametrize(
    ("now_s", "raised"),
    [(100, False), (300, False), (300.001, True), (1000, True)],
)
def test_silence_raises_offline_after_silence_s(now_s: float, raised: bool) -> None:
    state = SiteAlarmState(site="s1")
    state, _ = evaluate_status(state, online=True, last_seen_ms=0, now_ms=0, cfg=CFG)
    state, events = evaluate_time(state, int(now_s * S), CFG)
    assert bool(events) is raised
    if raised:
        assert "nothing heard" in events[0].alarm.message


def test_silence_cleared_by_next_message() -> None:
    state = SiteAlarmState(site="s1")
    state, _ = evaluate_status(state, online=True, last_seen_ms=0, now_ms=0, cfg=CFG)
    state, ev = evaluate_time(state, 400 * S, CFG)
    assert len(ev) == 1
    state, ev = evaluate_time(state, 500 * S, CFG)
    assert ev == []  # deduplicated
    state, ev = evaluate_status(state, online=True, last_seen_ms=510 * S, now_ms=510 * S, cfg=CFG)
    assert summary(ev) == [("cleared", "site_offline", SITE_WIDE, 510)]


def test_never_heard_site_is_not_offline() -> None:
    _, events = evaluate_time(SiteAlarmState(site="s1"), 10**12, CFG)
    assert events == []


def test_offline_site_does_not_confirm_stale_conditions() -> None:
    state, _ = run([[r(0, "ac", "room_temp", 40.0)]], CFG)  # pending (60 s)
    state, _ = evaluate_status(state, online=False, last_seen_ms=0, now_ms=10 * S, cfg=CFG)
    state, events = evaluate_time(state, 100 * S, CFG)
    assert [e.alarm.kind for e in events] == []
    assert (AlarmKind.SITE_OFFLINE, SITE_WIDE) in state.active


# --- data loss --------------------------------------------------------------------------------


def test_data_loss_raised_once_and_cleared_after_hold() -> None:
    state = SiteAlarmState(site="s1")
    state, ev1 = evaluate_loss(state, LossRecord(100 * S, 500, 1 * S, 50 * S), CFG)
    state, ev2 = evaluate_loss(state, LossRecord(200 * S, 20), CFG)
    state, ev3 = evaluate_time(state, (200 + 3599) * S, CFG)
    state, ev4 = evaluate_time(state, (200 + 3600) * S, CFG)
    assert summary(ev1) == [("raised", "data_loss", SITE_WIDE, 100)]
    assert ev1[0].alarm.severity is Severity.WARNING and "500 readings" in ev1[0].alarm.message
    assert ev2 == [] and ev3 == []
    assert summary(ev4) == [("cleared", "data_loss", SITE_WIDE, 3800)]


def test_zero_loss_report_raises_nothing() -> None:
    _, events = evaluate_loss(SiteAlarmState(site="s1"), LossRecord(1, 0), CFG)
    assert events == []


# --- restore ---------------------------------------------------------------------------------


def test_restore_dedupes_against_persisted_alarms() -> None:
    persisted = [
        Alarm("s1", AlarmKind.MAINS_FAILURE, "meter", Severity.MAJOR, "mains_present", "m", 5),
        Alarm("s1", AlarmKind.DATA_LOSS, SITE_WIDE, Severity.WARNING, "", "d", 7 * S),
        Alarm("s2", AlarmKind.MAINS_FAILURE, "meter", Severity.MAJOR, "mains_present", "m", 5),
    ]
    state = restore("s1", persisted)
    assert set(state.active) == {(AlarmKind.MAINS_FAILURE, "meter"), (AlarmKind.DATA_LOSS, "")}
    state, events = evaluate_readings(state, [r(10, "meter", "mains_present", 0)], CFG)
    assert events == []
    state, events = evaluate_readings(state, [r(11, "meter", "mains_present", 1)], CFG)
    assert summary(events) == [("cleared", "mains_failure", "meter", 11)]
    _, events = evaluate_time(state, 7 * S + 3600 * S, CFG)
    assert summary(events) == [("cleared", "data_loss", SITE_WIDE, 3607)]
