"""Message schemas: round trips, strict decoding, command params, and fuzzing of every decoder."""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.errors import MessageError, ProtocolError
from protocols.messages import (
    MESSAGE_TYPES,
    PARAMS_BY_ACTION,
    Ack,
    AckStatus,
    AcSetpoint,
    Action,
    AggregatorState,
    BatteryAuto,
    BreakerSet,
    Charge,
    Command,
    DataLoss,
    Dormant,
    Message,
    Params,
    PeakShave,
    Receipt,
    RectifierEco,
    SiteState,
    TelemetryBatch,
    Wake,
    decode,
    encode,
    loads,
)
from protocols.types import Quality, Reading, ReadingColumns

T0 = 1_760_000_000_000
CMD_ID = "5f0c6b2e-6d1a-4c1e-9a57-2f7d8e9b0c11"


def _batch(n: int = 100, *, hist: bool = False) -> TelemetryBatch:
    devices = ["rect1", "batt1", "ac1", "brk1", "meter1"]
    readings = []
    for i in range(n):
        dev = devices[i % 5]
        value: float | int | bool | None = [53.5, 12, True, 230.25, -41.7][i % 5]
        quality = Quality.GOOD
        if i % 17 == 3:
            value, quality = None, Quality.COMM_ERROR
        elif i % 23 == 5:
            quality = Quality.OUT_OF_RANGE
        readings.append(Reading(T0 + (i // 10) * 5000 - (i % 3), dev, f"p{i % 7}", value, quality))
    return TelemetryBatch("site-001", "b00t", 42, T0 + 60_000, tuple(readings), hist)


EXAMPLES: list[Message] = [
    _batch(),
    _batch(0),
    _batch(3, hist=True),
    DataLoss("site-001", "b00t", 43, T0, count=1234, oldest=T0 - 86_400_000, newest=T0 - 1),
    SiteState("site-001", True, "b00t", "0.1.0", T0, {"rect1": "rectifier-acme-r48"}),
    SiteState("site-001", False, "b00t", "0.1.0", T0),
    Receipt("site-001", (40, 41, 42), T0),
    AggregatorState(True, T0),
    AggregatorState(False, T0),
    Ack(CMD_ID, "site-001", 7, AckStatus.APPLIED, T0, readback={"batt1.mode": 2, "ac1.sp": 27.5}),
    Ack(CMD_ID, "site-001", 7, AckStatus.REJECTED, T0, reason="interlock: reserve SOC"),
    Ack(CMD_ID, "site-001", 7, AckStatus.FAILED, T0, reason="write timeout", readback={"x": None}),
]
PARAMS: list[Params] = [
    PeakShave(5000.0),
    Charge(3000.0, 95.0),
    BatteryAuto(),
    Dormant((3, 4, 5), True, 2.5, until=T0 + 3_600_000),
    Dormant((), False, 0.0),
    Wake(),
    AcSetpoint(27.0),
    BreakerSet(4, False),
    RectifierEco(True),
]
EXAMPLES += [Command(CMD_ID, "site-001", 9, T0, T0 + 60_000, 900, params) for params in PARAMS]


@pytest.mark.parametrize("msg", EXAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(msg: Message) -> None:
    data = encode(msg)
    assert loads(data) == msg
    assert decode(cbor2.loads(data)) == msg
    assert cbor2.loads(data)["type"] == msg.TYPE


def test_every_type_and_action_has_an_example() -> None:
    assert {type(m) for m in EXAMPLES} == set(MESSAGE_TYPES.values())
    assert {type(p).ACTION for p in PARAMS} == set(Action) == set(PARAMS_BY_ACTION)


def test_telemetry_round_trip_keeps_types_and_qualities() -> None:
    batch = _batch()
    back = loads(encode(batch))
    assert isinstance(back, TelemetryBatch)
    for a, b in zip(back.readings, batch.readings, strict=True):
        assert a == b
        assert type(a.value) is type(b.value)
        assert a.quality is b.quality
        assert type(a) is Reading


def test_decoded_readings_are_columns_equal_to_the_tuple() -> None:
    batch = _batch(30)
    back = loads(encode(batch))
    assert isinstance(back, TelemetryBatch)
    cols = back.readings
    assert isinstance(cols, ReadingColumns)
    assert cols == batch.readings and batch.readings == cols and back == batch
    assert hash(back) == hash(batch)
    assert list(cols.t) == [r.t for r in batch.readings]
    assert cols.quality[3] is Quality.COMM_ERROR
    assert cols[5] == batch.readings[5] and cols[-1] == batch.readings[-1]
    assert cols[2:4] == batch.readings[2:4]
    assert ReadingColumns.of(cols) is cols
    assert ReadingColumns.of(batch.readings) == cols
    both = ReadingColumns.concat([cols, batch.readings[:3]])
    assert tuple(both) == (*batch.readings, *batch.readings[:3])
    assert len(ReadingColumns.of(())) == 0
    with pytest.raises(ValueError):
        ReadingColumns((1,), (), (), (), ())


def test_telemetry_wire_form_is_columnar() -> None:
    m = cbor2.loads(encode(_batch(20)))
    assert m["devices"] == ["rect1", "batt1", "ac1", "brk1", "meter1"]
    assert len(m["t"]) == len(m["k"]) == len(m["v"]) == 20
    assert m["t"][0] == T0 and all(abs(d) < 10_000 for d in m["t"][1:])
    assert m["q"] == {3: int(Quality.COMM_ERROR), 5: int(Quality.OUT_OF_RANGE)}
    assert "q" not in cbor2.loads(encode(TelemetryBatch("s", "b", 1, T0, (), False)))


def _cmd_map(action: str, params: dict[str, Any], **over: Any) -> dict[str, Any]:
    m = Command(CMD_ID, "site-001", 9, T0, T0 + 60_000, 900, Wake()).to_map()
    m.update(action=action, params=params, **over)
    return m


@pytest.mark.parametrize(
    ("action", "params", "needle"),
    [
        ("battery.discharge_all", {}, "unknown action"),
        ("battery.peak_shave", {}, "discharge_limit_w: missing"),
        ("battery.peak_shave", {"discharge_limit_w": 0}, "discharge_limit_w"),
        ("battery.peak_shave", {"discharge_limit_w": -5.0}, "discharge_limit_w"),
        ("battery.peak_shave", {"discharge_limit_w": "5000"}, "expected a number"),
        ("battery.peak_shave", {"discharge_limit_w": True}, "expected a number"),
        ("battery.peak_shave", {"discharge_limit_w": 1.0, "soc": 1}, "unknown field"),
        ("battery.charge", {"charge_limit_w": 1000, "target_soc": 101}, "target_soc"),
        ("battery.charge", {"charge_limit_w": 1000}, "target_soc: missing"),
        ("battery.auto", {"x": 1}, "unknown field"),
        ("site.dormant", {"channels": [0], "rectifier_eco": True, "ac_offset_c": 1}, "channels"),
        ("site.dormant", {"channels": [65], "rectifier_eco": True, "ac_offset_c": 1}, "channels"),
        ("site.dormant", {"channels": [2, 2], "rectifier_eco": True, "ac_offset_c": 1}, "channels"),
        ("site.dormant", {"channels": [True], "rectifier_eco": True, "ac_offset_c": 1}, "channels"),
        ("site.dormant", {"channels": [1], "rectifier_eco": 1, "ac_offset_c": 1}, "rectifier_eco"),
        ("site.dormant", {"channels": [1], "rectifier_eco": True, "ac_offset_c": 11}, "ac_offset"),
        ("site.dormant", {"channels": 1, "rectifier_eco": True, "ac_offset_c": 1}, "channels"),
        (
            "site.dormant",
            {"channels": [1], "rectifier_eco": True, "ac_offset_c": 1, "until": -1},
            "until",
        ),
        ("site.wake", {"all": True}, "unknown field"),
        ("ac.setpoint", {"setpoint_c": 9.5}, "setpoint_c"),
        ("ac.setpoint", {"setpoint_c": float("nan")}, "setpoint_c"),
        ("breaker.set", {"channel": 3.0, "closed": True}, "expected an integer"),
        ("breaker.set", {"channel": 3}, "closed: missing"),
        ("rectifier.eco", {"enabled": "yes"}, "enabled"),
    ],
)
def test_command_params_refused(action: str, params: dict[str, Any], needle: str) -> None:
    with pytest.raises(MessageError, match=needle):
        decode(_cmd_map(action, params))


@pytest.mark.parametrize(
    ("over", "needle"),
    [
        ({"id": "not-a-uuid"}, "UUID"),
        ({"id": CMD_ID.upper()}, "UUID"),
        ({"site": "a/b"}, "site"),
        ({"site": "aggregator"}, "reserved"),
        ({"expires": T0}, "not after issued"),
        ({"lease_s": 0}, "lease_s"),
        ({"seq": -1}, "seq"),
        ({"issued": 1.5}, "issued"),
    ],
)
def test_command_fields_refused(over: dict[str, Any], needle: str) -> None:
    with pytest.raises(MessageError, match=needle):
        decode(_cmd_map("site.wake", {}, **over))


def test_command_params_must_be_a_map() -> None:
    with pytest.raises(MessageError, match="params"):
        decode(_cmd_map("site.wake", [1]))  # type: ignore[arg-type]


def test_params_constructors_validate() -> None:
    with pytest.raises(MessageError):
        PeakShave(0.0)
    with pytest.raises(MessageError):
        Dormant((1, 99), True, 1.0)
    with pytest.raises(MessageError):
        BreakerSet(0, True)
    assert Command(CMD_ID, "s", 1, T0, T0 + 1, 60, BreakerSet(2, True)).action is Action.BREAKER_SET


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"t": [T0, "x"] + [0] * 98}, "times"),
        ({"k": [0, 99] + [0] * 98}, "key index"),
        ({"k": [-1] + [0] * 99}, "key index"),
        ({"v": [{}] * 100}, "value of type"),
        ({"v": [float("inf")] * 100}, "NaN or infinite"),
        ({"v": [2**65] * 100}, "64 bits"),
        ({"t": [T0]}, "differ in length"),
        ({"t": [-1] + [0] * 99}, "time"),
        ({"q": {0: 99}}, "quality"),
        ({"q": {100: 1}}, "reading index"),
        ({"q": [1]}, "expected a map"),
        ({"keys": [[9, "p"]]}, "device index"),
        ({"keys": [[0, ""]]}, "name"),
        ({"devices": [1]}, "name"),
        ({"hist": 0}, "hist"),
        ({"seq": True}, "seq"),
        ({"site": ""}, "site"),
        ({"boot": "x" * 65}, "boot"),
    ],
)
def test_telemetry_refused(change: dict[str, Any], needle: str) -> None:
    m = _batch().to_map()
    m.update(change)
    with pytest.raises(MessageError, match=needle):
        decode(m)


