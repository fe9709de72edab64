"""The [alarms] section of the aggregator config reaches the alarm monitor."""

from __future__ import annotations

from pathlib import Path

import pytest

from aggregator.config import config_from_dict, load_config
from aggregator.errors import ConfigError
from aggregator.identity import init_key
from aggregator.service import build_services
from aggregator.storage.types import Severity

REPO = Path(__file__).resolve().parents[2]


def test_shipped_config_has_default_alarm_thresholds() -> None:
    cfg = load_config(REPO / "config" / "aggregator.toml")
    assert cfg.alarms.room_temp_high_c == 35.0
    assert cfg.alarms.silence_s == 300


def test_alarm_section_configures_the_monitor(tmp_path: Path) -> None:
    cfg = config_from_dict(
        {
            "database": {"path": str(tmp_path / "a.db")},
            "keys": {"key_file": str(tmp_path / "a.key")},
            "alarms": {
                "room_temp_high_c": 40,
                "room_temp_clear_c": 37,
                "high_temperature": {"severity": "critical", "raise_after_s": 0},
            },
        }
    )
    init_key(cfg.keys.key_file)
    services = build_services(cfg)
    try:
        assert services.alarms is not None
        assert services.alarms.config.room_temp_high_c == 40
        assert services.alarms.config.high_temperature.severity is Severity.CRITICAL
    finally:
        services.storage.close()


def test_alarm_hysteresis_error_names_the_key() -> None:
    with pytest.raises(ConfigError, match="alarms"):
        config_from_dict({"alarms": {"room_temp_high_c": 30, "room_temp_clear_c": 31}})
