"""The live summary the `sitewatt-sim site` command shows (rich)."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text

from protocols.clock import local_time
from simulators.host import SimHost


def endpoints_table(host: SimHost) -> Table:
    t = Table(title="Simulated devices", title_justify="left")
    t.add_column("device")
    t.add_column("profile")
    t.add_column("endpoint")
    for e in host.endpoints():
        t.add_row(e.device.name, e.device.profile.name, e.describe())
    return t


def site_table(host: SimHost) -> Group:
    """One row per site: time, load, grid, battery, room, rectifier, breakers, faults."""
    t = Table(title_justify="left", pad_edge=False)
    for col in ("site", "local time", "load W", "grid W", "SOC %", "battery", "room °C",
                "rectifier", "breakers", "mains"):  # fmt: skip
        t.add_column(col, no_wrap=True)
    status = host.status()
    for sid, rt in host.sites.items():
        m = rt.model
        r = m.rectifier
        rect = f"{len(r.awake)}/{r.spec.modules} on"
        if r.eco_active:
            rect += " ECO"
        if r.failed:
            rect += f" {len(r.failed)} failed"
        if r.eco_alarm:
            rect += " ECO-lockout"
        breakers = "".join(
            "T" if ch.tripped else ("●" if ch.closed else "○") for ch in m.breaker.channels
        )
        if m.breaker.locked:
            breakers += " LOCK"
        b = m.battery
        t.add_row(
            sid,
            local_time(m.t, rt.spec.tz).strftime("%m-%d %H:%M:%S"),
            f"{m.dc_load_w:,.0f}",
            f"{m.grid_import_w:,.0f}",
            f"{b.soc:.1f}",
            f"{b.mode.name.lower()} {b.current_a:+.1f} A",
            f"{m.aircon.room_c:.1f}" + (" HIGH" if m.aircon.alarm_high_temp else ""),
            rect,
            breakers,
            ("DARK" if m.dark else "down") if not m.mains else "ok",
        )
    faults = status["faults"]
    lines = [f"{dev}: {what}" for dev, what in faults.items()] or ["none"]
    return Group(t, Text("faults: " + "; ".join(lines)))


__all__ = ["endpoints_table", "site_table"]
