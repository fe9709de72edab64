"""Compare policies: run the sites once per policy (and once untouched as the measured baseline)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from protocols.control.emissions import emission_factor
from protocols.control.tariff import Tariff, load_tariffs
from simulators.errors import ScenarioError
from simulators.offline.plans import SitePlan, scenario_sites
from simulators.offline.policies import ComparePolicy
from simulators.offline.results import Comparison, policy_result
from simulators.offline.run import DEFAULT_INTERVAL_S, OfflineRun
from simulators.offline.site import build_site
from simulators.scenario import TARIFFS_DIR, Scenario

BASELINE = "baseline"
"""The run name of the no-action twin."""


def unique_names(policies: Sequence[ComparePolicy]) -> list[ComparePolicy]:
    """Policies with distinct names (a repeated stem gets -2, -3…), never `baseline`."""
    seen: Counter[str] = Counter()
    out = []
    for p in policies:
        base = p.name if p.name != BASELINE else f"{BASELINE}-policy"
        seen[base] += 1
        name = base if seen[base] == 1 else f"{base}-{seen[base]}"
        out.append(replace(p, name=name))
    return out


Progress = Callable[[str, float], None]


def compare_sites(
    plans: Sequence[SitePlan],
    policies: Sequence[ComparePolicy],
    *,
    start: float,
    days: float = 1.0,
    baseline: bool = True,
    interval_s: float = DEFAULT_INTERVAL_S,
    step_s: float = 30.0,
    tariffs: Mapping[str, Tariff] | None = None,
    name: str = "",
    progress: Progress | None = None,
) -> Comparison:
    """Run `plans` once per policy (and once untouched if `baseline`) from `start`."""
    if days <= 0:
        raise ScenarioError(f"days must be > 0, got {days}")
    if interval_s <= 0 or step_s <= 0:
        raise ScenarioError(f"interval and step must be > 0 s, got {interval_s}, {step_s}")
    tariffs = tariffs if tariffs is not None else load_tariffs(TARIFFS_DIR)
    end = start + days * 86400.0
    named = unique_names(policies)

    def go(run_name: str, policy: ComparePolicy | None) -> OfflineRun:
        run = OfflineRun(run_name, [build_site(p, policy, tariffs, start) for p in plans])
        tick = (lambda f: progress(run_name, f)) if progress is not None else None
        run.run(start, end, interval_s=interval_s, step_s=step_s, progress=tick)
        return run

    twin = go(BASELINE, None) if baseline else None
    results = []
    for p in named:
        run = go(p.name, p)
        results.append(policy_result(run, p.source, start, end, twin, p.emissions))
    base_result = None
    if twin is not None:
        factor = named[0].emissions if named else emission_factor()
        base_result = policy_result(twin, "no action", start, end, None, factor)
    step = min(step_s, interval_s)
    return Comparison(name, start, end, interval_s, step, tuple(results), base_result)


def run_compare(
    scenario: Scenario,
    policies: Sequence[ComparePolicy],
    *,
    start: float,
    days: float = 1.0,
    baseline: bool = True,
    interval_s: float = DEFAULT_INTERVAL_S,
    step_s: float | None = None,
    tariffs: Mapping[str, Tariff] | None = None,
    scenario_name: str = "",
    progress: Progress | None = None,
) -> Comparison:
    """`compare_sites` over a scenario's sites; the physics step defaults to the scenario's."""
    return compare_sites(
        scenario_sites(scenario, start),
        policies,
        start=start,
        days=days,
        baseline=baseline,
        interval_s=interval_s,
        step_s=step_s if step_s is not None else scenario.sim.step_s,
        tariffs=tariffs,
        name=scenario_name,
        progress=progress,
    )


__all__ = [
    "BASELINE",
    "Progress",
    "compare_sites",
    "run_compare",
    "unique_names",
]
