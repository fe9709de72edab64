"""Message schemas: the CBOR maps inside the envelope, typed, encoded and strictly decoded.

Every payload is a map with a `type` field, so `decode` needs nothing else to know what it holds.
Decoders take whatever cbor2 produced from verified bytes and either return a frozen dataclass or
raise MessageError naming the message type, the field and the problem — never anything else.
Unknown top-level fields are ignored (a later minor version may add some); unknown command params
are refused (a command must mean exactly what the agent thinks it means).

Telemetry travels in a compact columnar form (docs/protocol.md, "Telemetry batch"): a dictionary of
devices and (device, point) keys, then parallel arrays of delta-coded times, key indexes and values,
and a sparse map of the qualities that are not `good`. Decoding runs in a handful of C-level passes
(cbor2, `map`, `itertools.accumulate`), and the readings stay columns (`ReadingColumns`): no Python
object per reading.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import accumulate
from typing import Any, ClassVar, Self

import cbor2

from protocols.errors import MessageError
from protocols.topics import site_id_problem
from protocols.types import Quality, Reading, ReadingColumns, Value

MS_MAX = 2**53  # timestamps stay exact in a JavaScript number (the dashboard)
SEQ_MAX = 2**63 - 1
INT_VALUE_MIN, INT_VALUE_MAX = -(2**63), 2**64 - 1
NAME_MAX = 64  # device ids, point names, boot ids
TEXT_MAX = 1024  # reasons, versions
MAX_READINGS = 100_000
MAX_KEYS = 10_000
MAX_RECEIPT_SEQS = 10_000
LEASE_MAX_S = 7 * 86_400
CHANNEL_MIN, CHANNEL_MAX = 1, 64

_QUALITIES: tuple[Quality, ...] = tuple(Quality)  # index = wire code (codes are 0..n-1)
assert all(q.value == i for i, q in enumerate(_QUALITIES))
_GOOD = Quality.GOOD
_VALUE_TYPES = frozenset({int, float, bool, type(None)})


# -- field checks ---------------------------------------------------------------------------------
# Each takes the message map, the field name and the message type (for the error), and returns the
# value in its Python type. `type(x) is int` on purpose: bool is an int subclass and is not a number
# here.


def _fail(where: str, key: str, problem: str) -> MessageError:
    return MessageError(f"{where}.{key}: {problem}")


def _req(m: Mapping[Any, Any], key: str, where: str) -> Any:
    try:
        return m[key]
    except KeyError:
        raise _fail(where, key, "missing") from None


def _int(m: Mapping[Any, Any], key: str, where: str, lo: int, hi: int) -> int:
    v = _req(m, key, where)
    if type(v) is not int:
        raise _fail(where, key, f"expected an integer, got {type(v).__name__}")
    if not lo <= v <= hi:
        raise _fail(where, key, f"{v} outside {lo}..{hi}")
    return v


def _ms(m: Mapping[Any, Any], key: str, where: str) -> int:
    return _int(m, key, where, 0, MS_MAX)


def _seq(m: Mapping[Any, Any], key: str, where: str) -> int:
    return _int(m, key, where, 0, SEQ_MAX)


def _bool(m: Mapping[Any, Any], key: str, where: str) -> bool:
    v = _req(m, key, where)
    if type(v) is not bool:
        raise _fail(where, key, f"expected true/false, got {type(v).__name__}")
    return v


def _float(m: Mapping[Any, Any], key: str, where: str, lo: float, hi: float) -> float:
    v = _req(m, key, where)
    if type(v) is not float and type(v) is not int:
        raise _fail(where, key, f"expected a number, got {type(v).__name__}")
    if not lo <= v <= hi:  # NaN fails this too
        raise _fail(where, key, f"{v} outside {lo}..{hi}")
    return float(v)


def _str(m: Mapping[Any, Any], key: str, where: str, max_len: int, *, empty: bool = False) -> str:
    v = _req(m, key, where)
    if type(v) is not str:
        raise _fail(where, key, f"expected a string, got {type(v).__name__}")
    if len(v) > max_len or (not v and not empty):
        raise _fail(where, key, f"length {len(v)} outside {0 if empty else 1}..{max_len}")
    return v


def _name(v: object, where: str, key: str) -> str:
    if type(v) is not str or not 0 < len(v) <= NAME_MAX:
        raise _fail(where, key, f"expected a name of 1..{NAME_MAX} characters, got {v!r:.80}")
    return v


def _site(m: Mapping[Any, Any], where: str) -> str:
    v = _req(m, "site", where)
    problem = site_id_problem(v)
    if problem is not None:
        raise _fail(where, "site", problem)
    assert isinstance(v, str)
    return v


def _list(m: Mapping[Any, Any], key: str, where: str, max_len: int) -> list[Any]:
    v = _req(m, key, where)
    if not isinstance(v, list | tuple):
        raise _fail(where, key, f"expected an array, got {type(v).__name__}")
    if len(v) > max_len:
        raise _fail(where, key, f"{len(v)} items, at most {max_len}")
    return list(v)


def _map(m: Mapping[Any, Any], key: str, where: str, max_len: int) -> Mapping[Any, Any]:
    v = _req(m, key, where)
    if not isinstance(v, Mapping):
        raise _fail(where, key, f"expected a map, got {type(v).__name__}")
    if len(v) > max_len:
        raise _fail(where, key, f"{len(v)} entries, at most {max_len}")
    return v


def _check_values(values: Sequence[Any], where: str, key: str) -> None:
    types = set(map(type, values))
    if not types <= _VALUE_TYPES:
        bad = next(iter(types - _VALUE_TYPES))
        raise _fail(where, key, f"value of type {bad.__name__}; expected number, bool or null")
    if float in types and not all(map(math.isfinite, (x for x in values if type(x) is float))):
        raise _fail(where, key, "NaN or infinite value (use null with a quality instead)")
    if int in types:
        ints = [x for x in values if type(x) is int]
        if min(ints) < INT_VALUE_MIN or max(ints) > INT_VALUE_MAX:
            raise _fail(where, key, "integer value outside 64 bits")


def _only_keys(m: Mapping[Any, Any], where: str, allowed: Iterable[str]) -> None:
    extra = set(m) - set(allowed)
    if extra:
        names = ", ".join(sorted(repr(k)[:40] for k in extra))
        raise MessageError(f"{where}: unknown field(s) {names}")


# -- telemetry ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TelemetryBatch:
    """An immutable batch of readings. `seq` is unique per site for ever; `hist` marks a batch
    sent from the backlog, which fills history but never overwrites newer live state."""

    TYPE: ClassVar[str] = "telemetry"
    site: str
    boot: str
    seq: int
    sent: int
    readings: Sequence[Reading]  # decoded: a ReadingColumns (no object per reading)
    hist: bool = False

    def to_map(self) -> dict[str, Any]:
        devices: dict[str, int] = {}
        keys: dict[tuple[str, str], int] = {}
        times: list[int] = []
        idx: list[int] = []
        values: list[Value] = []
        bad_q: dict[int, int] = {}
        prev = 0
        for i, r in enumerate(self.readings):
            k = keys.get((r.device, r.point))
            if k is None:
                devices.setdefault(r.device, len(devices))
                k = keys[(r.device, r.point)] = len(keys)
            idx.append(k)
            times.append(r.t - prev)
            prev = r.t
            values.append(r.value)
            if r.quality is not _GOOD:
                bad_q[i] = int(r.quality)
        out: dict[str, Any] = {
            "type": self.TYPE,
            "site": self.site,
            "boot": self.boot,
            "seq": self.seq,
            "sent": self.sent,
            "hist": self.hist,
            "devices": list(devices),
            "keys": [[devices[dev], pt] for dev, pt in keys],
            "t": times,
            "k": idx,
            "v": values,
        }
        if bad_q:
            out["q"] = bad_q
        return out

    @classmethod
    def from_map(cls, m: Mapping[Any, Any]) -> Self:
        w = cls.TYPE
        devices = _list(m, "devices", w, MAX_KEYS)
        for d in devices:
            _name(d, w, "devices")
        raw_keys = _list(m, "keys", w, MAX_KEYS)
        key_dev: list[str] = []
        key_pt: list[str] = []
        for pair in raw_keys:
            if not isinstance(pair, list | tuple) or len(pair) != 2:
                raise _fail(w, "keys", f"expected [device index, point], got {pair!r:.80}")
            di, pt = pair
            if type(di) is not int or not 0 <= di < len(devices):
                raise _fail(w, "keys", f"device index {di!r:.40} not in devices")
            key_dev.append(devices[di])
            key_pt.append(_name(pt, w, "keys"))
        dt = _list(m, "t", w, MAX_READINGS)
        k = _list(m, "k", w, MAX_READINGS)
        v = _list(m, "v", w, MAX_READINGS)
        n = len(dt)
        if len(k) != n or len(v) != n:
            raise _fail(w, "t/k/v", f"arrays differ in length ({n}, {len(k)}, {len(v)})")
        if n:
            if set(map(type, dt)) != {int}:
                raise _fail(w, "t", "times must be integers")
            times = tuple(accumulate(dt))
            if min(times) < 0 or max(times) > MS_MAX:
                raise _fail(w, "t", f"a time falls outside 0..{MS_MAX}")
            if set(map(type, k)) != {int}:
                raise _fail(w, "k", "key indexes must be integers")
            if min(k) < 0 or max(k) >= len(raw_keys):
                raise _fail(w, "k", f"key index outside 0..{len(raw_keys) - 1}")
            _check_values(v, w, "v")
        else:
            times = ()
        quality: list[Quality] | None = None
        q = m.get("q")
        if q is not None:
            if not isinstance(q, Mapping):
                raise _fail(w, "q", f"expected a map, got {type(q).__name__}")
            quality = [_GOOD] * n
            for i, code in q.items():
                if type(i) is not int or not 0 <= i < n:
                    raise _fail(w, "q", f"reading index {i!r:.40} outside 0..{n - 1}")
                if type(code) is not int or not 0 <= code < len(_QUALITIES):
                    raise _fail(w, "q", f"unknown quality code {code!r:.40}")
                quality[i] = _QUALITIES[code]
        readings = ReadingColumns(
            times,
            tuple(map(key_dev.__getitem__, k)),
            tuple(map(key_pt.__getitem__, k)),
            tuple(v),
            tuple(quality) if quality is not None else (_GOOD,) * n,
        )
        return cls(
            site=_site(m, w),
            boot=_str(m, "boot", w, NAME_MAX),
            seq=_seq(m, "seq", w),
            sent=_ms(m, "sent", w),
            readings=readings,
            hist=_bool(m, "hist", w),
        )


@dataclass(frozen=True, slots=True)
class DataLoss:
    """Readings the agent dropped from a full outbox, reported on the telemetry topic.

    It takes a `seq` from the same sequence as batches, so it is receipted, deduplicated and
    re-sent exactly like one: a loss is never silent, and never counted twice.
    """

    TYPE: ClassVar[str] = "data_loss"
    site: str
    boot: str
    seq: int
    sent: int
    count: int
    oldest: int
    newest: int

    def to_map(self) -> dict[str, Any]:
        return {
            "type": self.TYPE,
            "site": self.site,
            "boot": self.boot,
            "seq": self.seq,
            "sent": self.sent,
            "count": self.count,
            "oldest": self.oldest,
            "newest": self.newest,
        }

    @classmethod
    def from_map(cls, m: Mapping[Any, Any]) -> Self:
        w = cls.TYPE
        oldest, newest = _ms(m, "oldest", w), _ms(m, "newest", w)
        if newest < oldest:
            raise _fail(w, "newest", f"{newest} is before oldest {oldest}")
        return cls(
            site=_site(m, w),
            boot=_str(m, "boot", w, NAME_MAX),
            seq=_seq(m, "seq", w),
            sent=_ms(m, "sent", w),
            count=_int(m, "count", w, 1, SEQ_MAX),
            oldest=oldest,
            newest=newest,
        )


# -- state, receipts ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SiteState:
    """A site's birth (online) or death (offline, the LWT signed at connect time) certificate.

    `devices` maps each device id to the profile it is polled with.
    """

    TYPE: ClassVar[str] = "state"
    site: str
    online: bool
    boot: str
    version: str
    t: int
    devices: Mapping[str, str] = field(default_factory=dict)

    def to_map(self) -> dict[str, Any]:
        return {
            "type": self.TYPE,
            "site": self.site,
            "online": self.online,
            "boot": self.boot,
            "version": self.version,
            "t": self.t,
            "devices": dict(self.devices),
        }

    @classmethod
    def from_map(cls, m: Mapping[Any, Any]) -> Self:
        w = cls.TYPE
        devices = {
            _name(d, w, "devices"): _name(p, w, "devices")
            for d, p in _map(m, "devices", w, MAX_KEYS).items()
        }
        return cls(
            site=_site(m, w),
            online=_bool(m, "online", w),
            boot=_str(m, "boot", w, NAME_MAX),
            version=_str(m, "version", w, NAME_MAX),
            t=_ms(m, "t", w),
            devices=devices,
        )


@dataclass(frozen=True, slots=True)
class Receipt:
    """The aggregator's word that these batch (and data-loss) seqs are durably stored."""

    TYPE: ClassVar[str] = "receipt"
    site: str
    seqs: tuple[int, ...]
    t: int

    def to_map(self) -> dict[str, Any]:
        return {"type": self.TYPE, "site": self.site, "seqs": list(self.seqs), "t": self.t}

    @classmethod
    def from_map(cls, m: Mapping[Any, Any]) -> Self:
        w = cls.TYPE
        seqs = _list(m, "seqs", w, MAX_RECEIPT_SEQS)
        if not seqs:
            raise _fail(w, "seqs", "empty")
        if set(map(type, seqs)) != {int} or min(seqs) < 0 or max(seqs) > SEQ_MAX:
            raise _fail(w, "seqs", f"expected integers in 0..{SEQ_MAX}")
        return cls(site=_site(m, w), seqs=tuple(seqs), t=_ms(m, "t", w))


