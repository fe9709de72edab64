"""The site config: one TOML file per site, validated once at start into frozen objects.

`load_config(path)` reads the file, resolves relative paths against the file's directory, checks
every field and the fields against each other, and raises `ConfigError` listing every problem as
"key.path: what is wrong" (unknown keys included, so a typo never silently becomes a default).
config/site.toml is the commented example.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from agent.errors import ConfigError
from protocols.clock import DEFAULT_TZ, ClockSettings
from protocols.errors import ConfigError as ProtocolConfigError
from protocols.keys import load_public_key_hex
from protocols.types import DeviceKind

GATEWAY_DEVICE = "gateway"
"""Reserved device id under which the agent reports its own health (psutil)."""

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_CROSS_CHECK = "\x00cross-check\x00"  # marks our own multi-problem ValueError in pydantic's output


def _resolve(value: Path, info: ValidationInfo) -> Path:
    """Relative paths in a config are relative to the config file, not to the working dir."""
    base = (info.context or {}).get("base")
    value = value.expanduser()
    if value.is_absolute() or base is None:
        return value
    return Path(os.path.normpath(Path(base) / value))


ConfigPath = Annotated[Path, AfterValidator(_resolve)]
Channels = tuple[Annotated[int, Field(ge=1, le=64)], ...]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


class SiteSection(_Frozen):
    """Who this site is and whom it trusts."""

    id: str = Field(min_length=1, max_length=64)
    timezone: str = DEFAULT_TZ
    key_file: ConfigPath
    aggregator_keys: tuple[str, ...] = Field((), max_length=2)
    aggregator_key_files: tuple[ConfigPath, ...] = Field((), max_length=2)

    def pinned_keys(self) -> tuple[str, ...]:
        """The aggregator public keys (hex) to trust: listed, then read from the key files."""
        keys = list(self.aggregator_keys)
        for path in self.aggregator_key_files:
            found = read_key_file(path)
            if found is not None and found not in keys:
                keys.append(found)
        return tuple(keys)


class BrokerConfig(_Frozen):
    """The MQTT broker: address, TLS, per-site credentials, topic prefix."""

    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    tls: bool = False
    ca_file: ConfigPath | None = None
    cert_file: ConfigPath | None = None
    key_file: ConfigPath | None = None
    username: str | None = None
    password: SecretStr | None = None
    password_file: ConfigPath | None = None
    client_id: str | None = None
    topic_prefix: str = "sitewatt/v1"
    keepalive_s: int = Field(30, ge=5, le=3600)

    def read_password(self) -> str | None:
        """The password, from the config or from `password_file` (first line, stripped)."""
        if self.password is not None:
            return self.password.get_secret_value()
        if self.password_file is not None:
            try:
                text = self.password_file.read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(
                    [f"broker.password_file: cannot read {self.password_file}: {exc.strerror}"]
                ) from exc
            return text.splitlines()[0].strip() if text.strip() else ""
        return None


class OutboxConfig(_Frozen):
    """The local SQLite store: where it lives and how far it may grow before dropping oldest."""

    path: ConfigPath = Path("/var/lib/sitewatt/agent.db")
    max_age_days: float = Field(7.0, gt=0)
    max_mb: float = Field(200.0, gt=0)
    batch_max_readings: int = Field(1000, ge=1, le=100_000)
    batch_max_age_s: float = Field(5.0, gt=0)
    inflight_batches: int = Field(32, ge=1, le=1000)
    receipt_timeout_s: float = Field(60.0, gt=0)
    drain_jitter_max_s: float = Field(30.0, ge=0)

    @property
    def max_bytes(self) -> int:
        return int(self.max_mb * 1_000_000)

    @property
    def max_age_s(self) -> float:
        return self.max_age_days * 86400.0


class PollingConfig(_Frozen):
    """How every device's schedule is shaped: jitter and the backoff of a silent device."""

    jitter: float = Field(0.1, ge=0, le=0.5)
    backoff_factor: float = Field(2.0, ge=1.0, le=10.0)
    backoff_max_s: float = Field(300.0, gt=0)
    rtu_frame_gap_ms: float | None = Field(None, ge=0, le=1000)


