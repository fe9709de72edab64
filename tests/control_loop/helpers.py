"""Builders shared by the control-loop tests: a tariff, policies, site inputs at local times."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from aggregator.control.core import Ack, FleetMemory, Round, bind_sent, plan_round
from aggregator.control.events import DrEvent
from aggregator.control.inputs import Measured, SiteInputs
from aggregator.control.policies import SitePolicy, validate_policy
from aggregator.control.settings import ControlSettings
from protocols.control.dormant import Window
from protocols.control.tariff import Tariff, load_tariff

ROOT = Path(__file__).resolve().parents[2]
TZ = ZoneInfo("Asia/Shanghai")
SHANGHAI: Tariff = load_tariff(ROOT / "config" / "tariffs" / "shanghai-two-part.toml")

CHANNELS: list[dict[str, Any]] = [
    {"number": 1, "role": "transmission", "critical": True},
    {"number": 3, "role": "anchor", "critical": True},
    {"number": 4, "role": "capacity"},
    {"number": 5, "role": "capacity"},
]


def at(hh: int, mm: int = 0, *, day: int = 5) -> float:
    """Unix seconds of a local time on Monday 2026-01-05 (winter: peak 08-15, 18-21)."""
    return datetime(2026, 1, day, hh, mm, tzinfo=TZ).timestamp()


def policy(**over: Any) -> SitePolicy:
    data: dict[str, Any] = {"tariff": "shanghai-two-part", "channels": CHANNELS}
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(data.get(k), dict):
            data[k] = {**data[k], **v}
        else:
            data[k] = v
    return validate_policy(data, source="test")


def site(
    name: str = "s1",
    *,
    now: float,
    soc: float = 90.0,
    load_w: float = 2000.0,
    capacity_wh: float = 20_000.0,
    import_w: float | None = None,
    battery_w: float = 0.0,
    mains: bool = True,
    room_c: float = 25.0,
    capacity_ch_w: float = 600.0,
    coverage_ch_w: float = 900.0,
    pol: SitePolicy | None = None,
    region: str = "east",
    online: bool = True,
    age_s: float = 10.0,
    window: str = "00:00-05:00",
) -> SiteInputs:
    m = Measured(
        newest_ms=int((now - age_s) * 1000),
        soc_pct=soc,
        soh_pct=100.0,
        capacity_wh=capacity_wh,
        battery_w=battery_w,
        max_charge_w=6000.0,
        max_discharge_w=5000.0,
        dc_load_w=load_w,
        import_w=load_w / 0.95 if import_w is None else import_w,
        mains_present=mains,
        room_temp_c=room_c,
        channel_w={1: 100.0, 3: coverage_ch_w, 4: capacity_ch_w / 2, 5: capacity_ch_w / 2},
    )
    return SiteInputs(
        site=name,
        policy=pol or policy(),
        tariff=SHANGHAI,
        measured=m,
        window=Window.parse(window),
        region=region,
        online=online,
    )


SETTINGS = ControlSettings(
    interval_s=60, lease_s=600, ack_timeout_s=60, retry_base_s=30, retry_max_s=600, max_failures=3
)


class Driver:
    """Runs rounds, binds every intent to a fresh id and answers acks as told."""

    def __init__(self, settings: ControlSettings = SETTINGS) -> None:
        self.settings = settings
        self.memory = FleetMemory()
        self.acks: dict[str, Ack] = {}
        self.n = 0
        self.sent: list[tuple[str, Any]] = []  # (command id, intent)

    def round(
        self,
        fleet: list[SiteInputs],
        now: float,
        *,
        events: list[DrEvent] | None = None,
        ack: str | None = "applied",
        reason: str | None = None,
    ) -> Round:
        rnd = plan_round(fleet, events or [], self.memory, self.acks, now, self.settings)
        memory = rnd.memory
        for intent in rnd.intents:
            self.n += 1
            cid = f"c{self.n}"
            memory = bind_sent(memory, intent, cid, now)
            self.sent.append((cid, intent))
            if ack is not None:
                self.acks[cid] = Ack(ack, reason)
        self.memory = memory
        return rnd
