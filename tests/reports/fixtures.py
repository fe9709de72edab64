"""A real SQLite storage holding hand-made series whose report figures are worked out by hand.

Site s1 (region east, Shanghai two-part tariff, winter Monday 2026-01-05, η = 0.95), one reading
per 15-minute bucket:

    00:45-01:00 valley, awake    grid 2000 W, DC 1900 W, battery 0,       ch4 closed 380 W
    01:00-02:00 valley, dormant  grid 1600 W, DC 1520 W, battery 0,       ch4 open     0 W
    09:00-10:00 peak             grid 1000 W, DC 2000 W, battery −1000 W, SOC 80
    22:00-23:00 valley           grid 3000 W, DC 2000 W, battery +1000 W, SOC 60

    grid kWh: peak 1.0, valley 0.5 + 1.6 + 3.0 = 5.1              total 6.1
    baseline: peak 1 + 1/0.95 = 2.052632; valley 0.5 + (1.6 + 0.38/0.95) + (3 − 1/0.95)
              = 0.5 + 2.0 + 1.947368 = 4.447368                    total 6.5
    cost 1.0 × 1.116 + 5.1 × 0.248 = 2.3808; baseline 2.052632 × 1.116 + 4.447368 × 0.248
         = 3.393684; saved 1.012884 CNY, 0.4 kWh, 0.4 × 0.5366 = 0.21464 kgCO2
    moved 1.0 kWh, valley charge 1.0 kWh, dormant 1 h, DC 5.995 kWh, no reserve violation.

Site s2 (region west): 09:00-10:00 peak, grid 500 W, DC 1500 W, battery −1000 W at SOC 30 below
its reserve (≈ 33 %) with mains present: one violation (four buckets in a row count once).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from aggregator.storage import SiteInfo, SiteState, SqliteStorage, VerifiedBatch, open_storage
from protocols.types import Reading

TZ = ZoneInfo("Asia/Shanghai")
ROOT = Path(__file__).resolve().parents[2]
POLICY = """
tariff = "shanghai-two-part"
[scope]
kind = "default"
[battery]
nominal_v = 51.2
[[channels]]
number = 4
role = "capacity"
[[channels]]
number = 3
role = "anchor"
critical = true
"""


def local_ms(hh: int, mm: int = 0, day: int = 5) -> int:
    return int(datetime(2026, 1, day, hh, mm, tzinfo=TZ).timestamp() * 1000)


def _bucket(
    t: int,
    *,
    grid: float,
    dc_a: float,
    bat_a: float,
    soc: float,
    ch4: tuple[int, float] | None = None,
    cap_ah: float = 400.0,
) -> list[Reading]:
    rs = [
        Reading(t, "meter", "mains_present", True),
        Reading(t, "meter", "import_power", grid),
        Reading(t, "rect", "load_current", dc_a),
        Reading(t, "rect", "dc_voltage", 50.0),
        Reading(t, "bat", "current", bat_a),
        Reading(t, "bat", "voltage", 50.0),
        Reading(t, "bat", "soc", soc),
        Reading(t, "bat", "soh", 100.0),
        Reading(t, "bat", "capacity_ah", cap_ah),
    ]
    if ch4 is not None:
        rs += [
            Reading(t, "brk", "ch1_closed", True),
            Reading(t, "brk", "ch4_closed", bool(ch4[0])),
            Reading(t, "brk", "ch4_power", ch4[1]),
        ]
    return rs


def s1_readings() -> list[Reading]:
    out: list[Reading] = []
    q = 15 * 60_000
    out += _bucket(local_ms(0, 46), grid=2000, dc_a=38, bat_a=0, soc=70, ch4=(1, 380.0))
    for k in range(4):
        out += _bucket(local_ms(1) + k * q + 60_000, grid=1600, dc_a=30.4, bat_a=0, soc=70,
                       ch4=(0, 0.0))  # fmt: skip
    for k in range(4):
        out += _bucket(local_ms(9) + k * q + 60_000, grid=1000, dc_a=40, bat_a=-20, soc=80,
                       ch4=(1, 400.0))  # fmt: skip
    for k in range(4):
        out += _bucket(local_ms(22) + k * q + 60_000, grid=3000, dc_a=40, bat_a=20, soc=60,
                       ch4=(1, 400.0))  # fmt: skip
    return out


def s2_readings() -> list[Reading]:
    out: list[Reading] = []
    for k in range(4):
        out += _bucket(local_ms(9) + k * 900_000 + 60_000, grid=500, dc_a=30, bat_a=-20, soc=30,
                       cap_ah=100.0)  # fmt: skip
    return out


def fill(storage: SqliteStorage) -> None:
    t0 = local_ms(0)
    storage.add_site(SiteInfo("s1", "Hilltop", "east", "Asia/Shanghai", "shanghai-two-part", t0))
    storage.add_site(SiteInfo("s2", "Riverside", "west", "Asia/Shanghai", "shanghai-two-part", t0))
    for seq, (site, readings) in enumerate((("s1", s1_readings()), ("s2", s2_readings())), 1):
        last = max(r.t for r in readings)
        storage.store_batches([VerifiedBatch(site, seq, "b", last, last, False, readings)])
        storage.put_site_state(SiteState(site, True, "b", "0", {}, last, t0, None))


def make_storage(tmp: Path) -> SqliteStorage:
    storage = open_storage(tmp / "agg.db")
    fill(storage)
    return storage


def write_policies(tmp: Path, extra: dict[str, str] | None = None) -> Path:
    d = tmp / "policies"
    d.mkdir(exist_ok=True)
    (d / "00-default.toml").write_text(POLICY)
    for name, text in (extra or {}).items():
        (d / name).write_text(text)
    return d


def write_config(tmp: Path, policies: Path) -> Path:
    cfg = tmp / "aggregator.toml"
    cfg.write_text(
        f'[database]\npath = "{tmp / "agg.db"}"\n'
        f'[control]\npolicies_dir = "{policies}"\ntariffs_dir = "{ROOT / "config" / "tariffs"}"\n'
    )
    return cfg
