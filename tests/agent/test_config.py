"""Config validation: every problem names its key path; good configs give frozen objects."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from agent.config import SiteConfig, load_config, parse_config
from agent.errors import ConfigError
from protocols.keys import generate_key, public_key_hex
from protocols.types import DeviceKind

AGG_KEY = public_key_hex(generate_key())


@pytest.fixture
def base(tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "profiles").mkdir()
    for name in ("bat", "brk", "rect", "ac"):
        (tmp_path / "profiles" / f"{name}.toml").write_text("# placeholder\n")
    return {
        "site": {"id": "site-1", "key_file": "site.key", "aggregator_keys": [AGG_KEY]},
        "interlocks": {"battery_capacity_wh": 19200, "critical_channels": {"brk": [1, 2]}},
        "devices": {
            "battery": {"kind": "battery", "profile": "bat", "host": "127.0.0.1", "port": 5020},
            "brk": {"kind": "breaker", "profile": "brk", "serial": "/dev/ttyS1", "unit_id": 3},
            "rect": {"kind": "rectifier", "profile": "rect", "serial": "/dev/ttyS1", "unit_id": 4},
        },
    }


def problems(data: dict[str, Any], base_dir: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, base=base_dir)
    return list(info.value.problems)


def test_good_config_resolves_paths_and_groups_buses(base: dict[str, Any], tmp_path: Path) -> None:
    cfg = parse_config(base, base=tmp_path)
    assert isinstance(cfg, SiteConfig)
    assert cfg.site.key_file == tmp_path / "site.key"
    assert cfg.profiles_dir == tmp_path / "profiles"
    assert cfg.buses() == {"tcp:127.0.0.1:5020": ["battery"], "rtu:/dev/ttyS1": ["brk", "rect"]}
    assert cfg.devices["brk"].transport == "rtu"
    assert cfg.devices_of(DeviceKind.BATTERY) == ["battery"]
    assert cfg.client_id == "sitewatt-agent-site-1"
    assert cfg.interlocks.backup_hours == 3.0
    assert cfg.interlocks.critical_channels == {"brk": (1, 2)}
    assert cfg.profile_path("brk") == tmp_path / "profiles" / "brk.toml"
    with pytest.raises(ValueError):
        cfg.devices["brk"].unit_id = 5  # type: ignore[misc]


def test_load_config_reads_toml_relative_to_file(tmp_path: Path) -> None:
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "m.toml").write_text("")
    path = tmp_path / "site.toml"
    path.write_text(
        f"""
