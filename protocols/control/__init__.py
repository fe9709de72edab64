"""Pure control logic shared by the aggregator, the simulators and the agent's interlocks.

Modules: `tariff` (time-of-use periods and prices), `reserve` (backup reserve SOC),
`economics` (is a cycle worth its wear), `peak` (peak-shaving planner), `dormant` (dormant
planner and windows), `eco` (rectifier ECO rules), `fleet` (demand-response allocation and
staggered recharge), `report` and `emissions` (energy, cost and CO2 arithmetic), `policy`
(policy files). Decisions map to protocols.messages params (`Decision.params()`).
No I/O beyond reading TOML; no clock reads: every function takes the time (Unix seconds) it
decides for. See docs/control.md.
"""

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
