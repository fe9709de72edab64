"""How each simulated device looks from the outside: canonical points in, canonical points out.

A `DeviceView` turns the site model's state into {point name: value} using the canonical names of
`protocols.points` (plus the vendor extras our shipped profiles carry: cell voltages, status
bitfields, counters), and turns a write of {point: value} into an action on the model. The
Modbus layer encodes whatever subset the device's profile maps; a profile that does not map a
point simply does not show it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from protocols.types import DeviceKind
from simulators.errors import InvalidValueError, ReadOnlyPointError, UnknownPointError
from simulators.physics.aircon import AirconMode
from simulators.physics.battery import BatteryMode
from simulators.physics.site import SiteModel
from simulators.spec import Chemistry

PointValue = float | int | bool | Mapping[str, bool] | None
"""A value as the codec encodes it: a number, a flag, named bits, or None (sensor missing)."""

Writer = Callable[[SiteModel, Any], None]


def _num(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidValueError(f"{name}: {value!r} is not a number")
    return float(value)


def _flag(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    raise InvalidValueError(f"{name}: {value!r} is not 0/1")


def _code(value: Any, name: str, allowed: set[int]) -> int:
    v = _num(value, name)
    if v != int(v) or int(v) not in allowed:
        raise InvalidValueError(f"{name}: {value!r} is not one of {sorted(allowed)}")
    return int(v)


# -- rectifier ---------------------------------------------------------------------------------
def rectifier_points(m: SiteModel) -> dict[str, PointValue]:
    r = m.rectifier
    mains = m.mains
    bus = m.bus_v
    return {
        "dc_voltage": bus,
        "load_current": m.dc_load_w / bus if bus > 1 else 0.0,
        "battery_current": m.battery.current_a,
        "ac_voltage": m.meter.voltage_v,
        "temperature": m.aircon.room_c,
        "ac_input_power": r.input_power_w,
        "modules_installed": r.spec.modules,
        "modules_on": len(r.awake) if mains else 0,
        "modules_sleeping": len(r.asleep),
        "module_fault": {f"m{i + 1}": i in r.failed for i in range(max(12, r.spec.modules))},
        "alarms": {
            "ac_fail": not mains,
            "module_fault": bool(r.failed),
            "over_temp": m.aircon.room_c > 45.0,
            "eco_lockout": r.eco_alarm,
            "dc_under_voltage": bus < 45.0,
            "dc_over_voltage": bus > 57.5,
            "battery_fuse": False,
        },
        "dc_energy": r.dc_energy_kwh,
        "float_voltage_set": r.float_voltage,
        "current_limit_set": r.current_limit_a,
        "eco_enable": int(r.eco_enable),
        "eco_load_point": round(r.eco_save_point * 100.0),
    }


def _set_float(m: SiteModel, v: Any) -> None:
    m.rectifier.float_voltage = _num(v, "float_voltage_set")


def _set_current_limit(m: SiteModel, v: Any) -> None:
    m.rectifier.current_limit_a = _num(v, "current_limit_set")


def _set_eco(m: SiteModel, v: Any) -> None:
    m.rectifier.eco_enable = _flag(v, "eco_enable")


def _set_eco_point(m: SiteModel, v: Any) -> None:
    m.rectifier.eco_save_point = _num(v, "eco_load_point") / 100.0


# -- battery -----------------------------------------------------------------------------------
def battery_points(m: SiteModel) -> dict[str, PointValue]:
    b = m.battery
    lfp = b.spec.chemistry is Chemistry.LFP
    cmin, cmax = b.cell_voltages()
    out: dict[str, PointValue] = {
        "voltage": b.voltage,
        "current": b.current_a,
        "soc": b.soc,
        "soh": b.soh,
        "temperature": b.temp_c,
        "capacity_ah": b.spec.capacity_ah,
        "cycle_count": int(b.ah_throughput / (2.0 * b.spec.capacity_ah)),
        "charge_current_limit": b.charge_limit_a,
        "discharge_current_limit": b.discharge_limit_a,
        "charge_voltage_limit": 56.0 if lfp else 2.35 * b.cells,
        "mode": int(b.mode),
        "discharge_power_limit_w": b.discharge_power_limit_w,
        "charge_power_limit_w": b.charge_power_limit_w,
        "target_soc": b.target_soc,
        "ah_discharged": b.ah_discharged,
        "ah_balance": (b.soc - 100.0) / 100.0 * b.capacity_ah,
    }
    if lfp:
        out["cell_v_min"], out["cell_v_max"] = cmin, cmax
        for n in range(b.cells):
            # A fixed pattern inside [min, max]: cell 1 lowest, the last highest.
            out[f"cell{n + 1}_v"] = cmin + (cmax - cmin) * n / max(1, b.cells - 1)
        out["alarms"] = {
            "cell_under_voltage": not b.connected,
            "cell_over_voltage": cmax > 3.65,
            "over_temp": b.temp_c > 50.0,
            "under_temp": b.temp_c < 0.0,
            "charge_over_current": b.current_a > b.charge_limit_a * 1.05,
            "discharge_over_current": -b.current_a > b.discharge_limit_a * 1.05,
            "short_circuit": False,
            "bms_fault": False,
        }
    else:
        blocks = 4
        per_block = b.cells // blocks
        bmin, bmax = cmin * per_block, cmax * per_block
        out["cell_v_min"], out["cell_v_max"] = bmin, bmax
        for n in range(blocks):
            out[f"block{n + 1}_v"] = bmin + (bmax - bmin) * n / (blocks - 1)
        out["alarms"] = {
            "low_voltage": b.voltage < 1.8 * b.cells,
            "high_voltage": b.voltage > 2.4 * b.cells,
            "high_temp": b.temp_c > 40.0,
            "block_imbalance": bmax - bmin > 0.5,
            "discharging": b.current_a < -1.0,
            "probe_fault": False,
        }
    return out


def _set_mode(m: SiteModel, v: Any) -> None:
    m.battery.mode = BatteryMode(_code(v, "mode", {int(x) for x in BatteryMode}))


def _set_discharge_limit(m: SiteModel, v: Any) -> None:
    m.battery.discharge_power_limit_w = _num(v, "discharge_power_limit_w")


def _set_charge_limit(m: SiteModel, v: Any) -> None:
    m.battery.charge_power_limit_w = _num(v, "charge_power_limit_w")


def _set_target(m: SiteModel, v: Any) -> None:
    m.battery.target_soc = _num(v, "target_soc")


# -- air-conditioner ---------------------------------------------------------------------------
def aircon_points(m: SiteModel) -> dict[str, PointValue]:
    a = m.aircon
    return {
        "on": a.on,
        "compressor_running": a.compressor,
        "mode": int(a.mode),
        "setpoint": a.setpoint_c,
        "room_temp": a.room_c,
        "outdoor_temp": a.outdoor_c,
        "power": a.power_w,
        "energy": a.energy_kwh,
        "alarms": {
            "high_pressure": a.compressor and a.outdoor_c > 48.0,
            "low_pressure": False,
            "compressor_fault": False,
            "room_sensor_fault": False,
            "outdoor_sensor_fault": False,
            "filter": False,
            "comm_fault": False,
            "high_temp": a.alarm_high_temp,
        },
    }


def _set_on(m: SiteModel, v: Any) -> None:
    m.aircon.on = _flag(v, "on")


def _set_ac_mode(m: SiteModel, v: Any) -> None:
    m.aircon.mode = AirconMode(_code(v, "mode", {int(x) for x in AirconMode}))


def _set_setpoint(m: SiteModel, v: Any) -> None:
    m.aircon.setpoint_c = _num(v, "setpoint")


# -- breaker -----------------------------------------------------------------------------------
def breaker_points(m: SiteModel) -> dict[str, PointValue]:
    br = m.breaker
    out: dict[str, PointValue] = {
        "voltage": m.bus_v,
        "temperature": m.aircon.room_c,
        "lock": br.locked,
    }
    for i, ch in enumerate(br.channels):
        n = i + 1
        out[f"ch{n}_cmd"] = ch.commanded
        out[f"ch{n}_closed"] = ch.closed
        out[f"ch{n}_status"] = {
            "closed": ch.closed,
            "local_lock": br.locked,
            "tripped": ch.tripped,
            "remote_enabled": not br.locked,
        }
        out[f"ch{n}_current"] = ch.current_a
        out[f"ch{n}_power"] = ch.power_w
        out[f"ch{n}_energy"] = ch.energy_kwh
        out[f"ch{n}_trip"] = int(ch.trip_reason)
    return out


def _breaker_cmd(index: int) -> Writer:
    def write(m: SiteModel, v: Any) -> None:
        if index >= len(m.breaker.channels):
            raise UnknownPointError(f"ch{index + 1}_cmd: this breaker has no such channel")
        m.breaker.command(index, _flag(v, f"ch{index + 1}_cmd"))

    return write


# -- meter -------------------------------------------------------------------------------------
def meter_points(m: SiteModel) -> dict[str, PointValue]:
    g = m.meter
    return {
        "mains_present": g.mains_present,
        "voltage": g.voltage_v,
        "current": g.current_a,
        "frequency": g.frequency_hz,
        "power_factor": g.power_factor,
        "import_power": g.import_power_w,
        "import_energy": g.import_energy_kwh,
        "export_energy": 0.0,
    }


@dataclass(frozen=True)
class DeviceView:
    """One kind's reader and writers."""

    kind: DeviceKind
    read: Callable[[SiteModel], dict[str, PointValue]]
    writers: Mapping[str, Writer] = field(default_factory=dict)

    def write(self, model: SiteModel, values: Mapping[str, Any]) -> None:
        """Apply {point: value}; all are checked before any is applied."""
        known = self.read(model)
        for name in values:
            if name not in self.writers:
                if name in known:
                    raise ReadOnlyPointError(f"{self.kind.value}.{name} is read-only")
                raise UnknownPointError(f"{self.kind.value} has no point {name!r}")
        for name, value in values.items():
            self.writers[name](model, value)