[site]
id = "s9"
key_file = "keys/s9.key"
aggregator_keys = ["{AGG_KEY}"]
[outbox]
path = "var/agent.db"
[devices.meter]
kind = "meter"
profile = "m"
host = "127.0.0.1"
"""
    )
    cfg = load_config(path)
    assert cfg.outbox.path == tmp_path / "var" / "agent.db"
    assert cfg.site.key_file == tmp_path / "keys" / "s9.key"
    assert cfg.source == path


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda d: d["devices"]["battery"].update(unitid=3), "devices.battery.unitid: unknown key"),
        (lambda d: d["devices"]["battery"].update(unit_id=300), "devices.battery.unit_id:"),
        (lambda d: d["devices"]["battery"].update(kind="toaster"), "devices.battery.kind:"),
        (
            lambda d: d["devices"]["battery"].update(poll_interval_s=0),
            "devices.battery.poll_interval_s:",
        ),
        (lambda d: d["site"].pop("key_file"), "site.key_file: required but missing"),
        (lambda d: d["site"].update(aggregator_keys=["ab", "cd", "ef"]), "site.aggregator_keys:"),
        (lambda d: d.update(broker={"port": 70000}), "broker.port:"),
        (lambda d: d.update(devices={}), "devices:"),
    ],
)
def test_field_errors_name_the_key(
    base: dict[str, Any], tmp_path: Path, edit: Any, expected: str
) -> None:
    data = copy.deepcopy(base)
    edit(data)
    found = problems(data, tmp_path)
    assert any(p.startswith(expected) for p in found), found


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda d: d["site"].update(id="site/1"), "site.id:"),
        (lambda d: d["site"].update(timezone="Mars/Olympus"), "site.timezone:"),
        (lambda d: d["site"].update(aggregator_keys=[]), "site.aggregator_keys: pin at least"),
        (
            lambda d: d["site"].update(aggregator_key_files=["agg.pub"]),
            "site.aggregator_key_files[0]: no such file",
        ),
        (lambda d: d["site"].update(aggregator_keys=["zz"]), "site.aggregator_keys[0]:"),
        (
            lambda d: d["devices"]["battery"].update(serial="/dev/ttyS0"),
            "devices.battery: give either host",
        ),
        (lambda d: d["devices"]["battery"].pop("host"), "devices.battery: give either host"),
        (lambda d: d["devices"]["rect"].update(baud=19200), "devices.rect.baud:"),
        (lambda d: d["devices"]["rect"].update(unit_id=3), "devices.rect.unit_id: 3 is already"),
        (lambda d: d["devices"]["battery"].update(profile="nope"), "devices.battery.profile:"),
        (lambda d: d["devices"]["battery"].update(max_interval_s=1), "devices.battery.max_int"),
        (lambda d: d["devices"].update(gateway=d["devices"]["battery"]), "devices.gateway:"),
        (lambda d: d["interlocks"].pop("battery_capacity_wh"), "interlocks.battery_capacity_wh"),
        (
            lambda d: d["interlocks"].update(critical_channels={"battery": [1]}),
            "interlocks.critical_channels.battery: device 'battery' is a battery",
        ),
        (
            lambda d: d["interlocks"].update(coverage_channels={"nobody": [1]}),
            "interlocks.coverage_channels.nobody: no device",
        ),
        (
            lambda d: d["interlocks"].update(capacity_channels={"brk": [2, 5]}),
            "interlocks.capacity_channels.brk: channel(s) [2] are also critical",
        ),
        (lambda d: d["interlocks"].update(ac_setpoint_min_c=33), "interlocks.ac_setpoint_min_c"),
        (
            lambda d: d.update(broker={"password": "x", "password_file": "p"}),
            "broker.password_file:",
        ),
        (lambda d: d.update(broker={"ca_file": "ca.pem"}), "broker.ca_file: no such file"),
        (lambda d: d.update(broker={"topic_prefix": "a/#"}), "broker.topic_prefix:"),
    ],
)
def test_cross_field_errors_name_the_key(
    base: dict[str, Any], tmp_path: Path, edit: Any, expected: str
) -> None:
    data = copy.deepcopy(base)
    edit(data)
    found = problems(data, tmp_path)
    assert any(p.startswith(expected) for p in found), found


def test_all_problems_reported_at_once(base: dict[str, Any], tmp_path: Path) -> None:
    data = copy.deepcopy(base)
    data["site"]["id"] = "bad id"
    data["devices"]["battery"]["profile"] = "missing"
    data["interlocks"]["ac_setpoint_min_c"] = 40
    found = problems(data, tmp_path)
    assert len(found) >= 3
    assert "3 problems" in str(ConfigError(found[:3]))


def test_password_file_is_read(base: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("s3cret\n")
    data = copy.deepcopy(base)
    data["broker"] = {"username": "site-1", "password_file": "pw"}
    cfg = parse_config(data, base=tmp_path)
    assert cfg.broker.read_password() == "s3cret"
    assert "s3cret" not in repr(cfg)


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[site\nid=1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_aggregator_key_file(base: dict[str, Any], tmp_path: Path) -> None:
    other = public_key_hex(generate_key())
    (tmp_path / "agg.pub").write_text(f"public key: {other}\nkid:        0123456789abcdef\n")
    data = copy.deepcopy(base)
    data["site"]["aggregator_key_files"] = ["agg.pub"]
    cfg = parse_config(data, base=tmp_path)
    assert cfg.site.pinned_keys() == (AGG_KEY, other)
    data["site"]["aggregator_keys"] = [AGG_KEY, other]
    assert "at most two" in str(problems(data, tmp_path))
    (tmp_path / "agg.pub").write_text("nothing here")
    data["site"]["aggregator_keys"] = []
    assert "holds no 64-hex-digit public key" in str(problems(data, tmp_path))
