"""Policy files: defaults, validation errors that name the bad key."""

from __future__ import annotations

from pathlib import Path

import pytest

from protocols.control.errors import ControlConfigError
from protocols.control.policy import load_policy, policy_from_mapping
from protocols.control.tariff import Period


def test_defaults() -> None:
    p = policy_from_mapping({})
    assert (p.peak_shaving.backup_hours, p.peak_shaving.floor_pct) == (3.0, 10.0)
    assert p.peak_shaving.shave_periods == {Period.PEAK, Period.CRITICAL_PEAK}
    assert (p.dormant.bounds, p.dormant.window_hours) == ("00:00-06:00", 5)


def test_file_round_trip(tmp_path: Path) -> None:
    f = tmp_path / "site.toml"
    f.write_text(
        'tariff = "sichuan-2023"\n'
        "[peak_shaving]\nbackup_hours = 4\nshave_periods = ['critical_peak']\n"
        '[dormant]\nbounds = "21:00-09:00"\nac_offset_c = 3\n'
    )
    p = load_policy(f)
    assert p.tariff == "sichuan-2023"
    assert p.peak_shaving.backup_hours == 4
    assert p.peak_shaving.shave_periods == {Period.CRITICAL_PEAK}
    assert (p.dormant.bounds, p.dormant.ac_offset_c) == ("21:00-09:00", 3)


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ({"peak_shaving": {"backup_hours": -1}}, "peak_shaving.backup_hours"),
        ({"peak_shaving": {"floor_pct": 96}}, "peak_shaving"),  # above the target SOC
        ({"dormant": {"bounds": "25:00-06:00"}}, "dormant.bounds"),
        ({"dormant": {"max_switches_per_hour": 1}}, "dormant.max_switches_per_hour"),
        ({"dormant": {"windw": "00:00-06:00"}}, "dormant.windw"),
    ],
)
def test_errors_name_the_key(data: dict[str, object], where: str) -> None:
    with pytest.raises(ControlConfigError, match=r"<policy>: " + where.replace(".", r"\.")):
        policy_from_mapping(data)


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ControlConfigError, match=r"missing\.toml"):
        load_policy(tmp_path / "missing.toml")