class GatewayConfig(_Frozen):
    """The gateway's own health (CPU, memory, disk, temperature, RSS) as device `gateway`."""

    enabled: bool = True
    interval_s: float = Field(60.0, gt=0)
    max_interval_s: float = Field(900.0, gt=0)
    disk_path: ConfigPath | None = None
    deadbands: dict[str, Annotated[float, Field(ge=0)]] = Field(default_factory=dict)


class InterlocksConfig(_Frozen):
    """Site facts the interlocks need; they hold whatever the aggregator says."""

    battery_capacity_wh: float | None = Field(None, gt=0)
    backup_hours: float = Field(3.0, ge=0, le=72)
    reserve_floor_pct: float = Field(10.0, ge=0, le=100)
    discharge_efficiency: float = Field(0.95, gt=0, le=1)
    critical_channels: dict[str, Channels] = Field(default_factory=dict)
    coverage_channels: dict[str, Channels] = Field(default_factory=dict)
    capacity_channels: dict[str, Channels] = Field(default_factory=dict)
    ac_setpoint_min_c: float = Field(18.0, ge=5, le=40)
    ac_setpoint_max_c: float = Field(32.0, ge=5, le=45)
    ac_default_setpoint_c: float = Field(25.0, ge=5, le=45)
    rectifier_eco_default: bool = False
    """The site's own ECO setting: what site.wake, a lapsed lease and the aggregator going
    offline return the rectifier to (a site whose plant runs ECO normally keeps it)."""
    room_temp_limit_c: float = Field(35.0, ge=20, le=60)
    dormant_load_rise_pct: float = Field(30.0, gt=0, le=1000)
    dormant_settle_s: float = Field(120.0, ge=0, le=3600)
    """After the capacity channels open, how long the coverage cells take over their traffic
    before the coverage load is taken as the baseline of the load-rise rule."""


class DeviceConfig(_Frozen):
    """One Modbus device: what it is, how to reach it, how often to poll it."""

    kind: DeviceKind
    profile: str = Field(min_length=1)
    host: str | None = None
    port: int = Field(502, ge=1, le=65535)
    serial: ConfigPath | None = None
    baud: int = Field(9600, ge=300, le=921_600)
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
    unit_id: int = Field(1, ge=0, le=247)
    poll_interval_s: float = Field(5.0, gt=0, le=86400)
    timeout_s: float = Field(1.0, gt=0, le=60)
    retries: int = Field(1, ge=0, le=10)
    max_interval_s: float = Field(300.0, gt=0)
    deadbands: dict[str, Annotated[float, Field(ge=0)]] = Field(default_factory=dict)
    enabled: bool = True

    @property
    def transport(self) -> Literal["tcp", "rtu"]:
        return "rtu" if self.serial is not None else "tcp"

    @property
    def bus(self) -> str:
        """The physical bus: devices with the same bus share one connection and one lock."""
        if self.serial is not None:
            return f"rtu:{self.serial}"
        return f"tcp:{self.host}:{self.port}"

    @property
    def endpoint(self) -> str:
        """Where the device is, as a technician would write it."""
        if self.serial is not None:
            return f"{self.serial} {self.baud} {self.bytesize}{self.parity}{self.stopbits}"
        return f"{self.host}:{self.port}"