@dataclass(frozen=True, slots=True)
class AggregatorState:
    """The aggregator's retained online/offline state (offline is its LWT). While it reads
    offline, agents keep buffering and do not publish (the primary-host rule)."""

    TYPE: ClassVar[str] = "aggregator_state"
    online: bool
    t: int

    def to_map(self) -> dict[str, Any]:
        return {"type": self.TYPE, "online": self.online, "t": self.t}

    @classmethod
    def from_map(cls, m: Mapping[Any, Any]) -> Self:
        return cls(online=_bool(m, "online", cls.TYPE), t=_ms(m, "t", cls.TYPE))


# -- commands -------------------------------------------------------------------------------------


class Action(StrEnum):
    BATTERY_PEAK_SHAVE = "battery.peak_shave"
    BATTERY_CHARGE = "battery.charge"
    BATTERY_AUTO = "battery.auto"
    SITE_DORMANT = "site.dormant"
    SITE_WAKE = "site.wake"
    AC_SETPOINT = "ac.setpoint"
    BREAKER_SET = "breaker.set"
    RECTIFIER_ECO = "rectifier.eco"


def _params_where(action: Action) -> str:
    return f"command.params[{action.value}]"


@dataclass(frozen=True, slots=True)
class PeakShave:
    """Run the site from its battery, discharging at most `discharge_limit_w`."""

    ACTION: ClassVar[Action] = Action.BATTERY_PEAK_SHAVE
    discharge_limit_w: float

    def __post_init__(self) -> None:
        if not self.discharge_limit_w > 0 or not math.isfinite(self.discharge_limit_w):
            raise MessageError(f"{_params_where(self.ACTION)}.discharge_limit_w: must be > 0")

    def to_map(self) -> dict[str, Any]:
        return {"discharge_limit_w": self.discharge_limit_w}

    @classmethod
    def from_map(cls, m: Mapping[Any, Any]) -> Self:
        w = _params_where(cls.ACTION)
        _only_keys(m, w, ("discharge_limit_w",))
        return cls(_float(m, "discharge_limit_w", w, 0.0, math.inf))


