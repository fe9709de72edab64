"""Canonical point names per device kind.

Profiles map a vendor's registers onto these names, so that the agent's interlocks, the
aggregator's alarms and the simulators find a battery's `soc` or a breaker's `ch3_closed` whatever
the vendor. A profile may carry extra vendor points; a canonical point it carries must use the
canonical unit (a unit mismatch almost always means a wrong scale) and, where the name is a
setpoint or command, must be writable.

Points in a *group* come all together or not at all: a battery monitor that cannot be commanded
has none of `mode`, `charge_power_limit_w`, …, but one that has `mode` must have the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocols.types import DeviceKind

BREAKER_CHANNELS = 8
"""Channels of the reference smart breaker; a profile may declare another count."""


@dataclass(frozen=True, slots=True)
class PointSpec:
    """What a canonical point means: its unit ("" for counts, flags and enums) and its role."""

    name: str
    unit: str = ""
    required: bool = True
    writable: bool = False
    group: str | None = None
    description: str = ""


def _p(
    name: str,
    unit: str = "",
    description: str = "",
    *,
    required: bool = True,
    writable: bool = False,
    group: str | None = None,
) -> PointSpec:
    return PointSpec(name, unit, required, writable, group, description)


RECTIFIER = (
    _p("dc_voltage", "V", "DC bus voltage (magnitude, nominally 53.5 V float)"),
    _p("load_current", "A", "DC load current delivered by the plant"),
    _p("ac_input_power", "W", "AC power drawn by the rectifier modules"),
    _p("modules_installed", "", "rectifier modules present"),
    _p("modules_on", "", "modules converting (awake)"),
    _p("modules_sleeping", "", "modules hibernated by ECO"),
    _p("module_fault", "", "faulty module count or per-module fault bitfield"),
    _p("float_voltage_set", "V", "float voltage setpoint", writable=True),
    _p("current_limit_set", "A", "battery charge current limit setpoint", writable=True),
    _p("eco_enable", "", "ECO (module hibernation) switch, 0/1", writable=True),
    _p("alarms", "", "bitfield: ac_fail, module_fault, over_temp, eco_lockout, …"),
    _p("ac_voltage", "V", "AC input voltage", required=False),
    _p("battery_current", "A", "battery branch current (+ charge)", required=False),
    _p("temperature", "°C", "plant or cabinet temperature", required=False),
)

BATTERY = (
    _p("soc", "%", "state of charge"),
    _p("soh", "%", "state of health"),
    _p("voltage", "V", "string or pack voltage"),
    _p("current", "A", "+ charge, − discharge"),
    _p("temperature", "°C", "pack or string temperature"),
    _p("cell_v_min", "V", "lowest cell (or block) voltage", required=False),
    _p("cell_v_max", "V", "highest cell (or block) voltage", required=False),
    _p("charge_current_limit", "A", "BMS charge current limit", required=False),
    _p("discharge_current_limit", "A", "BMS discharge current limit", required=False),
    _p("capacity_ah", "Ah", "rated capacity", required=False),
    _p(
        "mode",
        "",
        "0 auto/float, 1 charge, 2 discharge (peak shave)",
        writable=True,
        group="control",
    ),
    _p("discharge_power_limit_w", "W", "discharge power cap", writable=True, group="control"),
    _p("charge_power_limit_w", "W", "charge power cap", writable=True, group="control"),
    _p("target_soc", "%", "charge target", writable=True, group="control"),
    _p("alarms", "", "BMS alarm bitfield", required=False),
)

AIRCON = (
    _p("on", "", "unit running, 0/1", writable=True),
    _p("mode", "", "0 cool, 1 heat, 2 auto, 3 dry, 5 fan", writable=True),
    _p("setpoint", "°C", "room temperature setpoint", writable=True),
    _p("room_temp", "°C", "return-air / room temperature"),
    _p("outdoor_temp", "°C", "outdoor temperature", required=False),
    _p("power", "W", "electrical power (only metered units)", required=False),
    _p("alarms", "", "alarm bitfield", required=False),
)

METER = (
    _p("mains_present", "", "grid supply present, 0/1"),
    _p("voltage", "V", "phase voltage"),
    _p("import_power", "W", "active power imported from the grid"),
    _p("import_energy", "kWh", "cumulative imported energy (32-bit)"),
    _p("current", "A", "phase current", required=False),
    _p("frequency", "Hz", "grid frequency", required=False),
    _p("power_factor", "", "power factor", required=False),
    _p("export_energy", "kWh", "cumulative exported energy", required=False),
)


def breaker_points(channels: int = BREAKER_CHANNELS) -> tuple[PointSpec, ...]:
    """Per-channel points ch1…chN plus the device-wide lock flag and voltage."""
    specs: list[PointSpec] = [
        _p("lock", "", "local lock: remote commands refused while set"),
        _p("voltage", "V", "supply voltage", required=False),
    ]
    for n in range(1, channels + 1):
        specs += [
            _p(f"ch{n}_closed", "", "channel closed (status)"),
            _p(f"ch{n}_current", "A", "channel current"),
            _p(f"ch{n}_power", "W", "channel power", required=False),
            _p(f"ch{n}_energy", "kWh", "channel energy (32-bit)", required=False),
            _p(f"ch{n}_trip", "", "channel tripped (flag or trip reason)", required=False),
            _p(f"ch{n}_cmd", "", "remote close (1) / open (0) coil or register", writable=True),
        ]
    return tuple(specs)


def kind_points(kind: DeviceKind, *, channels: int | None = None) -> tuple[PointSpec, ...]:
    """The canonical points of a device kind (breakers: for `channels` channels)."""
    if kind is DeviceKind.BREAKER:
        return breaker_points(channels or BREAKER_CHANNELS)
    return _BY_KIND.get(kind, ())


_BY_KIND: dict[DeviceKind, tuple[PointSpec, ...]] = {
    DeviceKind.RECTIFIER: RECTIFIER,
    DeviceKind.BATTERY: BATTERY,
    DeviceKind.AIRCON: AIRCON,
    DeviceKind.METER: METER,
}


@dataclass(frozen=True, slots=True)
class KindProblem:
    """One way a set of points falls short of its kind's contract."""

    point: str
    field: str
    problem: str


