"""Simulator cost: CPU per physics step and per register-image refresh, on the fleet's sites.

The fleet target (1,000 simulated sites with agents on one 2-core machine, a simulated day in
≤ 10 minutes) shares two cores between the simulators, the agents, the broker and the
aggregator, so what one site's physics costs per simulated day matters. Measured in-process,
CPU time (not wall), on the sites of config/scenarios/fleet-20.toml built as the fleet builds
them, with the scenario's own step (`sim.step_s`, 30 s: 2,880 steps per site-day):

- `SiteModel.step`: each site stepped through one simulated day from local midnight (its
  events and random outages included), µs of CPU per step, and what that makes per site-day
  and for 1,000 sites;
- `RegisterImage.refresh`: each site's five devices refreshed from their views after every
  `--poll-s` simulated seconds of physics (the values have moved, as when an agent polls),
  µs of CPU per device refresh; the view's read (`simulators.devices`) is reported apart.

    python -m bench.bench_physics [--quick] [--runs N] [--poll-s 60]
"""

from __future__ import annotations

import time
from typing import Any

from bench.common import REPO, Row, emit, median, parser, runs_of, show
from protocols.clock import parse_time
from protocols.profiles import load_profile
from simulators.devices import DeviceView, view
from simulators.modbus.image import RegisterImage
from simulators.physics.site import SiteModel
from simulators.scenario import FleetScenario, FleetSite, load_scenario

SCENARIO = REPO / "config" / "scenarios" / "fleet-20.toml"
START = parse_time("2025-07-01T00:00:00+08:00")
DAY_S = 86_400.0
FLEET_SITES = 1_000
STEP_TARGET_US = 42.5 / 2  # half of what this bench measured before the step was optimised


def fleet_sites(quick: bool) -> tuple[list[FleetSite], float]:
    """The scenario's sites (the first 4 with --quick) and its physics step."""
    sc = load_scenario(SCENARIO)
    assert isinstance(sc, FleetScenario)
    sites = sc.build_sites(START, port_base=0)
    return (sites[:4] if quick else sites), sc.sim.step_s


def step_cost(sites: list[FleetSite], step_s: float) -> float:
    """µs of CPU per `SiteModel.step`, every site through one simulated day."""
    models = [SiteModel(s.spec, start=START) for s in sites]
    cpu0 = time.process_time()
    for m in models:
        m.advance_to(START + DAY_S, max_step=step_s)
    cpu = time.process_time() - cpu0
    steps = len(models) * round(DAY_S / step_s)
    return cpu / steps * 1e6


def refresh_cost(sites: list[FleetSite], step_s: float, poll_s: float) -> tuple[float, float]:
    """(µs per device refresh, µs per device view read) with the physics moving in between."""
    refresh_s = read_s = 0.0
    n = 0
    for s in sites:
        m = SiteModel(s.spec, start=START)
        devices: list[tuple[DeviceView, RegisterImage]] = [
            (view(kind), RegisterImage(load_profile(profile)))
            for kind, profile in s.profiles.items()
        ]
        t = START
        while t < START + DAY_S:
            t += poll_s
            m.advance_to(t, max_step=step_s)
            for v, image in devices:
                c0 = time.process_time()
                values = v.read(m)
                c1 = time.process_time()
                image.refresh(values)
                c2 = time.process_time()
                read_s += c1 - c0
                refresh_s += c2 - c1
                n += 1
    return refresh_s / n * 1e6, read_s / n * 1e6


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--poll-s", type=float, default=60.0, help="simulated s between refreshes")
    args = ap.parse_args()
    runs = runs_of(args, default=3)
    sites, step_s = fleet_sites(args.quick)

    step_us = median([step_cost(sites, step_s) for _ in range(runs)])
    pairs = [refresh_cost(sites, step_s, args.poll_s) for _ in range(runs)]
    refresh_us = median([p[0] for p in pairs])
    read_us = median([p[1] for p in pairs])
    steps_per_day = DAY_S / step_s
    site_day_s = step_us * steps_per_day / 1e6

    figures: dict[str, Any] = {
        "sites": len(sites),
        "step_s": step_s,
        "step_us": step_us,
        "site_day_cpu_s": site_day_s,
        "fleet_day_cpu_s": site_day_s * FLEET_SITES,
        "refresh_us_per_device": refresh_us,
        "view_read_us_per_device": read_us,
    }
    rows = [
        Row(
            f"SiteModel.step ({len(sites)} fleet-20 sites, {step_s:g} s steps)",
            step_us,
            "µs CPU/step",
            f"≤ {STEP_TARGET_US:g} (2× under 42.5)",
            step_us <= STEP_TARGET_US,
        ),
        Row(f"physics per site-day ({steps_per_day:,.0f} steps)", site_day_s, "s CPU"),
        Row(f"physics per fleet-day ({FLEET_SITES:,} sites)", site_day_s * FLEET_SITES, "s CPU"),
        Row(f"RegisterImage.refresh (after {args.poll_s:g} s)", refresh_us, "µs CPU/device"),
        Row("view read (simulators.devices)", read_us, "µs CPU/device"),
    ]
    show(
        "Simulator cost (in-process, CPU time)",
        rows,
        note=f"runs: {runs}, median; scenario {SCENARIO.relative_to(REPO)}",
    )
    emit("physics", figures)


if __name__ == "__main__":
    main()
