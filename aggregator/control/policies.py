"""Control policies per site, per group of sites, and for the whole fleet.

A policy is layered. Each layer is a partial policy with a scope: the fleet `default`, a `group`
(its members are the sites whose region has the group's name, plus any sites it lists — so a
region is a group without a list), or one `site`. A site's policy is the deep merge of the
default, then the groups it belongs to (by name), then its own layer; within a scope, files come
before the operator's API overrides. The merged mapping is validated into a `SitePolicy`, and
every layer is also validated on its own, so an error names the file (or API scope) and the key.

Layer files live in `control.policies_dir` (`config/policies/*.toml`):

    tariff = "shanghai-two-part"   # top-level keys first (TOML puts later ones in a table)
    [scope]
    kind = "group"             # default | group | site
    name = "east"              # group name (a region, or a named group) or site id
    sites = ["s7", "s9"]       # optional members of a named group
    [peak_shaving]
    backup_hours = 4
    [dormant]
    bounds = "21:00-09:00"
    [battery]
    chemistry = "lead_acid"
    [[channels]]
    number = 4
    role = "capacity"
    [emissions]
    set = "china-grid"
    year = 2022
    region = "east"

A site whose tariff column (sites table) is set uses that tariff unless its own site layer
names one; the policy's `tariff` is the group/fleet default.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from aggregator.errors import ConfigError
from aggregator.storage.types import SiteInfo
from protocols.control.dormant import Channel, ChannelRole
from protocols.control.economics import Battery, Chemistry
from protocols.control.emissions import EmissionFactor, emission_factor
from protocols.control.errors import ControlError
from protocols.control.policy import ControlPolicy
from protocols.validation import read_toml, validation_problems


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BatteryFacts(_Frozen):
    """What the policy says about a site's pack; live readings (SOH, capacity, limits) win."""

    chemistry: Chemistry = Chemistry.LFP
    capacity_wh: float | None = Field(None, gt=0)  # nameplate, if the BMS does not report it
    nominal_v: float = Field(51.2, gt=0)  # to turn a reported capacity_ah into Wh
    soh_pct: float | None = Field(None, gt=0, le=100)
    cycle_life: float | None = Field(None, gt=0)
    rated_dod: float | None = Field(None, gt=0, le=1)
    price_per_kwh: float | None = Field(None, ge=0)
    round_trip_efficiency: float | None = Field(None, gt=0, le=1)
    max_discharge_w: float | None = Field(None, gt=0)
    max_charge_w: float | None = Field(None, gt=0)

    def economics(self, *, soh_pct: float, temperature_c: float) -> Battery:
        return Battery(
            chemistry=self.chemistry,
            soh_pct=soh_pct,
            temperature_c=temperature_c,
            cycle_life=self.cycle_life,
            rated_dod=self.rated_dod,
            price_per_kwh=self.price_per_kwh,
            round_trip_efficiency=self.round_trip_efficiency,
        )


class ChannelEntry(_Frozen):
    """A smart-breaker channel: only `capacity` channels not marked critical are ever opened."""

    number: int = Field(ge=1, le=64)
    role: ChannelRole
    critical: bool = False
    name: str = ""

    def channel(self) -> Channel:
        return Channel(self.number, self.role, self.critical, self.name)


class EmissionsPolicy(_Frozen):
    """The grid emission factor reports use (DOMAIN.md's China 2022 figures by default)."""

    set: str = "china-grid"
    year: int = 2022
    region: str = "national"

    def factor(self) -> EmissionFactor:
        return emission_factor(self.set, self.year, self.region)


class SitePolicy(ControlPolicy):
    """A site's resolved policy: the planners' policies plus the facts the shell needs."""

    enabled: bool = True  # False: the loop leaves this site alone (its leases lapse to default)
    battery: BatteryFacts = Field(default_factory=BatteryFacts)
    channels: tuple[ChannelEntry, ...] = ()
    emissions: EmissionsPolicy = Field(default_factory=EmissionsPolicy)

    @field_validator("emissions")
    @classmethod
    def _known_factor(cls, v: EmissionsPolicy) -> EmissionsPolicy:
        try:
            v.factor()
        except ControlError as exc:
            raise ValueError(str(exc)) from None
        return v

    def breaker_channels(self) -> tuple[Channel, ...]:
        return tuple(c.channel() for c in self.channels)

    def channel_numbers(self, *roles: ChannelRole) -> tuple[int, ...]:
        return tuple(c.number for c in self.channels if c.role in roles)


class ScopeKind(StrEnum):
    DEFAULT = "default"
    GROUP = "group"
    SITE = "site"


_ORDER = {ScopeKind.DEFAULT: 0, ScopeKind.GROUP: 1, ScopeKind.SITE: 2}


@dataclass(frozen=True, slots=True)
class PolicyLayer:
    """One partial policy and where it applies. `source` names it in errors and in the API."""

    kind: ScopeKind
    name: str
    data: Mapping[str, Any]
    source: str
    sites: tuple[str, ...] = ()
    from_api: bool = False

    @property
    def scope(self) -> str:
        return self.kind.value if self.kind is ScopeKind.DEFAULT else f"{self.kind}:{self.name}"

    def applies_to(self, info: SiteInfo) -> bool:
        if self.kind is ScopeKind.DEFAULT:
            return True
        if self.kind is ScopeKind.SITE:
            return info.site == self.name
        return info.region == self.name or info.site in self.sites


