"""The cheapest benches run end to end with --quick and end with a valid JSON line of figures.

Benchmarks are not tests: nothing here checks a speed. It checks that the scripts still run
against the code as it changes, and that what they print is what docs/benchmarks.md and
`make bench` read: one JSON object on the last line, named after the bench, its figures positive.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from simulators.broker import mosquitto_available

REPO = Path(__file__).resolve().parents[2]


def run_bench(name: str, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", f"bench.bench_{name}", "--quick", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    last = done.stdout.strip().splitlines()[-1]
    figures = json.loads(last)
    assert isinstance(figures, dict)
    assert figures.pop("bench") == name
    return figures


def test_envelope_bench_prints_positive_figures() -> None:
    f = run_bench("envelope")
    for key in ("sign_per_s", "verify_per_s", "seal_100_readings_per_s", "open_500_readings_per_s"):
        assert f[key] > 0, key
    # the wire claim the docs make: signed CBOR is smaller than the same readings as JSON
    assert 0 < f["bytes_per_reading_cose_100"] < f["bytes_per_reading_json_100"]


@pytest.mark.skipif(not mosquitto_available(), reason="mosquitto is not installed")
def test_outbox_bench_drains_everything_and_prints_positive_figures() -> None:
    f = run_bench("outbox", "--sites", "3")
    for key in ("append_150_readings_per_s", "drain_readings_per_s", "fleet_drain_s"):
        assert f[key] > 0, key
    assert f["drain_stored_ok"] == 1
    assert f["fleet_stored_ok"] == 1


def test_physics_bench_prints_positive_figures() -> None:
    f = run_bench("physics")
    for key in ("step_us", "site_day_cpu_s", "refresh_us_per_device", "view_read_us_per_device"):
        assert f[key] > 0, key
    assert f["sites"] == 4 and f["step_s"] == 30.0  # --quick: four fleet-20 sites, its own step