@dataclass(frozen=True, slots=True)
class Charge:
    """Charge the battery at most `charge_limit_w` up to `target_soc` percent."""

    ACTION: ClassVar[Action] = Action.BATTERY_CHARGE
    charge_limit_w: float
    target_soc: float

    def __post_init__(self) -> None:
        w = _params_where(self.ACTION)
        if not self.charge_limit_w > 0 or not math.isfinite(self.charge_limit_w):
            raise MessageError(f"{w}.charge_limit_w: must be > 0")
        if not 0 <= self.target_soc <= 100:
            raise MessageError(f"{w}.target_soc: must be within 0..100")

    def to_map(self) -> dict[str, Any]:
        return {"charge_limit_w": self.charge_limit_w, "target_soc": self.target_soc}

    @classmethod
    def from_map(cls, m: Mapping[Any, Any]) -> Self:
        w = _params_where(cls.ACTION)
        _only_keys(m, w, ("charge_limit_w", "target_soc"))
        return cls(
            _float(m, "charge_limit_w", w, 0.0, math.inf), _float(m, "target_soc", w, 0, 100)
        )


@dataclass(frozen=True, slots=True)
class _NoParams:
    ACTION: ClassVar[Action]

    def to_map(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_map(cls, m: Mapping[Any, Any]) -> Self:
        _only_keys(m, _params_where(cls.ACTION), ())
        return cls()


@dataclass(frozen=True, slots=True)
class BatteryAuto(_NoParams):
    """Hand the battery back to the plant's own float/charge control."""

    ACTION: ClassVar[Action] = Action.BATTERY_AUTO


@dataclass(frozen=True, slots=True)
class Wake(_NoParams):
    """Leave dormant mode: close every breaker, wake rectifiers, restore AC setpoints."""

    ACTION: ClassVar[Action] = Action.SITE_WAKE


@dataclass(frozen=True, slots=True)
class Dormant:
    """Enter dormant mode: open `channels`, optionally hibernate rectifier modules (ECO) and
    raise AC setpoints by `ac_offset_c`, until `until` (ms) or the lease ends."""

    ACTION: ClassVar[Action] = Action.SITE_DORMANT
    channels: tuple[int, ...]
    rectifier_eco: bool
    ac_offset_c: float
    until: int | None = None

    def __post_init__(self) -> None:
        w = _params_where(self.ACTION)
        if any(
            type(c) is not int or not CHANNEL_MIN <= c <= CHANNEL_MAX for c in self.channels
        ) or len(set(self.channels)) != len(self.channels):
            raise MessageError(f"{w}.channels: distinct integers {CHANNEL_MIN}..{CHANNEL_MAX}")
        if not 0 <= self.ac_offset_c <= 10:
            raise MessageError(f"{w}.ac_offset_c: must be within 0..10")

    def to_map(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "channels": list(self.channels),
            "rectifier_eco": self.rectifier_eco,
            "ac_offset_c": self.ac_offset_c,
        }
        if self.until is not None:
            out["until"] = self.until
        return out

    @classmethod
    def from_map(cls, m: Mapping[Any, Any]) -> Self:
        w = _params_where(cls.ACTION)
        _only_keys(m, w, ("channels", "rectifier_eco", "ac_offset_c", "until"))
        return cls(
            channels=tuple(_list(m, "channels", w, CHANNEL_MAX)),
            rectifier_eco=_bool(m, "rectifier_eco", w),
            ac_offset_c=_float(m, "ac_offset_c", w, 0, 10),
            until=_ms(m, "until", w) if "until" in m else None,
        )


@dataclass(frozen=True, slots=True)
class AcSetpoint:
    """Set the air-conditioner's room setpoint (°C); the agent still clamps to its own bounds."""

    ACTION: ClassVar[Action] = Action.AC_SETPOINT
    setpoint_c: float

    def __post_init__(self) -> None:
        if not 10 <= self.setpoint_c <= 40:
            raise MessageError(f"{_params_where(self.ACTION)}.setpoint_c: must be within 10..40")

    def to_map(self) -> dict[str, Any]:
        return {"setpoint_c": self.setpoint_c}

    @classmethod
    def from_map(cls, m: Mapping[Any, Any]) -> Self:
        w = _params_where(cls.ACTION)
        _only_keys(m, w, ("setpoint_c",))
        return cls(_float(m, "setpoint_c", w, 10, 40))


@dataclass(frozen=True, slots=True)
class BreakerSet:
    """Open or close one breaker channel (critical channels are refused by the agent)."""

    ACTION: ClassVar[Action] = Action.BREAKER_SET
    channel: int
    closed: bool

    def __post_init__(self) -> None:
        if type(self.channel) is not int or not CHANNEL_MIN <= self.channel <= CHANNEL_MAX:
            w = _params_where(self.ACTION)
            raise MessageError(f"{w}.channel: must be an integer {CHANNEL_MIN}..{CHANNEL_MAX}")

    def to_map(self) -> dict[str, Any]:
        return {"channel": self.channel, "closed": self.closed}

    @classmethod
    def from_map(cls, m: Mapping[Any, Any]) -> Self:
        w = _params_where(cls.ACTION)
        _only_keys(m, w, ("channel", "closed"))
        return cls(_int(m, "channel", w, CHANNEL_MIN, CHANNEL_MAX), _bool(m, "closed", w))


@dataclass(frozen=True, slots=True)
class RectifierEco:
    """Switch the rectifier plant's ECO mode (hibernate surplus modules) on or off."""

    ACTION: ClassVar[Action] = Action.RECTIFIER_ECO
    enabled: bool

    def to_map(self) -> dict[str, Any]:
        return {"enabled": self.enabled}

    @classmethod
    def from_map(cls, m: Mapping[Any, Any]) -> Self:
        w = _params_where(cls.ACTION)
        _only_keys(m, w, ("enabled",))
        return cls(_bool(m, "enabled", w))


Params = PeakShave | Charge | BatteryAuto | Dormant | Wake | AcSetpoint | BreakerSet | RectifierEco

PARAMS_BY_ACTION: dict[Action, type[Params]] = {
    cls.ACTION: cls
    for cls in (PeakShave, Charge, BatteryAuto, Dormant, Wake, AcSetpoint, BreakerSet, RectifierEco)
}


def _uuid(m: Mapping[Any, Any], where: str) -> str:
    v = _str(m, "id", where, 36)
    try:
        canonical = str(uuid.UUID(v))
    except ValueError:
        canonical = ""
    if canonical != v:
        raise _fail(where, "id", f"{v!r} is not a lowercase hyphenated UUID")
    return v


@dataclass(frozen=True, slots=True)
class Command:
    """A signed order to one site. `action` follows from the type of `params`.

    The agent runs it only if the signature verifies against a pinned aggregator key, `site` is
    its own, `expires` is in the future, `seq` is above the last accepted, and its interlocks allow.
    When `lease_s` runs out without renewal, the agent returns the site to its safe default.
    """

    TYPE: ClassVar[str] = "command"
    id: str
    site: str
    seq: int
    issued: int
    expires: int
    lease_s: int
    params: Params

    @property
    def action(self) -> Action:
        return self.params.ACTION

    def to_map(self) -> dict[str, Any]:
        return {
            "type": self.TYPE,
            "id": self.id,
            "site": self.site,
            "seq": self.seq,
            "issued": self.issued,
            "expires": self.expires,
            "lease_s": self.lease_s,
            "action": self.action.value,
            "params": self.params.to_map(),
        }

    @classmethod
    def from_map(cls, m: Mapping[Any, Any]) -> Self:
        w = cls.TYPE
        name = _req(m, "action", w)
        try:
            action = Action(name)
        except ValueError:
            known = ", ".join(a.value for a in Action)
            raise _fail(w, "action", f"unknown action {name!r:.60} (known: {known})") from None
        params = PARAMS_BY_ACTION[action].from_map(_map(m, "params", w, 16))
        issued, expires = _ms(m, "issued", w), _ms(m, "expires", w)
        if expires <= issued:
            raise _fail(w, "expires", f"{expires} is not after issued {issued}")
        return cls(
            id=_uuid(m, w),
            site=_site(m, w),
            seq=_seq(m, "seq", w),
            issued=issued,
            expires=expires,
            lease_s=_int(m, "lease_s", w, 1, LEASE_MAX_S),
            params=params,
        )


class AckStatus(StrEnum):
    APPLIED = "applied"  # written and read back
    REJECTED = "rejected"  # refused before any write: expired, stale seq, interlock, wrong site
    FAILED = "failed"  # tried, but a write or the read-back failed


@dataclass(frozen=True, slots=True)
class Ack:
    """A command's outcome. `readback` maps point names (`device.point`) to the values read
    back after the write; `reason` says why for rejected/failed."""

    TYPE: ClassVar[str] = "ack"
    id: str
    site: str
    seq: int
    status: AckStatus
    t: int
    reason: str = ""
    readback: Mapping[str, Value] = field(default_factory=dict)

    def to_map(self) -> dict[str, Any]:
        return {
            "type": self.TYPE,
            "id": self.id,
            "site": self.site,
            "seq": self.seq,
            "status": self.status.value,
            "reason": self.reason,
            "readback": dict(self.readback),
            "t": self.t,
        }

    @classmethod
    def from_map(cls, m: Mapping[Any, Any]) -> Self:
        w = cls.TYPE
        raw = _req(m, "status", w)
        try:
            status = AckStatus(raw)
        except ValueError:
            raise _fail(w, "status", f"unknown status {raw!r:.40}") from None
        reason = _str(m, "reason", w, TEXT_MAX, empty=True)
        if status is not AckStatus.APPLIED and not reason:
            raise _fail(w, "reason", f"required when status is {status.value}")
        readback_map = _map(m, "readback", w, MAX_KEYS)
        readback: dict[str, Value] = {}
        for k, v in readback_map.items():
            if type(k) is not str or not 0 < len(k) <= 2 * NAME_MAX + 1:
                raise _fail(w, "readback", f"point name {k!r:.80} is not a 1..129 char string")
            readback[k] = v
        _check_values(list(readback.values()), w, "readback")
        return cls(
            id=_uuid(m, w),
            site=_site(m, w),
            seq=_seq(m, "seq", w),
            status=status,
            t=_ms(m, "t", w),
            reason=reason,
            readback=readback,
        )


# -- dispatch -------------------------------------------------------------------------------------

Message = TelemetryBatch | DataLoss | SiteState | Receipt | Command | Ack | AggregatorState

MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.TYPE: cls
    for cls in (TelemetryBatch, DataLoss, SiteState, Receipt, Command, Ack, AggregatorState)
}


