"""`sitewatt-sim compare` through typer's CliRunner: tables printed, CSV and JSON written with
the expected columns, bad input refused with a message naming it."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from simulators.cli import app

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
COMPARE = ROOT / "config" / "policies" / "compare"

SCENARIO = """
kind = "fleet"
[sim]
start = "2025-07-01T00:00:00+08:00"
step_s = 30.0
[fleet]
sites = 2
id_prefix = "t"
seed = 11
[[fleet.batteries]]
chemistry = "lfp"
capacity_ah = [400.0]
[[fleet.climates]]
name = "mild"
mean_c = 24.0
[[fleet.tariffs]]
name = "sichuan-2023"
"""

COLUMNS = {
    "policy", "site", "chemistry", "tariff", "grid_kwh", "grid_kwh_critical_peak",
    "grid_kwh_peak", "grid_kwh_flat", "grid_kwh_valley", "cost", "twin_kwh", "twin_cost",
    "savings_cost", "savings_kwh", "savings_kgco2", "emission_factor", "moved_kwh",
    "dormant_hours", "reserve_violations", "min_margin_discharging_pct", "min_margin_mains_pct",
    "baseline_est_kwh", "savings_est_cost",
}  # fmt: skip


def test_compare_prints_tables_and_writes_csv_and_json(tmp_path: Path) -> None:
    scenario = tmp_path / "two.toml"
    scenario.write_text(SCENARIO, encoding="utf-8")
    out = tmp_path / "out"
    res = CliRunner().invoke(
        app,
        [
            "compare",
            "--scenario", str(scenario),
            "--policy", str(COMPARE / "shave-and-dormant.toml"),
            "--policy", str(COMPARE / "dormant-only.toml"),
            "--days", "0.5",
            "--out", str(out),
        ],
        env={"COLUMNS": "200"},
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "shave-and-dormant" in res.output and "dormant-only" in res.output
    assert "china-grid 2022 national (0.5366 kgCO2/kWh)" in res.output
    assert "policies compared" in res.output

    with (out / "compare.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert set(rows[0]) >= COLUMNS
    assert "moved_on_mains_kwh" not in rows[0]  # one "moved" figure: the report's
    # baseline + two policies, each: two sites and a TOTAL.
    assert [(r["policy"], r["site"]) for r in rows] == [
        (p, s)
        for p in ("baseline", "shave-and-dormant", "dormant-only")
        for s in ("t-0001", "t-0002", "TOTAL")
    ]
    by = {(r["policy"], r["site"]): r for r in rows}
    for p in ("shave-and-dormant", "dormant-only"):
        total = by[(p, "TOTAL")]
        assert int(total["reserve_violations"]) == 0
        assert float(total["savings_kwh"]) > 0  # dormancy in 00:00-06:00 of the half day
        assert float(total["dormant_hours"]) > 4
        sites = [by[(p, s)] for s in ("t-0001", "t-0002")]
        assert float(total["grid_kwh"]) == pytest.approx(
            sum(float(r["grid_kwh"]) for r in sites), abs=1e-3
        )
    assert by[("baseline", "TOTAL")]["savings_cost"] == ""  # the twin has no twin

    data = json.loads((out / "compare.json").read_text(encoding="utf-8"))
    assert data["savings_against"].startswith("baseline twin")
    assert data["days"] == 0.5
    assert [p["name"] for p in data["policies"]] == ["shave-and-dormant", "dormant-only"]
    site = data["policies"][0]["sites"][0]
    assert site["decisions"] and site["wake_events"][0][1] == "window_end"
    assert data["baseline"]["total"]["grid_kwh"] > data["policies"][1]["total"]["grid_kwh"]


def test_compare_refuses_a_bad_policy_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[peak_shaving]\nbackup_hours = -1\n", encoding="utf-8")
    res = CliRunner().invoke(
        app,
        ["compare", "--scenario", str(ROOT / "config/scenarios/fleet-20.toml"),
         "--policy", str(bad)],
        env={"COLUMNS": "200"},
    )  # fmt: skip
    assert res.exit_code == 2
    assert "bad.toml" in res.output and "backup_hours" in res.output