class SiteConfig(_Frozen):
    """A whole site's agent config. Build it with `load_config` or `parse_config`."""

    site: SiteSection
    broker: BrokerConfig = Field(default_factory=BrokerConfig)
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)
    polling: PollingConfig = Field(default_factory=PollingConfig)
    gateway: GatewayConfig = Field(default_factory=GatewayConfig)
    interlocks: InterlocksConfig = Field(default_factory=InterlocksConfig)
    clock: ClockSettings = Field(default_factory=ClockSettings)
    devices: dict[str, DeviceConfig] = Field(min_length=1)
    profiles_dir: ConfigPath = Field(Path("profiles"), validate_default=True)
    source: Path | None = Field(None, exclude=True)

    @model_validator(mode="after")
    def _cross_check(self) -> SiteConfig:
        problems = list(_problems(self))
        if problems:
            raise ValueError(_CROSS_CHECK + "\n".join(problems))
        return self

    @property
    def site_id(self) -> str:
        return self.site.id

    @property
    def client_id(self) -> str:
        return self.broker.client_id or f"sitewatt-agent-{self.site.id}"

    def profile_path(self, device_id: str) -> Path:
        """The profile file of a device: a name in `profiles_dir`, or a path to a .toml file."""
        return resolve_profile(self.devices[device_id].profile, self.profiles_dir, self.source)

    def buses(self) -> dict[str, list[str]]:
        """Enabled device ids grouped by physical bus, in config order."""
        out: dict[str, list[str]] = {}
        for dev_id, dev in self.devices.items():
            if dev.enabled:
                out.setdefault(dev.bus, []).append(dev_id)
        return out

    def devices_of(self, kind: DeviceKind) -> list[str]:
        return [d for d, dev in self.devices.items() if dev.kind is kind and dev.enabled]


_HEX_KEY_RE = re.compile(r"\b[0-9a-fA-F]{64}\b")