@pytest.mark.parametrize(
    ("msg", "change", "needle"),
    [
        (EXAMPLES[3], {"newest": T0 - 86_400_001}, "before oldest"),
        (EXAMPLES[3], {"count": 0}, "count"),
        (EXAMPLES[4], {"devices": {"d": 1}}, "devices"),
        (EXAMPLES[4], {"online": None}, "online"),
        (EXAMPLES[6], {"seqs": []}, "empty"),
        (EXAMPLES[6], {"seqs": [1, "2"]}, "seqs"),
        (EXAMPLES[7], {"t": 2**60}, "outside"),
        (EXAMPLES[10], {"reason": ""}, "required"),
        (EXAMPLES[10], {"status": "done"}, "unknown status"),
        (EXAMPLES[9], {"readback": {"p": [1]}}, "readback"),
        (EXAMPLES[9], {"readback": {1: 1}}, "readback"),
    ],
)
def test_other_messages_refused(msg: Message, change: dict[str, Any], needle: str) -> None:
    m = msg.to_map()
    m.update(change)
    with pytest.raises(MessageError, match=needle):
        decode(m)


@pytest.mark.parametrize("obj", [None, 1, [], {}, {"type": "nope"}, {"type": 1}, {"type": ["x"]}])
def test_unknown_shapes(obj: object) -> None:
    with pytest.raises(MessageError):
        decode(obj)


