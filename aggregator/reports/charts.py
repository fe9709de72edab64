"""PNG charts of a report with matplotlib's Agg backend (no display, no pyplot global state).

- `site-<id>.png`: DC load, grid import and battery power over the tariff bands, and SOC with
  its reserve, dormant stretches shaded;
- `daily.png`: the fleet's (or group's) grid energy and telecom DC energy per local day;
- `savings.png`: money and kWh saved per site against the no-action baseline.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from aggregator.control.context import ControlContext
from aggregator.reports.build import ReportSet, SiteSeries
from protocols.clock import local_time
from protocols.control.report import Interval
from protocols.control.tariff import Period, Tariff

BAND_COLOURS = {
    Period.CRITICAL_PEAK: "#f4a6a6",
    Period.PEAK: "#fbd3a6",
    Period.FLAT: "#f2f2f2",
    Period.VALLEY: "#cfe6f7",
}


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=90, format="png")
    return path


def _dt(t: float, tz: str) -> datetime:
    return local_time(t, tz).replace(tzinfo=None)


def _stepped(
    ivs: Sequence[Interval], value: Callable[[Interval], float | None], tz: str
) -> tuple[list[datetime], list[float]]:
    """Step-plot points that end each run at its last interval's end and break at gaps (NaN),
    so missing data is never drawn as a flat line."""
    xs: list[datetime] = []
    ys: list[float] = []
    nan = float("nan")
    for k, iv in enumerate(ivs):
        v = value(iv)
        xs.append(_dt(iv.start, tz))
        ys.append(nan if v is None else v)
        if k + 1 == len(ivs) or ivs[k + 1].start > iv.end + 1:
            xs += [_dt(iv.end, tz), _dt(iv.end, tz)]
            ys += [ys[-1], nan]
    return xs, ys


def site_chart(series: SiteSeries, tariff: Tariff | None, path: Path, *, tz: str) -> Path:
    """Power over the tariff bands, and SOC over the reserve, with dormant stretches shaded."""
    fig = Figure(figsize=(11, 6))
    ax1, ax2 = fig.subplots(2, 1, sharex=True)
    ivs = series.intervals
    if ivs:
        start, end = ivs[0].start, ivs[-1].end
        if tariff is not None:
            for seg in tariff.segments(start, end):
                ax1.axvspan(
                    _dt(seg.start, tz), _dt(seg.end, tz), color=BAND_COLOURS[seg.period], lw=0
                )
        for iv in ivs:
            if iv.dormant:
                ax2.axvspan(_dt(iv.start, tz), _dt(iv.end, tz), color="#d9d2e9", lw=0)
        for label, value in (
            ("DC load", lambda i: i.dc_load_w / 1000),
            ("grid import", lambda i: i.grid_w / 1000),
            ("battery (+charge)", lambda i: i.battery_w / 1000),
        ):
            ax1.step(*_stepped(ivs, value, tz), where="post", label=label)
        ax2.step(*_stepped(ivs, lambda i: i.soc_pct, tz), where="post", label="SOC")
        ax2.step(
            *_stepped(ivs, lambda i: i.reserve_soc_pct, tz),
            where="post",
            label="reserve",
            linestyle="--",
        )
    ax1.set_ylabel("kW")
    ax1.set_title(f"site {series.site}: load and grid import over tariff periods")
    ax1.legend(loc="upper right", fontsize="small")
    ax2.set_ylabel("%")
    ax2.set_ylim(0, 105)
    ax2.set_title("SOC and reserve (shaded: dormant)")
    ax2.legend(loc="lower right", fontsize="small")
    fig.autofmt_xdate()
    fig.tight_layout()
    return _save(fig, path)


def daily_chart(rs: ReportSet, path: Path, *, tz: str) -> Path:
    """Grid and DC energy per local day, summed over the report's sites."""
    grid: dict[str, float] = defaultdict(float)
    dc: dict[str, float] = defaultdict(float)
    for ser in rs.series.values():
        for iv in ser.intervals:
            day = local_time(iv.start, tz).strftime("%Y-%m-%d")
            grid[day] += iv.grid_w * iv.hours / 1000
            dc[day] += iv.dc_load_w * iv.hours / 1000
    days = sorted(grid)
    fig = Figure(figsize=(9, 4))
    ax = fig.subplots()
    x = range(len(days))
    ax.bar([i - 0.2 for i in x], [grid[d] for d in days], width=0.4, label="grid import")
    ax.bar([i + 0.2 for i in x], [dc[d] for d in days], width=0.4, label="telecom DC load")
    ax.set_xticks(list(x), days, rotation=30, fontsize="small")
    ax.set_ylabel("kWh per day")
    ax.set_title(f"{rs.scope} {rs.site or rs.group or 'fleet'}: daily energy")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return _save(fig, path)


def savings_chart(rs: ReportSet, path: Path) -> Path:
    sites = sorted(rs.sites)
    fig = Figure(figsize=(max(6, 0.5 * len(sites) + 3), 4.5))
    ax1, ax2 = fig.subplots(1, 2)
    money = [rs.sites[s].savings_cost for s in sites]
    kwh = [rs.sites[s].savings_kwh for s in sites]
    currency = next(iter(rs.sites.values())).currency if rs.sites else ""
    ax1.bar(sites, money, color=["#4c9f70" if v >= 0 else "#c0504d" for v in money])
    ax1.set_title(f"saved ({currency})")
    ax2.bar(sites, kwh, color=["#4c9f70" if v >= 0 else "#c0504d" for v in kwh])
    ax2.set_title("saved (kWh; battery losses count against)")
    for ax in (ax1, ax2):
        ax.axhline(0, color="black", lw=0.6)
        ax.tick_params(axis="x", labelrotation=60, labelsize="small")
    fig.tight_layout()
    return _save(fig, path)


def write_report(
    rs: ReportSet,
    ctx: ControlContext,
    out: Path,
    *,
    tz: str = "Asia/Shanghai",
    charts: bool = True,
    max_site_charts: int = 50,
) -> list[Path]:
    """report.csv, report.json and the PNGs into `out`; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "report.csv", out / "report.json"]
    files[0].write_text(rs.to_csv(), encoding="utf-8")
    files[1].write_text(json.dumps(rs.to_json(), indent=2, default=str), encoding="utf-8")
    if not charts:
        return files
    files.append(daily_chart(rs, out / "daily.png", tz=tz))
    files.append(savings_chart(rs, out / "savings.png"))
    for site in sorted(rs.series)[:max_site_charts]:
        tariff = ctx.tariffs.get(rs.tariffs.get(site, ""))
        zone = rs.zones.get(site, tz)
        files.append(site_chart(rs.series[site], tariff, out / f"site-{site}.png", tz=zone))
    return files


__all__ = ["daily_chart", "savings_chart", "site_chart", "write_report"]
