"""`sitewatt-aggregator report|dr|policy` against a real SQLite storage."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aggregator.cli import app
from aggregator.control.events import DrStore
from aggregator.storage import open_storage
from tests.reports.fixtures import local_ms, make_storage, write_config, write_policies

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    make_storage(tmp_path).close()
    return write_config(tmp_path, write_policies(tmp_path))


def test_report_writes_csv_json_and_pngs(cfg: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = CliRunner().invoke(
        app,
        ["report", "--config", str(cfg), "--from", str(local_ms(0)),
         "--to", "2026-01-05T16:00:00", "--out", str(out)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "daily.png", "report.csv", "report.json", "savings.png", "site-s1.png", "site-s2.png",
    ]  # fmt: skip
    for png in out.glob("*.png"):
        data = png.read_bytes()
        assert data.startswith(PNG) and len(data) > 5000
    rows = list(csv.DictReader((out / "report.csv").open()))
    assert [(r["scope"], r["name"]) for r in rows] == [
        ("site", "s1"), ("site", "s2"), ("fleet", "fleet"),
    ]  # fmt: skip
    s1 = rows[0]
    assert float(s1["cost"]) == pytest.approx(2.3808)
    assert float(s1["savings_cost"]) == pytest.approx(1.012884, abs=1e-5)
    assert float(s1["grid_kwh_peak"]) == pytest.approx(1.0)
    assert s1["emission_factor"].startswith("china-grid 2022 national")
    assert int(rows[2]["reserve_violations"]) == 1
    doc = json.loads((out / "report.json").read_text())
    assert doc["total"]["sites"] == 2
    assert "saved" in res.output and "s1" in res.output


def test_report_for_a_group_without_charts(cfg: Path, tmp_path: Path) -> None:
    out = tmp_path / "east"
    res = CliRunner().invoke(
        app,
        ["report", "-c", str(cfg), "--from", str(local_ms(0)), "--to", str(local_ms(0, day=6)),
         "--group", "east", "--no-charts", "--out", str(out)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == ["report.csv", "report.json"]
    rows = list(csv.DictReader((out / "report.csv").open()))
    assert [(r["scope"], r["name"]) for r in rows] == [("site", "s1"), ("group", "east")]


def test_report_rejects_a_bad_time(cfg: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(
        app, ["report", "-c", str(cfg), "--from", "soon", "--to", "later", "--out", str(tmp_path)]
    )
    assert res.exit_code == 2
    assert "--from" in res.output


def test_dr_create_list_cancel(cfg: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(
        app,
        ["dr", "create", "-c", str(cfg), "--cap-kw", "4", "--start", "2030-01-01T10:00:00",
         "--end", "2030-01-01T12:00:00", "--group", "west"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    event_id = res.output.strip().splitlines()[-1]
    storage = open_storage(tmp_path / "agg.db")
    try:
        assert DrStore(storage).get(event_id).cap_w == 4000
    finally:
        storage.close()
    listed = runner.invoke(app, ["dr", "list", "-c", str(cfg)])
    assert "scheduled" in listed.output and "west" in listed.output
    bad = runner.invoke(
        app,
        ["dr", "create", "-c", str(cfg), "--cap-kw", "4", "--start", "2030-01-01T10:00:00",
         "--end", "2030-01-01T09:00:00"],
    )  # fmt: skip
    assert bad.exit_code == 2 and "end" in bad.output
    cancelled = runner.invoke(app, ["dr", "cancel", "-c", str(cfg), event_id])
    assert cancelled.exit_code == 0 and "cancelled" in cancelled.output


def test_policy_show(cfg: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["policy", "show", "-c", str(cfg), "--site", "s1"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["tariff"] == "shanghai-two-part"
    assert doc["peak_shaving"]["backup_hours"] == 3
    table = runner.invoke(app, ["policy", "show", "-c", str(cfg)])
    assert "default" in table.output
