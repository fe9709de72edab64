"""The aggregator's configuration: one TOML file validated once at start-up into frozen models.

Relative paths (database, key file, broker password and TLS files) are resolved against the
directory the aggregator is started from, so `config/aggregator.toml` with `./var/aggregator.db`
works from a checkout. A bad value stops start-up with the dotted path of the key at fault.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from aggregator.alarms import AlarmConfig
from aggregator.errors import ConfigError
from protocols.clock import ClockSettings
from protocols.validation import validation_problems

DEFAULT_PREFIX = "sitewatt/v1"
_WORKER_RE = re.compile(r"[A-Za-z0-9._-]{1,16}")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TlsConfig(_Frozen):
    """TLS to the broker: the CA that signed the broker's certificate (and an optional client
    certificate)."""

    ca_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = False  # skip hostname check (lab certificates for 127.0.0.1 only)


class BrokerConfig(_Frozen):
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    tls: TlsConfig | None = None
    username: str | None = None
    password_file: Path | None = None
    client_id: str = Field(default="sitewatt-aggregator", min_length=1, max_length=64)
    prefix: str = Field(default=DEFAULT_PREFIX, min_length=1)
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    # Shared subscription group for several ingest workers (scale-out); None = one worker.
    share_group: str | None = None

    @model_validator(mode="after")
    def _check(self) -> BrokerConfig:
        if self.prefix.startswith("/") or self.prefix.endswith("/") or "+" in self.prefix:
            raise ValueError(f"prefix {self.prefix!r} must not start/end with '/' or hold '+'")
        if "#" in self.prefix:
            raise ValueError(f"prefix {self.prefix!r} must not hold '#'")
        if self.password_file is not None and self.username is None:
            raise ValueError("password_file given without username")
        return self

    def password(self) -> str | None:
        """The broker password read from `password_file` (first line), if any."""
        if self.password_file is None:
            return None
        try:
            return self.password_file.read_text().splitlines()[0].strip()
        except (OSError, IndexError) as exc:
            raise ConfigError(f"broker.password_file: cannot read {self.password_file}") from exc


class DatabaseConfig(_Frozen):
    path: Path = Path("var/aggregator.db")
    url: str | None = None  # postgresql://… : the scale-out backend, used instead of `path`

    @model_validator(mode="after")
    def _check(self) -> DatabaseConfig:
        if self.url is not None and not self.url.startswith(("postgresql://", "postgres://")):
            raise ValueError(f"url {self.url!r}: only postgresql:// URLs are understood")
        return self

    def describe(self) -> str:
        """Where the data is, for logs: the file, or the URL without its password."""
        if self.url is None:
            return str(self.path)
        head, sep, tail = self.url.partition("@")
        if sep and ":" in head.split("//", 1)[-1]:
            head = head.rsplit(":", 1)[0] + ":***"
        return head + sep + tail


class KeysConfig(_Frozen):
    key_file: Path = Path("var/aggregator.key")


class HttpConfig(_Frozen):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)


class RetentionConfig(_Frozen):
    raw_days: float = Field(default=30, gt=0)
    rollup_days: float = Field(default=0, ge=0)  # 0 keeps rollups for ever (reports need them)
    interval_s: float = Field(default=3600, gt=0)


class IngestConfig(_Frozen):
    """How the subscriber groups work and which timestamps it accepts."""

    group_ms: float = Field(default=5, ge=0)  # collect messages this long into one transaction
    group_max: int = Field(default=500, ge=1)  # …or this many messages, whichever comes first
    max_future_s: float = Field(default=300, ge=0)  # a batch this far ahead of our clock is bad
    # A batch older than this is refused as stale; default: the raw-retention window.
    max_age_s: float | None = Field(default=None, gt=0)
    log_interval_s: float = Field(default=10, gt=0)  # one log line per reason per interval
    queue_max: int = Field(default=20_000, ge=100)


class CommandsConfig(_Frozen):
    """How long a command stays valid: an agent refuses it as `expired` after this many seconds
    of its clock (simulated on a SimClock, so a sped-up fleet needs more of them)."""

    expires_s: float = Field(default=60, gt=0, le=3600)


class ControlConfig(_Frozen):
    """Placeholder for the control loop's policies (a later issue fills it)."""

    model_config = ConfigDict(frozen=True, extra="allow")
    enabled: bool = False


class AggregatorConfig(_Frozen):
    broker: BrokerConfig = BrokerConfig()
    database: DatabaseConfig = DatabaseConfig()
    keys: KeysConfig = KeysConfig()
    http: HttpConfig = HttpConfig()
    retention: RetentionConfig = RetentionConfig()
    ingest: IngestConfig = IngestConfig()
    commands: CommandsConfig = CommandsConfig()
    control: ControlConfig = ControlConfig()
    alarms: AlarmConfig = AlarmConfig()
    clock: ClockSettings = ClockSettings()
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @property
    def max_age_ms(self) -> int:
        """Oldest acceptable batch age: ingest.max_age_s, else the raw-retention window."""
        seconds = self.ingest.max_age_s or self.retention.raw_days * 86400
        return int(seconds * 1000)

    def for_worker(self, name: str) -> AggregatorConfig:
        """This config for ingest worker `name` (`serve --worker NAME`): the broker client id
        gets `-NAME`, so each worker has its own persistent session in the shared group."""
        if self.broker.share_group is None:
            raise ConfigError("--worker: set broker.share_group (else each worker gets it all)")
        if not _WORKER_RE.fullmatch(name):
            raise ConfigError(f"--worker {name!r}: 1-16 of A-Z a-z 0-9 . _ -")
        client_id = f"{self.broker.client_id}-{name}"
        if len(client_id) > 64:
            raise ConfigError(f"--worker: client id {client_id!r} is over 64 characters")
        return self.model_copy(
            update={"broker": self.broker.model_copy(update={"client_id": client_id})}
        )


def config_from_dict(data: dict[str, Any], *, source: str = "config") -> AggregatorConfig:
    """Validate a parsed config; ConfigError names each bad key by its dotted path."""
    try:
        return AggregatorConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(validation_problems(exc, root="(top level)"))
        raise ConfigError(f"{source}: {problems}") from exc


def load_config(path: Path | str) -> AggregatorConfig:
    """Read and validate a TOML config file."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return config_from_dict(data, source=str(path))


__all__ = [
    "DEFAULT_PREFIX",
    "AggregatorConfig",
    "BrokerConfig",
    "CommandsConfig",
    "ControlConfig",
    "DatabaseConfig",
    "HttpConfig",
    "IngestConfig",
    "KeysConfig",
    "RetentionConfig",
    "TlsConfig",
    "config_from_dict",
    "load_config",
]