def read_key_file(path: Path) -> str | None:
    """The first 64-hex-digit token of a file (`sitewatt-aggregator keys show` output works)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    m = _HEX_KEY_RE.search(text)
    return m.group(0).lower() if m else None


def resolve_profile(profile: str, profiles_dir: Path, source: Path | None = None) -> Path:
    """`name` → profiles_dir/name.toml; anything with a slash or a .toml suffix is a path."""
    if "/" in profile or profile.endswith(".toml"):
        p = Path(profile).expanduser()
        if not p.is_absolute() and source is not None:
            p = source.parent / p
        return p
    return profiles_dir / f"{profile}.toml"


def _problems(cfg: SiteConfig) -> Iterator[str]:
    """Every cross-field problem as "key.path: problem"."""
    s = cfg.site
    if not _ID_RE.match(s.id):
        yield (
            f"site.id: {s.id!r} must be 1-64 letters, digits, '_', '.', '-' "
            "(it becomes an MQTT topic level)"
        )
    try:
        ZoneInfo(s.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        yield f"site.timezone: unknown IANA time zone {s.timezone!r}"
    for i, key in enumerate(s.aggregator_keys):
        try:
            load_public_key_hex(key)
        except ProtocolConfigError as exc:
            yield f"site.aggregator_keys[{i}]: {exc}"
    if len(set(s.aggregator_keys)) != len(s.aggregator_keys):
        yield "site.aggregator_keys: the same key is listed twice"
    for i, path in enumerate(s.aggregator_key_files):
        if not path.is_file():
            yield (
                f"site.aggregator_key_files[{i}]: no such file {path} "
                "(write it with `sitewatt-aggregator keys show > FILE`)"
            )
        elif read_key_file(path) is None:
            yield f"site.aggregator_key_files[{i}]: {path} holds no 64-hex-digit public key"
    if not s.aggregator_keys and not s.aggregator_key_files:
        yield "site.aggregator_keys: pin at least one aggregator public key (or key file)"
    elif len(s.aggregator_keys) + len(s.aggregator_key_files) > 2:
        yield "site.aggregator_keys: at most two aggregator keys (old and new during a rotation)"

    yield from _broker_problems(cfg.broker)

    for dev_id, dev in cfg.devices.items():
        where = f"devices.{dev_id}"
        if not _ID_RE.match(dev_id):
            yield f"{where}: device id must be letters, digits, '_', '.', '-'"
        if dev_id == GATEWAY_DEVICE:
            yield f"{where}: {GATEWAY_DEVICE!r} is reserved for the agent's own health points"
        if dev.kind is DeviceKind.GATEWAY:
            yield f"{where}.kind: 'gateway' is the agent itself, not a Modbus device"
        if (dev.host is None) == (dev.serial is None):
            yield f"{where}: give either host (Modbus TCP) or serial (Modbus RTU), exactly one"
        if dev.serial is not None and dev.unit_id == 0:
            yield f"{where}.unit_id: 0 is the RTU broadcast address; use 1-247"
        if dev.max_interval_s < dev.poll_interval_s:
            yield (
                f"{where}.max_interval_s: heartbeat {dev.max_interval_s:g} s is shorter than "
                f"poll_interval_s {dev.poll_interval_s:g} s"
            )
        if dev.timeout_s * (dev.retries + 1) > dev.poll_interval_s * 4:
            yield (
                f"{where}.timeout_s: {dev.timeout_s:g} s x {dev.retries + 1} tries would take "
                f"longer than 4 poll intervals ({dev.poll_interval_s:g} s)"
            )
        for point, band in dev.deadbands.items():
            if not math.isfinite(band):
                yield f"{where}.deadbands.{point}: must be a finite number"
        path = resolve_profile(dev.profile, cfg.profiles_dir, cfg.source)
        if not path.is_file():
            yield f"{where}.profile: no profile file {path}{_available(cfg.profiles_dir)}"

    yield from _bus_problems(cfg)
    yield from _interlock_problems(cfg)
    if cfg.gateway.max_interval_s < cfg.gateway.interval_s:
        yield "gateway.max_interval_s: shorter than gateway.interval_s"


def _broker_problems(b: BrokerConfig) -> Iterator[str]:
    if b.password is not None and b.password_file is not None:
        yield "broker.password_file: give password or password_file, not both"
    if (b.password is not None or b.password_file is not None) and not b.username:
        yield "broker.username: a password is set but no username"
    if (b.cert_file is None) != (b.key_file is None):
        yield "broker.cert_file: cert_file and key_file go together (client certificate)"
    for name in ("ca_file", "cert_file", "key_file", "password_file"):
        p = getattr(b, name)
        if p is not None and not p.is_file():
            yield f"broker.{name}: no such file {p}"
        if name != "password_file" and p is not None and not b.tls:
            yield f"broker.{name}: only used with broker.tls = true"
    if not b.topic_prefix or any(c in b.topic_prefix for c in "#+") or b.topic_prefix[-1] == "/":
        yield (
            f"broker.topic_prefix: {b.topic_prefix!r} must be non-empty, "
            "without #, + or a trailing /"
        )
    if b.client_id is not None and not b.client_id:
        yield "broker.client_id: empty"


def _bus_problems(cfg: SiteConfig) -> Iterator[str]:
    """Devices on one serial line must agree on its settings and have distinct unit ids."""
    first: dict[str, tuple[str, DeviceConfig]] = {}
    units: dict[tuple[str, int], str] = {}
    for dev_id, dev in cfg.devices.items():
        if (dev.host is None) == (dev.serial is None):
            continue  # already reported
        bus = dev.bus
        if bus in first and dev.serial is not None:
            other_id, other = first[bus]
            for attr in ("baud", "parity", "stopbits", "bytesize"):
                if getattr(dev, attr) != getattr(other, attr):
                    yield (
                        f"devices.{dev_id}.{attr}: {getattr(dev, attr)!r} differs from "
                        f"{getattr(other, attr)!r} of {other_id!r} on the same serial line "
                        f"{dev.serial}"
                    )
        first.setdefault(bus, (dev_id, dev))
        key = (bus, dev.unit_id)
        if key in units:
            yield (
                f"devices.{dev_id}.unit_id: {dev.unit_id} is already used by "
                f"{units[key]!r} on {dev.endpoint}"
            )
        units.setdefault(key, dev_id)


def _interlock_problems(cfg: SiteConfig) -> Iterator[str]:
    il = cfg.interlocks
    if il.ac_setpoint_min_c >= il.ac_setpoint_max_c:
        yield "interlocks.ac_setpoint_min_c: must be below interlocks.ac_setpoint_max_c"
    elif not il.ac_setpoint_min_c <= il.ac_default_setpoint_c <= il.ac_setpoint_max_c:
        yield "interlocks.ac_default_setpoint_c: must lie within the AC setpoint bounds"
    if cfg.devices_of(DeviceKind.BATTERY) and il.battery_capacity_wh is None:
        yield (
            "interlocks.battery_capacity_wh: required when the site has a battery "
            "(the reserve SOC is computed from it)"
        )
    groups = {
        "critical_channels": il.critical_channels,
        "coverage_channels": il.coverage_channels,
        "capacity_channels": il.capacity_channels,
    }
    for name, mapping in groups.items():
        for dev_id, chans in mapping.items():
            where = f"interlocks.{name}.{dev_id}"
            dev = cfg.devices.get(dev_id)
            if dev is None:
                yield f"{where}: no device {dev_id!r} in [devices]"
            elif dev.kind is not DeviceKind.BREAKER:
                yield f"{where}: device {dev_id!r} is a {dev.kind.value}, not a breaker"
            if len(set(chans)) != len(chans):
                yield f"{where}: a channel is listed twice"
    for dev_id, chans in il.capacity_channels.items():
        both = sorted(set(chans) & set(il.critical_channels.get(dev_id, ())))
        if both:
            yield (
                f"interlocks.capacity_channels.{dev_id}: channel(s) {both} are also critical; "
                "a critical channel is never switched off"
            )
        both = sorted(set(chans) & set(il.coverage_channels.get(dev_id, ())))
        if both:
            yield (
                f"interlocks.capacity_channels.{dev_id}: channel(s) {both} are also coverage "
                "channels; the coverage layer stays on in dormant mode"
            )


def _available(profiles_dir: Path) -> str:
    names = sorted(p.stem for p in profiles_dir.glob("*.toml")) if profiles_dir.is_dir() else []
    return f" (available in {profiles_dir}: {', '.join(names)})" if names else ""


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _format(exc: ValidationError) -> list[str]:
    problems: list[str] = []
    for err in exc.errors(include_url=False):
        msg = str(err["msg"])
        if _CROSS_CHECK in msg:
            problems.extend(msg.split(_CROSS_CHECK, 1)[1].splitlines())
            continue
        where = _loc(tuple(err["loc"])) or "(top level)"
        if err["type"] == "extra_forbidden":
            problems.append(f"{where}: unknown key")
            continue
        if err["type"] == "missing":
            problems.append(f"{where}: required but missing")
            continue
        got = err.get("input")
        shown = "" if isinstance(got, dict | list) else f" (got {got!r})"
        problems.append(f"{where}: {msg}{shown}")
    return problems


def parse_config(
    data: Mapping[str, Any], *, base: Path | None = None, source: Path | None = None
) -> SiteConfig:
    """Validate an already-parsed TOML document; relative paths resolve against `base`."""
    payload = dict(data)
    payload["source"] = source
    try:
        return SiteConfig.model_validate(payload, context={"base": base})
    except ValidationError as exc:
        raise ConfigError(_format(exc), source=str(source or "")) from None


def load_config(path: str | Path) -> SiteConfig:
    """Read and validate the site's TOML config; ConfigError names every bad key."""
    path = Path(path).expanduser().resolve()
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError([f"cannot read: {exc.strerror or exc}"], source=str(path)) from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError([f"not valid TOML: {exc}"], source=str(path)) from exc
    return parse_config(data, base=path.parent, source=path)


__all__ = [
    "GATEWAY_DEVICE",
    "BrokerConfig",
    "DeviceConfig",
    "GatewayConfig",
    "InterlocksConfig",
    "OutboxConfig",
    "PollingConfig",
    "SiteConfig",
    "SiteSection",
    "load_config",
    "parse_config",
    "read_key_file",
    "resolve_profile",
]
