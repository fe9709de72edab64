"""A site's (or group's) control policy as one file: peak shaving plus dormant mode.

TOML shape (every key optional; defaults in docs/control.md):

    tariff = "shanghai-two-part"
    [peak_shaving]
    enabled = true
    backup_hours = 3
    [dormant]
    bounds = "00:00-06:00"
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from protocols.control.dormant import DormantPolicy
from protocols.control.errors import ControlConfigError
from protocols.control.peak import PeakPolicy
from protocols.validation import read_toml, validation_problems


class ControlPolicy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    tariff: str | None = None  # a tariff name (config/tariffs/<name>.toml)
    timezone: str = "Asia/Shanghai"  # the site's zone, for dormant windows
    peak_shaving: PeakPolicy = Field(default_factory=PeakPolicy)
    dormant: DormantPolicy = Field(default_factory=DormantPolicy)


def policy_from_mapping(data: Mapping[str, Any], *, source: str = "<policy>") -> ControlPolicy:
    """Validate a parsed policy; the error names the source and the path to each bad key."""
    try:
        return ControlPolicy.model_validate(dict(data))
    except ValidationError as exc:
        problems = "; ".join(validation_problems(exc))
        raise ControlConfigError(f"{source}: {problems}") from exc


def load_policy(path: str | Path) -> ControlPolicy:
    p = Path(path)
    return policy_from_mapping(read_toml(p, ControlConfigError), source=str(p))


__all__ = ["ControlPolicy", "load_policy", "policy_from_mapping"]