def validate_policy(data: Mapping[str, Any], *, source: str) -> SitePolicy:
    """A (partial or merged) policy mapping as a SitePolicy; ConfigError names source and key."""
    try:
        return SitePolicy.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(f"{source}: {'; '.join(validation_problems(exc))}") from exc


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge: tables merge key by key, anything else (lists included) replaces."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def layer_from_mapping(
    data: Mapping[str, Any], *, source: str, from_api: bool = False
) -> PolicyLayer:
    """A layer from a file's (or request's) mapping with its `[scope]` table; validated."""
    body = dict(data)
    scope = body.pop("scope", {"kind": "default"})
    if not isinstance(scope, Mapping):
        raise ConfigError(f"{source}: scope: must be a table")
    unknown = set(scope) - {"kind", "name", "sites"}
    if unknown:
        raise ConfigError(f"{source}: scope.{sorted(unknown)[0]}: unknown key")
    try:
        kind = ScopeKind(scope.get("kind", "default"))
    except ValueError:
        raise ConfigError(
            f"{source}: scope.kind: {scope.get('kind')!r} is not default, group or site"
        ) from None
    name = scope.get("name", "")
    if kind is not ScopeKind.DEFAULT and (not isinstance(name, str) or not name):
        raise ConfigError(f"{source}: scope.name: a {kind} layer needs a name")
    sites = scope.get("sites", [])
    if not isinstance(sites, list) or not all(isinstance(s, str) for s in sites):
        raise ConfigError(f"{source}: scope.sites: must be a list of site ids")
    if sites and kind is not ScopeKind.GROUP:
        raise ConfigError(f"{source}: scope.sites: only a group lists sites")
    validate_policy(body, source=source)
    return PolicyLayer(kind, str(name), body, source, tuple(sites), from_api)


def load_layers(directory: Path | str) -> list[PolicyLayer]:
    """Every `*.toml` in `directory`, in name order (a missing directory holds none)."""
    d = Path(directory)
    if not d.is_dir():
        return []
    layers = []
    for path in sorted(d.glob("*.toml")):
        layers.append(layer_from_mapping(read_toml(path, ConfigError), source=str(path)))
    return layers


@dataclass
class PolicyBook:
    """The layers in force; resolves each site's policy (cached until the layers change)."""

    layers: list[PolicyLayer] = field(default_factory=list)
    _cache: dict[SiteInfo, SitePolicy] = field(default_factory=dict, repr=False)

    def replace_layers(self, layers: Iterable[PolicyLayer]) -> None:
        self.layers = list(layers)
        self._cache.clear()

    def layers_for(self, info: SiteInfo) -> list[PolicyLayer]:
        chosen = [layer for layer in self.layers if layer.applies_to(info)]
        return sorted(chosen, key=lambda x: (_ORDER[x.kind], x.name, x.from_api))

    def resolve(self, info: SiteInfo) -> SitePolicy:
        cached = self._cache.get(info)
        if cached is not None:
            return cached
        merged: dict[str, Any] = {}
        layers = self.layers_for(info)
        for layer in layers:
            merged = merge(merged, layer.data)
        site_layer_tariff = any("tariff" in x.data for x in layers if x.kind is ScopeKind.SITE)
        if info.tariff and not site_layer_tariff:
            merged["tariff"] = info.tariff
        if info.tz:
            merged.setdefault("timezone", info.tz)
        sources = ", ".join(x.source for x in layers) or "defaults"
        policy = validate_policy(merged, source=f"policy of site {info.site} ({sources})")
        self._cache[info] = policy
        return policy

    def group_names(self) -> list[str]:
        return sorted({x.name for x in self.layers if x.kind is ScopeKind.GROUP})

    def members(self, group: str, sites: Sequence[SiteInfo]) -> list[str]:
        """Sites in `group`: its region, or listed by a group layer of that name."""
        listed = {
            s for x in self.layers if x.kind is ScopeKind.GROUP and x.name == group for s in x.sites
        }
        return sorted(s.site for s in sites if s.region == group or s.site in listed)


# -- API overrides, kept in the storage's meta table (one JSON document) ---------------------

OVERRIDES_META_KEY = "control.policy_overrides"


class MetaStore(Protocol):
    """The part of `Storage` the overrides need."""

    def get_meta(self, key: str) -> str | None: ...

    def set_meta(self, key: str, value: str) -> None: ...


def load_overrides(store: MetaStore) -> list[PolicyLayer]:
    """The operator's policy layers set through the API (validated again on the way out)."""
    raw = store.get_meta(OVERRIDES_META_KEY)
    if not raw:
        return []
    doc = json.loads(raw)
    out = []
    for scope, entry in sorted(doc.items()):
        out.append(layer_from_mapping(entry, source=f"api {scope}", from_api=True))
    return out


def save_override(store: MetaStore, layer: PolicyLayer | None, *, scope: str) -> None:
    """Set (or, with None, remove) the API layer of `scope` ("default", "group:x", "site:y")."""
    raw = store.get_meta(OVERRIDES_META_KEY)
    doc: dict[str, Any] = json.loads(raw) if raw else {}
    if layer is None:
        doc.pop(scope, None)
    else:
        entry = dict(layer.data)
        entry["scope"] = {"kind": layer.kind.value, "name": layer.name}
        if layer.sites:
            entry["scope"]["sites"] = list(layer.sites)
        doc[scope] = entry
    store.set_meta(OVERRIDES_META_KEY, json.dumps(doc, sort_keys=True))


__all__ = [
    "OVERRIDES_META_KEY",
    "BatteryFacts",
    "ChannelEntry",
    "EmissionsPolicy",
    "MetaStore",
    "PolicyBook",
    "PolicyLayer",
    "ScopeKind",
    "SitePolicy",
    "layer_from_mapping",
    "load_layers",
    "load_overrides",
    "merge",
    "save_override",
    "validate_policy",
]