def decode(obj: object) -> Message:
    """The typed message for a payload map (as `envelope.unseal` returns it); MessageError if
    it is not one, whatever `obj` is."""
    if not isinstance(obj, Mapping):
        raise MessageError(f"payload must be a map, got {type(obj).__name__}")
    kind = obj.get("type")
    cls = MESSAGE_TYPES.get(kind) if type(kind) is str else None
    if cls is None:
        raise MessageError(f"unknown message type {kind!r:.60}")
    try:
        return cls.from_map(obj)
    except MessageError:
        raise
    # A check above that assumed a shape the input does not have (say, unhashable map keys) must
    # still surface as the one error callers handle.
    except (TypeError, ValueError, KeyError, IndexError, OverflowError) as exc:
        raise MessageError(f"{kind}: malformed ({exc})") from exc


def encode(msg: Message) -> bytes:
    """The CBOR bytes of `msg`'s payload map, ready for `envelope.Signer.seal_bytes`.

    Canonical CBOR (RFC 8949 §4.2.1): deterministic, and floats take the shortest exact form
    (230.0 is 3 bytes, not 9).
    """
    return cbor2.dumps(msg.to_map(), canonical=True)


def loads(data: bytes) -> Message:
    """`decode` of CBOR bytes (a payload not already decoded by the envelope)."""
    try:
        obj = cbor2.loads(data)
    except Exception as exc:  # cbor2's error surface on hostile bytes is wide; see envelope
        raise MessageError(f"payload is not valid CBOR: {exc}") from exc
    return decode(obj)


__all__ = [
    "MESSAGE_TYPES",
    "MS_MAX",
    "PARAMS_BY_ACTION",
    "AcSetpoint",
    "Ack",
    "AckStatus",
    "Action",
    "AggregatorState",
    "BatteryAuto",
    "BreakerSet",
    "Charge",
    "Command",
    "DataLoss",
    "Dormant",
    "Message",
    "Params",
    "PeakShave",
    "Receipt",
    "RectifierEco",
    "SiteState",
    "TelemetryBatch",
    "Wake",
    "decode",
    "encode",
    "loads",
]
