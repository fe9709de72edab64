"""Compare control policies offline: the shared planners drive the site physics directly.

No agents, broker or aggregator: each scenario site is a `SiteModel` on a stepped clock, and
every `interval_s` of simulated time the pure planners of `protocols.control` decide for it
(`peak.plan_site`, `dormant.plan_dormant`, the valley recharge `fleet.stagger`), exactly as the
aggregator's loop would from telemetry. Their decisions are applied straight to the physics by
`AgentModel`, a deliberately small model of what the agent does with a command — *not* a copy of
agent code:

- `battery.peak_shave` / `battery.charge` / `battery.auto` set the pack's mode and power limit;
  a peak shave is refused at or below the reserve, as the agent's interlock check does;
- `site.dormant` opens the listed capacity channels (never one the site marks critical), turns
  rectifier ECO on if asked, raises the AC setpoint by the offset (inside 18..32 °C);
  `site.wake` closes them again and restores ECO and the setpoint the site had;
- after every physics step the agent's watch runs: a discharge stops (battery auto) once SOC
  reaches the reserve for the present load while mains is present, and a dormant site wakes at
  once on mains failure, room at the temperature limit, the window's end, or a coverage-load
  rise above 30 %.

The reserve both sides use is `protocols.control.reserve.reserve_soc` with the policy's
backup hours, floor and efficiency (the agent is assumed configured with the same figures).
Leases, acks, retries and command transport are not modelled: every decision lands at once.

Each policy runs on a fresh copy of every site; a no-action twin (battery in auto, breakers
closed, the site's own ECO setting) is the measured baseline. Every control interval becomes a
`protocols.control.report.Interval` (means from the physics' energy totals), so a policy's
report is `report.site_report` over them — the arithmetic the aggregator's reports use — and the
savings against the twin are measured, not estimated. Everything is a pure function of the
scenario, its seed and the policies: two runs give identical figures.

Modules: `policies` (policy files), `plans` (the scenario's sites), `agent` (the agent model),
`site` (one site under one policy), `run` (a fleet under one policy), `results` (figures per
site and policy), `compare` (the comparison), `output` (tables, CSV, JSON).
"""

from simulators.offline.agent import AgentModel, BatteryCommand
from simulators.offline.compare import BASELINE, compare_sites, run_compare, unique_names
from simulators.offline.output import as_json, policy_table, rows, summary_table, write_outputs
from simulators.offline.plans import (
    SitePlan,
    default_start,
    hourly_capacity_load,
    scenario_sites,
    spec_channels,
)
from simulators.offline.policies import ComparePolicy, load_compare_policy, policy_from_file_mapping
from simulators.offline.results import Comparison, PolicyResult, SiteResult
from simulators.offline.run import DEFAULT_INTERVAL_S, OfflineRun
from simulators.offline.site import OfflineSite, build_site

__all__ = [
    "BASELINE",
    "DEFAULT_INTERVAL_S",
    "AgentModel",
    "BatteryCommand",
    "ComparePolicy",
    "Comparison",
    "OfflineRun",
    "OfflineSite",
    "PolicyResult",
    "SitePlan",
    "SiteResult",
    "as_json",
    "build_site",
    "compare_sites",
    "default_start",
    "hourly_capacity_load",
    "load_compare_policy",
    "policy_from_file_mapping",
    "policy_table",
    "rows",
    "run_compare",
    "scenario_sites",
    "spec_channels",
    "summary_table",
    "unique_names",
    "write_outputs",
]