def check_kind(
    kind: DeviceKind,
    points: dict[str, tuple[str, bool]],
    *,
    channels: int | None = None,
) -> list[KindProblem]:
    """Problems with `points` (name -> (unit, writable)) against the kind's canonical names."""
    specs = kind_points(kind, channels=channels)
    problems: list[KindProblem] = []
    groups: dict[str, list[PointSpec]] = {}
    for spec in specs:
        if spec.group is not None:
            groups.setdefault(spec.group, []).append(spec)
        present = points.get(spec.name)
        if present is None:
            if spec.required and spec.group is None:
                problems.append(
                    KindProblem(spec.name, "name", f"required by kind {kind.value!r} but missing")
                )
            continue
        unit, writable = present
        if unit != spec.unit:
            problems.append(
                KindProblem(
                    spec.name, "unit", f"canonical unit is {spec.unit!r}, profile says {unit!r}"
                )
            )
        if spec.writable and not writable:
            problems.append(KindProblem(spec.name, "access", "must be 'rw' (setpoint or command)"))
    for group, members in groups.items():
        have = [m.name for m in members if m.name in points]
        if have and len(have) != len(members):
            for m in members:
                if m.name not in points:
                    problems.append(
                        KindProblem(
                            m.name,
                            "name",
                            f"group {group!r} is all or nothing and {have[0]!r} is present",
                        )
                    )
    return problems


__all__ = [
    "AIRCON",
    "BATTERY",
    "BREAKER_CHANNELS",
    "METER",
    "RECTIFIER",
    "KindProblem",
    "PointSpec",
    "breaker_points",
    "check_kind",
    "kind_points",
]
