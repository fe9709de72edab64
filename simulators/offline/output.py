"""The comparison as rich tables, CSV rows and JSON."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from rich.table import Table

from protocols.clock import local_time
from protocols.control.report import Report
from protocols.control.tariff import PERIODS
from simulators.offline.results import Comparison, PolicyResult


def rows(c: Comparison) -> list[dict[str, Any]]:
    """Flat rows (per policy: each site, then TOTAL), for CSV."""
    out: list[dict[str, Any]] = []
    runs = ([c.baseline] if c.baseline is not None else []) + list(c.policies)
    for r in runs:
        for row in [*(s.row() for s in r.sites), r.total_row()]:
            out.append({"policy": r.name, **row})
    return out


def as_json(c: Comparison) -> dict[str, Any]:
    def run(r: PolicyResult) -> dict[str, Any]:
        return {
            "name": r.name,
            "source": r.source,
            "total": r.total_row(),
            "sites": [
                {**s.row(), "wake_events": [[t, why] for t, why in s.wakes],
                 "decisions": dict(sorted(s.codes.items()))}
                for s in r.sites
            ],
        }  # fmt: skip

    return {
        "scenario": c.scenario,
        "start": c.start,
        "end": c.end,
        "days": (c.end - c.start) / 86400.0,
        "interval_s": c.interval_s,
        "step_s": c.step_s,
        "savings_against": "baseline twin (simulated, no action)"
        if c.baseline is not None
        else "the report's estimated no-action baseline",
        "baseline": run(c.baseline) if c.baseline is not None else None,
        "policies": [run(r) for r in c.policies],
    }


def write_outputs(c: Comparison, out: Path) -> tuple[Path, Path]:
    """compare.csv (one row per policy × site plus each policy's TOTAL) and compare.json."""
    out.mkdir(parents=True, exist_ok=True)
    table = rows(c)
    fields: list[str] = []
    for r in table:
        fields += [k for k in r if k not in fields]
    csv_path = out / "compare.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(table)
    json_path = out / "compare.json"
    json_path.write_text(json.dumps(as_json(c), indent=2) + "\n", encoding="utf-8")
    return csv_path, json_path


def _f(v: float | None, digits: int = 1) -> str:
    return "—" if v is None else f"{v:,.{digits}f}"


def _saved(rep: Report, twin: Report | None) -> tuple[float, float]:
    """(money, kWh) saved: against the twin when there is one, else the report's estimate."""
    if twin is not None:
        return twin.cost - rep.cost, twin.grid_kwh - rep.grid_kwh
    return rep.savings_cost, rep.savings_kwh


def policy_table(r: PolicyResult, c: Comparison) -> Table:
    """One policy: a row per site and the fleet total."""
    factor = r.total.emission_factor
    day0 = local_time(c.start).strftime("%Y-%m-%d %H:%M")
    against = "the no-action twin" if r.twin_total is not None else "the estimated baseline"
    table = Table(
        title=f"{r.name} ({r.source}): {len(r.sites)} sites, {(c.end - c.start) / 86400:g} d "
        f"from {day0}",
        caption=f"saved: against {against}; kgCO2 at {factor.label}; moved: battery output in "
        "peak periods on mains; margin: min SOC − reserve while discharging on mains",
    )
    used = [p for p in PERIODS if r.total.grid_kwh_by_period[p] > 0]
    cur = r.total.currency
    table.add_column("site")
    table.add_column("chem")
    for name in (*(f"{p.value} kWh" for p in used), f"cost {cur}", f"saved {cur}", "saved kWh",
                 "saved kgCO2", "moved kWh", "dormant h", "viol.", "margin %"):  # fmt: skip
        table.add_column(name, justify="right")

    def add(label: str, chem: str, rep: Report, twin: Report | None, margin: float | None,
            style: str | None = None) -> None:  # fmt: skip
        money, kwh = _saved(rep, twin)
        viol = str(rep.reserve_violations)
        table.add_row(
            label,
            chem,
            *(_f(rep.grid_kwh_by_period[p]) for p in used),
            _f(rep.cost, 2),
            _f(money, 2),
            _f(kwh),
            _f(kwh * factor.kg_per_kwh),
            _f(rep.moved_kwh),
            _f(rep.dormant_hours),
            viol if rep.reserve_violations == 0 else f"[red]{viol}[/red]",
            _f(margin),
            style=style,
        )

    for s in r.sites:
        chem = "LFP" if s.chemistry == "lfp" else "PbA"
        add(s.site, chem, s.report, s.twin, s.min_margin_discharging)
    margins = [s.min_margin_discharging for s in r.sites if s.min_margin_discharging is not None]
    add("TOTAL", "", r.total, r.twin_total, min(margins, default=None), "bold")
    return table


def summary_table(c: Comparison) -> Table:
    """One row per run: the fleet's figures side by side."""
    table = Table(title="policies compared: fleet totals")
    for name in ("policy", "grid kWh", "cost", "saved", "saved kWh", "saved kgCO2",
                 "moved kWh", "dormant h", "fleet peak kW", "violations"):  # fmt: skip
        table.add_column(name, justify="left" if name == "policy" else "right")
    runs = ([c.baseline] if c.baseline is not None else []) + list(c.policies)
    for r in runs:
        t = r.total
        money, kwh = (0.0, 0.0) if r is c.baseline else _saved(t, r.twin_total)
        table.add_row(
            r.name,
            _f(t.grid_kwh),
            f"{t.cost:,.2f} {t.currency}",
            _f(money, 2),
            _f(kwh),
            _f(kwh * t.emission_factor.kg_per_kwh),
            _f(r.moved_kwh),
            _f(t.dormant_hours),
            _f(r.fleet_peak_w / 1000.0, 2),
            str(t.reserve_violations),
        )
    return table


__all__ = [
    "as_json",
    "policy_table",
    "rows",
    "summary_table",
    "write_outputs",
]
