"""Fleet (figure 6): wall time for 100 / 500 / 1,000 sites with agents to live one simulated day.

Runs the fleet simulator exactly as a tester does, `sitewatt-sim scenario
config/scenarios/fleet-20.toml --sites N --duration 24 --speed S`: one broker, the real aggregator
(`sitewatt-aggregator serve`, SQLite), simulator processes serving every site's five Modbus
devices, and a real agent per site (many per process), all on one SimClock. The wall time is from
launch to the report written (start-up, the day, shutdown and report included). The aggregator's
process is sampled with psutil for its CPU (mean % of one core over the run) and RSS (max); the
fleet's own figures (sites online, readings stored, CPU and memory by role) come from the
fleet-summary.json the simulator writes.

At speed S a day lasts 86,400 / S wall seconds whatever the load: the question is whether the
machine keeps up (every site online, readings flowing, agents' polls on time) and what it costs.
Readings stored per site and simulated day show it: the same scenario stores about the same per
site at every size while the machine keeps up, and fewer once agents or simulators fall behind.
The target, one day in ≤ 10 minutes, needs S ≥ 144 plus start-up; the default S = 160.

    python -m bench.bench_fleet [--quick] [--sizes 100 500 1000] [--speed 160] [--hours 24]
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from bench.common import REPO, Row, emit, parser, show, venv_script
from simulators.fleet_plan import default_poll_s

TARGET_S = 600.0
SCENARIO = REPO / "config" / "scenarios" / "fleet-20.toml"
MB = 1024 * 1024


class TreeSampler:
    """Samples the aggregator process among the descendants of `root` (found by command line)."""

    def __init__(self, root: int, interval: float = 2.0) -> None:
        self.root = psutil.Process(root)
        self.interval = interval
        self.cpu_s = 0.0
        self.rss_max = 0
        self.seen_s = 0.0
        self.procs = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._last: dict[int, float] = {}

    def _aggregator(self) -> psutil.Process | None:
        with contextlib.suppress(psutil.Error):
            for p in self.root.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    cmd = " ".join(p.cmdline())
                    if "sitewatt-aggregator" in cmd and " serve" in cmd:
                        return p
        return None

    def _run(self) -> None:
        first: float | None = None
        while not self._stop.wait(self.interval):
            with contextlib.suppress(psutil.Error):
                self.procs = max(self.procs, len(self.root.children(recursive=True)))
            agg = self._aggregator()
            if agg is None:
                continue
            with contextlib.suppress(psutil.Error):
                t = agg.cpu_times()
                cpu = float(t.user + t.system)
                now = time.monotonic()
                if first is None:
                    first = now
                    self._t_first_cpu = cpu
                self.cpu_s = cpu - self._t_first_cpu
                self.seen_s = now - first
                self.rss_max = max(self.rss_max, int(agg.memory_info().rss))

    def start(self) -> TreeSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def cpu_pct(self) -> float:
        return 100.0 * self.cpu_s / self.seen_s if self.seen_s > 0 else float("nan")


def control_health(db: Path, speed: float) -> dict[str, Any]:
    """What the aggregator's own records say of the run: command outcomes and round trips (in
    wall time), and how fresh each site's data was at the end (simulated seconds)."""
    if not db.exists():
        return {}
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        by_status = dict(con.execute("SELECT status, count(*) FROM commands GROUP BY 1"))
        reasons = con.execute(
            "SELECT substr(reason, 1, instr(reason || ':', ':') - 1), count(*) FROM commands"
            " WHERE status IN ('rejected', 'failed') GROUP BY 1 ORDER BY 2 DESC LIMIT 5"
        ).fetchall()
        rtts = sorted(r for (r,) in con.execute("SELECT rtt_ms FROM commands WHERE rtt_ms > 0"))
        end = con.execute("SELECT max(t_ms) FROM readings").fetchone()[0] or 0
        ages = sorted(
            (end - t) / 1000.0
            for (t,) in con.execute(
                "SELECT max(r.t_ms) FROM readings r JOIN series s ON s.id = r.series_id"
                " GROUP BY s.site"
            )
        )
        not_followed = con.execute(
            "SELECT count(DISTINCT site) FROM alarms WHERE kind = 'control_not_followed'"
        ).fetchone()[0]
    finally:
        con.close()

    def pct(xs: list[float], q: float) -> float | None:
        return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else None

    sent = sum(by_status.values())
    p50, p99 = pct(rtts, 0.5), pct(rtts, 0.99)
    return {
        "commands": sent,
        "commands_by_status": by_status,
        "command_failures_by_reason": dict(reasons),
        "applied_pct": 100.0 * by_status.get("applied", 0) / sent if sent else None,
        "ack_rtt_wall_ms_p50": None if p50 is None else p50 / speed,
        "ack_rtt_wall_ms_p99": None if p99 is None else p99 / speed,
        "sites_not_followed": not_followed,
        "data_age_s_p50": pct(ages, 0.5),
        "data_age_s_max": ages[-1] if ages else None,
    }


