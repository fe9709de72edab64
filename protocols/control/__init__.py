"""Pure control logic shared by the aggregator, the simulators and the agent's interlocks.

Modules: `tariff` (time-of-use periods and prices), `reserve` (backup reserve SOC),
`economics` (is a cycle worth its wear), `peak` (peak-shaving planner), `dormant` (dormant
planner and windows), `eco` (rectifier ECO rules), `fleet` (demand-response allocation and
staggered recharge), `report` and `emissions` (energy, cost and CO2 arithmetic), `policy`
(policy files). Decisions map to protocols.messages params (`Decision.params()`).
No I/O beyond reading TOML; no clock reads: every function takes the time (Unix seconds) it
decides for. See docs/control.md.

The names below load on first use (PEP 562): the agent imports `protocols.control.reserve`
alone, and importing every planner and its pydantic models with it cost the gateway ~1 MB.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from protocols.control.dormant import (
        Channel,
        ChannelRole,
        DormantDecision,
        DormantMode,
        DormantPolicy,
        DormantState,
        Window,
        after_decision,
        capacity_threshold_w,
        may_open,
        pick_window,
        plan_dormant,
        resolve_window,
        track_low,
    )
    from protocols.control.eco import EcoInputs, EcoParams, EcoResult, EcoState, decide_eco
    from protocols.control.economics import Battery, Chemistry, CycleFigures, Verdict, worth_cycling
    from protocols.control.emissions import DEFAULT_FACTOR, EmissionFactor, emission_factor
    from protocols.control.errors import ControlConfigError, ControlError, TariffError
    from protocols.control.fleet import (
        Allocation,
        DrSite,
        RechargeNeed,
        RechargePlan,
        RechargeSlot,
        allocate,
        stagger,
    )
    from protocols.control.peak import (
        BatteryMode,
        Decision,
        FleetDirective,
        PeakPolicy,
        SiteState,
        plan_site,
        site_reserve_soc,
    )
    from protocols.control.policy import ControlPolicy, load_policy, policy_from_mapping
    from protocols.control.report import (
        Interval,
        Report,
        Sample,
        combine,
        intervals_from_samples,
        site_report,
    )
    from protocols.control.reserve import dispatchable_wh, reserve_soc
    from protocols.control.tariff import (
        DayType,
        Period,
        Segment,
        Tariff,
        load_tariff,
        load_tariffs,
        tariff_from_mapping,
    )

_SUBMODULE = {  # name -> the submodule that defines it (the imports above, as data)
    name: module
    for module, names in {
        "dormant": "Channel ChannelRole DormantDecision DormantMode DormantPolicy DormantState"
        " Window after_decision capacity_threshold_w may_open pick_window plan_dormant"
        " resolve_window track_low",
        "eco": "EcoInputs EcoParams EcoResult EcoState decide_eco",
        "economics": "Battery Chemistry CycleFigures Verdict worth_cycling",
        "emissions": "DEFAULT_FACTOR EmissionFactor emission_factor",
        "errors": "ControlConfigError ControlError TariffError",
        "fleet": "Allocation DrSite RechargeNeed RechargePlan RechargeSlot allocate stagger",
        "peak": "BatteryMode Decision FleetDirective PeakPolicy SiteState plan_site"
        " site_reserve_soc",
        "policy": "ControlPolicy load_policy policy_from_mapping",
        "report": "Interval Report Sample combine intervals_from_samples site_report",
        "reserve": "dispatchable_wh reserve_soc",
        "tariff": "DayType Period Segment Tariff load_tariff load_tariffs tariff_from_mapping",
    }.items()
    for name in names.split()
}


def __getattr__(name: str) -> Any:
    try:
        module = _SUBMODULE[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # the next lookup is a plain global
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    "DEFAULT_FACTOR",
    "Allocation",
    "Battery",
    "BatteryMode",
    "Channel",
    "ChannelRole",
    "Chemistry",
    "ControlConfigError",
    "ControlError",
    "ControlPolicy",
    "CycleFigures",
    "DayType",
    "Decision",
    "DormantDecision",
    "DormantMode",
    "DormantPolicy",
    "DormantState",
    "DrSite",
    "EcoInputs",
    "EcoParams",
    "EcoResult",
    "EcoState",
    "EmissionFactor",
    "FleetDirective",
    "Interval",
    "PeakPolicy",
    "Period",
    "RechargeNeed",
    "RechargePlan",
    "RechargeSlot",
    "Report",
    "Sample",
    "Segment",
    "SiteState",
    "Tariff",
    "TariffError",
    "Verdict",
    "Window",
    "after_decision",
    "allocate",
    "capacity_threshold_w",
    "combine",
    "decide_eco",
    "dispatchable_wh",
    "emission_factor",
    "intervals_from_samples",
    "load_policy",
    "load_tariff",
    "load_tariffs",
    "may_open",
    "pick_window",
    "plan_dormant",
    "plan_site",
    "policy_from_mapping",
    "reserve_soc",
    "resolve_window",
    "site_report",
    "site_reserve_soc",
    "stagger",
    "tariff_from_mapping",
    "track_low",
    "worth_cycling",
]