VIEWS: dict[DeviceKind, DeviceView] = {
    DeviceKind.RECTIFIER: DeviceView(
        DeviceKind.RECTIFIER,
        rectifier_points,
        {
            "float_voltage_set": _set_float,
            "current_limit_set": _set_current_limit,
            "eco_enable": _set_eco,
            "eco_load_point": _set_eco_point,
        },
    ),
    DeviceKind.BATTERY: DeviceView(
        DeviceKind.BATTERY,
        battery_points,
        {
            "mode": _set_mode,
            "discharge_power_limit_w": _set_discharge_limit,
            "charge_power_limit_w": _set_charge_limit,
            "target_soc": _set_target,
        },
    ),
    DeviceKind.AIRCON: DeviceView(
        DeviceKind.AIRCON,
        aircon_points,
        {"on": _set_on, "mode": _set_ac_mode, "setpoint": _set_setpoint},
    ),
    DeviceKind.BREAKER: DeviceView(
        DeviceKind.BREAKER,
        breaker_points,
        {f"ch{n}_cmd": _breaker_cmd(n - 1) for n in range(1, 65)},
    ),
    DeviceKind.METER: DeviceView(DeviceKind.METER, meter_points),
}


def view(kind: DeviceKind) -> DeviceView:
    try:
        return VIEWS[kind]
    except KeyError:
        raise UnknownPointError(f"no simulated device of kind {kind.value!r}") from None


__all__ = ["VIEWS", "DeviceView", "PointValue", "view"]