def run_fleet(tmp: Path, sites: int, speed: float, hours: float) -> dict[str, Any]:
    out, work = tmp / f"out-{sites}", tmp / f"work-{sites}"
    log = open(tmp / f"fleet-{sites}.log", "wb")  # noqa: SIM115 - lives with the process
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [venv_script("sitewatt-sim"), "scenario", str(SCENARIO), "--sites", str(sites),
         "--duration", str(hours), "--speed", str(speed), "--out", str(out),
         "--workdir", str(work)],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    log.close()
    sampler = TreeSampler(proc.pid).start()
    try:
        rc = proc.wait(timeout=max(3600.0, 10 * hours * 3600 / speed))
    except subprocess.TimeoutExpired:
        proc.terminate()
        proc.wait(60)
        rc = -1
    wall = time.monotonic() - t0
    sampler.stop()
    summary: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        summary = json.loads((out / "fleet-summary.json").read_text())
    final = summary.get("final", {})
    stored = final.get("readings_stored")
    return {
        "readings_per_site_day": (stored or 0) / sites / (hours / 24.0),
        "sites": sites,
        "exit": rc,
        "wall_s": wall,
        "sim_day_wall_s": hours * 3600 / speed,
        "aggregator_cpu_pct": sampler.cpu_pct,
        "aggregator_rss_mb": sampler.rss_max / MB,
        "processes": sampler.procs,
        "online": final.get("online"),
        "readings_stored": final.get("readings_stored"),
        "cpu_by_role": final.get("cpu_pct", {}),
        "rss_by_role_mb": final.get("rss_mb", {}),
        "log": str(tmp / f"fleet-{sites}.log"),
        "timings": summary.get("timings", {}),
        "poll_s": default_poll_s(speed, sites=sites, cpus=os.cpu_count() or 1),
        **control_health(work / "aggregator" / "aggregator.db", speed),
    }


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=None)
    ap.add_argument("--speed", type=float, default=None)
    ap.add_argument("--hours", type=float, default=None, help="simulated hours (default 24)")
    ap.add_argument("--keep", action="store_true", help="keep the work directories")
    args = ap.parse_args()
    sizes = args.sizes or ([10] if args.quick else [100, 500, 1000])
    speed = args.speed or (720.0 if args.quick else 160.0)
    hours = args.hours or (1.0 if args.quick else 24.0)
    fig: dict[str, Any] = {"speed": speed, "hours": hours}
    rows: list[Row] = []
    tmp = Path(tempfile.mkdtemp(prefix="sitewatt-bench-fleet-"))
    try:
        for n in sizes:
            r = run_fleet(tmp, n, speed, hours)
            fig[f"sites_{n}"] = r
            day = hours == 24.0
            ok = r["exit"] == 0 and r["online"] == n
            rows.append(Row(f"{n} sites, {hours:g} simulated h at {speed:g}x: wall time",
                            r["wall_s"], "s", f"≤ {TARGET_S:g} s" if day else "",
                            (r["wall_s"] <= TARGET_S and ok) if day else None))  # fmt: skip
            rows.append(Row(f"  {n} sites: online at the end / readings stored",
                            f"{r['online']} / {r['readings_stored']}", "", "all online",
                            r["online"] == n))  # fmt: skip
            rows.append(Row(f"  {n} sites: readings stored per site and simulated day",
                            r["readings_per_site_day"], "readings",
                            "falls when the machine cannot keep up"))  # fmt: skip
            rows.append(Row(f"  {n} sites: aggregator CPU (mean) / RSS (max)",
                            f"{r['aggregator_cpu_pct']:.0f} % / {r['aggregator_rss_mb']:.0f} MB",
                            ""))  # fmt: skip
            if r.get("commands"):
                rows.append(Row(f"  {n} sites: commands applied (of sent) / sites not following",
                                f"{r['applied_pct']:.1f} % of {r['commands']} / "
                                f"{r['sites_not_followed']}", "", "all applied"))  # fmt: skip
                rows.append(Row(f"  {n} sites: command round trip p50 / p99 (wall)",
                                f"{r['ack_rtt_wall_ms_p50']:.0f} / {r['ack_rtt_wall_ms_p99']:.0f}",
                                "ms", "p99 ≤ 100 ms on one site"))  # fmt: skip
                if r["command_failures_by_reason"]:
                    why = ", ".join(f"{k} {v}" for k, v in r["command_failures_by_reason"].items())
                    rows.append(Row(f"  {n} sites: commands refused or failed, by reason", why, ""))
            if r.get("data_age_s_max") is not None:
                rows.append(Row(f"  {n} sites: newest reading's age at the end, median / worst",
                                f"{r['data_age_s_p50']:.0f} / {r['data_age_s_max']:.0f}",
                                "simulated s", f"poll every {r['poll_s']} s"))  # fmt: skip
            roles = ", ".join(f"{k} {v:.0f}%" for k, v in sorted(r["cpu_by_role"].items()))
            rows.append(Row(f"  {n} sites: CPU by role at the end (% of a core)", roles, ""))
            if r["exit"] != 0:
                rows.append(Row(f"  {n} sites: the run failed (exit {r['exit']})", r["log"], ""))
    finally:
        if not args.keep:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    show(f"fleet: one simulated {'day' if hours == 24 else f'{hours:g} h'} per size", rows)
    emit("fleet", fig)


if __name__ == "__main__":
    main()
