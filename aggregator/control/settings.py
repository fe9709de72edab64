"""The control loop's settings: the `[control]` section of the aggregator's config.

`aggregator.config.ControlConfig` keeps that section open (extra keys allowed) so that this
module owns its shape; `settings_from_config` validates it once at start-up and names the bad key
as `control.<key>`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from aggregator.errors import ConfigError
from protocols.validation import validation_problems


class ControlSettings(BaseModel):
    """How the loop runs. Times are seconds of the aggregator's clock (simulated on a SimClock)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = False
    interval_s: float = Field(60.0, gt=0, le=3600)
    lease_s: int = Field(600, ge=10, le=86_400)
    renew_fraction: float = Field(0.5, gt=0, lt=1)  # renew a held lease at this part of it
    ack_timeout_s: float = Field(60.0, gt=0)
    retry_base_s: float = Field(30.0, gt=0)
    retry_max_s: float = Field(600.0, gt=0)
    max_failures: int = Field(3, ge=1)  # failures in a row before `control_not_followed`
    stale_s: float = Field(300.0, gt=0)  # newer readings than this, or the site is left alone
    power_tolerance_w: float = Field(100.0, ge=0)  # a power change below both is not a change
    power_tolerance_pct: float = Field(10.0, ge=0)
    tariffs_dir: Path = Path("config/tariffs")
    policies_dir: Path = Path("config/policies")
    rectifier_efficiency: float = Field(0.95, gt=0, le=1)
    recharge_ceiling_w: float | None = Field(None, gt=0)  # fleet recharge ceiling; None: derived
    dr_margin_pct: float = Field(5.0, ge=0, lt=50)  # aim this far under a DR cap
    valley_fill: float = Field(0.8, gt=0, le=1)  # derived ceiling finishes in this part of it
    # a derived valley ceiling keeps night import + recharge under this part of the day's peak
    valley_peak_fraction: float = Field(0.9, gt=0, le=2)
    issued_by: str = Field("control", min_length=1, max_length=64)

    @model_validator(mode="after")
    def _check(self) -> ControlSettings:
        if self.retry_max_s < self.retry_base_s:
            raise ValueError(
                f"retry_max_s {self.retry_max_s} is below retry_base_s {self.retry_base_s}"
            )
        if self.lease_s * self.renew_fraction < self.interval_s:
            raise ValueError(
                f"lease_s × renew_fraction ({self.lease_s * self.renew_fraction:g} s) must be "
                f"at least interval_s ({self.interval_s:g} s), or leases lapse between rounds"
            )
        return self

    @property
    def renew_after_s(self) -> float:
        return self.lease_s * self.renew_fraction


def settings_from_mapping(data: Mapping[str, Any], *, source: str = "config") -> ControlSettings:
    try:
        return ControlSettings.model_validate(dict(data))
    except ValidationError as exc:
        problems = "; ".join(validation_problems(exc, within="control"))
        raise ConfigError(f"{source}: {problems}") from exc


def settings_from_config(config: Any) -> ControlSettings:
    """The settings in an `AggregatorConfig` (its open `control` section)."""
    section = getattr(config, "control", None)
    if section is None:
        return ControlSettings()
    data = section.model_dump() if isinstance(section, BaseModel) else dict(section)
    return settings_from_mapping(data)


__all__ = ["ControlSettings", "settings_from_config", "settings_from_mapping"]