def test_unknown_top_level_fields_are_ignored() -> None:
    m = EXAMPLES[7].to_map() | {"future": 1}
    assert decode(m) == EXAMPLES[7]


_leaf = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.binary(max_size=8)
    | st.text(max_size=8)
    | st.sampled_from(["telemetry", "state", "site-001", "battery.charge", "applied", CMD_ID])
)
_any = st.recursive(
    _leaf,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(st.integers(-3, 3) | st.text(max_size=8), inner, max_size=5)
        | st.builds(cbor2.CBORTag, st.sampled_from([0, 1, 2, 4, 30, 258, 1000]), inner)
    ),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_loads_arbitrary_bytes_raises_only_message_error(data: bytes) -> None:
    with contextlib.suppress(MessageError):
        loads(data)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(sorted(MESSAGE_TYPES)), _any)
def test_decode_arbitrary_map_raises_only_our_errors(kind: str, extra: Any) -> None:
    m = {"type": kind}
    if isinstance(extra, dict):
        m.update(extra)
    with contextlib.suppress(ProtocolError):
        decode(m)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(EXAMPLES), st.text(max_size=10), _any)
def test_mutated_valid_messages_raise_only_message_error(msg: Message, key: str, val: Any) -> None:
    """Replace one field (or one command param) of a valid message with arbitrary CBOR."""
    m = msg.to_map()
    fields = sorted(m)
    target = m
    if isinstance(msg, Command) and m["params"] and len(key) % 2:
        target = m["params"]
        fields = sorted(target)
    target[fields[len(key) % len(fields)] if key[:1] != "!" else key] = val
    try:
        data = cbor2.dumps(m)
    except Exception:
        return
    with contextlib.suppress(MessageError):
        loads(data)


def test_compact_form_size_and_decode_speed() -> None:
    """Report bytes/reading vs naive JSON and decode throughput (target ≥ 300k readings/s)."""
    batch = _batch(100)
    data = encode(batch)
    naive = json.dumps(
        [
            {"t": r.t, "device": r.device, "point": r.point, "value": r.value, "q": r.quality.label}
            for r in batch.readings
        ]
    ).encode()
    assert len(data) < len(naive) / 3
    start = time.perf_counter()
    rounds = 200
    for _ in range(rounds):
        loads(data)
    rate = rounds * 100 / (time.perf_counter() - start)
    print(f"{len(data) / 100:.1f} B/reading (JSON {len(naive) / 100:.1f}); {rate:,.0f} readings/s")
    assert rate > 100_000  # loose floor for a loaded CI machine; typical is >1M/s
