"""Policy files for the offline comparison: the aggregator's layer format, read without it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from protocols.control.dormant import Channel, ChannelRole
from protocols.control.emissions import EmissionFactor, emission_factor
from protocols.control.errors import ControlConfigError, ControlError
from protocols.control.policy import ControlPolicy, policy_from_mapping
from protocols.validation import read_toml, validation_problems
from simulators.errors import ScenarioError


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BatteryFigures(_Frozen):
    """A policy file's `[battery]`. The pack's facts (chemistry, capacity, nominal voltage,
    SOH) come from the simulated site; the economics figures and power caps apply."""

    chemistry: str | None = None
    capacity_wh: float | None = Field(None, gt=0)
    nominal_v: float | None = Field(None, gt=0)
    soh_pct: float | None = Field(None, gt=0, le=100)
    cycle_life: float | None = Field(None, gt=0)
    rated_dod: float | None = Field(None, gt=0, le=1)
    price_per_kwh: float | None = Field(None, ge=0)
    round_trip_efficiency: float | None = Field(None, gt=0, le=1)
    max_discharge_w: float | None = Field(None, gt=0)
    max_charge_w: float | None = Field(None, gt=0)


class _ChannelEntry(_Frozen):
    number: int = Field(ge=1, le=64)
    role: ChannelRole
    critical: bool = False
    name: str = ""


class _Emissions(_Frozen):
    set: str = "china-grid"
    year: int = 2022
    region: str = "national"


class _PolicyFile(_Frozen):
    """The aggregator's policy-layer file shape (docs/control.md), read without the aggregator.
    `[scope]` is ignored: here one file is applied to every site of the scenario."""

    scope: dict[str, Any] = Field(default_factory=dict)
    enabled: bool = True
    tariff: str | None = None
    timezone: str | None = None
    peak_shaving: dict[str, Any] = Field(default_factory=dict)
    dormant: dict[str, Any] = Field(default_factory=dict)
    battery: BatteryFigures = Field(default_factory=BatteryFigures)
    channels: tuple[_ChannelEntry, ...] = ()
    emissions: _Emissions = Field(default_factory=_Emissions)


@dataclass(frozen=True, slots=True)
class ComparePolicy:
    """One policy to compare: the planners' policy plus what the aggregator's layers add.

    `channels` empty: the breaker's roles come from each simulated site's own channel kinds.
    """

    name: str
    source: str
    control: ControlPolicy
    enabled: bool = True
    battery: BatteryFigures = field(default_factory=BatteryFigures)
    channels: tuple[Channel, ...] = ()
    emissions: EmissionFactor = field(default_factory=emission_factor)


def policy_from_file_mapping(
    data: Mapping[str, Any], *, name: str, source: str = "<policy>"
) -> ComparePolicy:
    """A policy file's mapping as a `ComparePolicy`; ScenarioError names the source and key."""
    try:
        f = _PolicyFile.model_validate(dict(data))
        planner: dict[str, Any] = {"peak_shaving": f.peak_shaving, "dormant": f.dormant}
        if f.tariff is not None:
            planner["tariff"] = f.tariff
        if f.timezone is not None:
            planner["timezone"] = f.timezone
        control = policy_from_mapping(planner, source=source)
        factor = emission_factor(f.emissions.set, f.emissions.year, f.emissions.region)
    except ValidationError as exc:
        raise ScenarioError(f"{source}: {'; '.join(validation_problems(exc))}") from None
    except ControlConfigError as exc:  # already names the source
        raise ScenarioError(str(exc)) from None
    except ControlError as exc:
        raise ScenarioError(f"{source}: {exc}") from None
    channels = tuple(Channel(c.number, c.role, c.critical, c.name) for c in f.channels)
    return ComparePolicy(name, source, control, f.enabled, f.battery, channels, factor)


def load_compare_policy(path: str | Path, *, name: str | None = None) -> ComparePolicy:
    """Read a policy file (the aggregator's layer format); its name defaults to the file stem."""
    p = Path(path)
    data = read_toml(p, ScenarioError)
    return policy_from_file_mapping(data, name=name or p.stem, source=str(p))


__all__ = [
    "BatteryFigures",
    "ComparePolicy",
    "load_compare_policy",
    "policy_from_file_mapping",
]
