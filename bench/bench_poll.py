"""Agent poll throughput (figure 1): registers/s with and without block coalescing.

The simulated site (`sitewatt-sim site`, five devices on five Modbus TCP ports, its own process)
is polled by the agent's own poller (`agent.poller.Poller.poll_once`: read, decode, report-by-
exception, hand to a sink) as fast as it answers: one task per bus, each polling its device back
to back for the measuring window.

- coalesced: the plan of `protocols.blocks.plan_profile` (fewest requests each device allows:
  greedy is optimal, proven in its docstring and checked against brute force in the tests);
- one request per point: every point read alone, as a per-register gateway does.

Registers are 16-bit words plus coil/discrete bits (each bit counts as one register, as
gateways count them). Modbus requests per poll cycle are counted by the bus adapter
(`ModbusBus.stats`) and set against the minimum and against one per point.

    python -m bench.bench_poll [--quick] [--runs N] [--seconds S]
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from agent.config import load_config
from agent.poller import DeviceState, Poller, load_device_profiles
from agent.polling import ExceptionFilter
from bench.common import (
    ProcSampler,
    Row,
    agent_toml,
    emit,
    median,
    parser,
    runs_of,
    show,
    sim_site,
)
from protocols.blocks import ReadBlock, plan_blocks
from protocols.clock import SystemClock
from protocols.keys import generate_key, public_key_hex
from protocols.types import Reading

TARGET = 20_000  # registers/s with block coalescing


def one_per_point(dev: DeviceState) -> DeviceState:
    """The same device read one point per request (no coalescing)."""
    blocks: list[ReadBlock] = []
    for p in dev.profile.points:
        blocks += plan_blocks([p], max_block=p.width, max_coil_block=1, max_gap=0)
    names = [p.name for b in blocks for p in b.points]
    bands = [float(dev.config.deadbands.get(n, dev.profile.point(n).deadband) or 0.0)
             for n in names]  # fmt: skip
    return DeviceState(dev.id, dev.config, dev.profile, blocks, names, dev.schedule,
                       ExceptionFilter(bands, int(dev.config.max_interval_s * 1000)))  # fmt: skip


async def measure(config: Any, *, coalesce: bool, seconds: float) -> dict[str, float]:
    profiles = load_device_profiles(config)
    taken = 0

    def sink(rs: list[Reading] | Any) -> None:
        nonlocal taken
        taken += len(rs)

    poller = Poller(config, profiles, sink, SystemClock())
    if not coalesce:
        for dev_id, dev in list(poller.devices.items()):
            poller.devices[dev_id] = one_per_point(dev)
    per_cycle_regs = {d: sum(b.count for b in s.blocks) for d, s in poller.devices.items()}
    polls = dict.fromkeys(poller.devices, 0)

    async def run_bus(dev_id: str, deadline: float) -> None:
        while time.perf_counter() < deadline:
            await poller.poll_once(dev_id)
            polls[dev_id] += 1

    # connect and warm every bus first
    for dev_id in poller.devices:
        await poller.poll_once(dev_id)
    for bus in poller.buses.values():
        bus.stats.requests = bus.stats.registers = bus.stats.failures = 0
    sampler = ProcSampler().start()
    t0 = time.perf_counter()
    await asyncio.gather(*(run_bus(d, t0 + seconds) for d in poller.devices))
    elapsed = time.perf_counter() - t0
    cpu = sampler.stop()
    requests = sum(b.stats.requests for b in poller.buses.values())
    registers = sum(b.stats.registers for b in poller.buses.values())
    failures = sum(b.stats.failures for b in poller.buses.values())
    await poller.stop()
    cycles = min(polls.values())
    # every device of the simulated site is on its own TCP port, so its bus's requests are its own
    per_cycle = sum(poller.bus_of(d).stats.requests / max(1, n) for d, n in polls.items())
    return {
        "registers_per_s": registers / elapsed,
        "requests_per_s": requests / elapsed,
        "site_cycles_per_s": cycles / elapsed,
        "requests_per_cycle": per_cycle,
        "registers_per_cycle": float(sum(per_cycle_regs.values())),
        "agent_cpu_pct": cpu.cpu_pct,
        "failures": float(failures),
        "readings_per_s": taken / elapsed,
    }


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--seconds", type=float, default=None, help="measuring window per run")
    args = ap.parse_args()
    runs = runs_of(args, 3)
    seconds = args.seconds or (1.0 if args.quick else 5.0)
    fig: dict[str, Any] = {}
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="sitewatt-bench-poll-") as d:
        tmp = Path(d)
        with sim_site(tmp) as sim:
            cfg = load_config(agent_toml(
                tmp, device_ports=sim.ports, broker_port=1883,
                aggregator_pub_hex=public_key_hex(generate_key()), site_key=generate_key(),
            ))  # fmt: skip
            profiles = load_device_profiles(cfg)
            from protocols.blocks import plan_profile

            minimum = sum(len(plan_profile(p)) for p in profiles.values())
            points = sum(len(p.points) for p in profiles.values())
            results: dict[bool, list[dict[str, float]]] = {True: [], False: []}
            for _ in range(runs):
                for coalesce in (True, False):
                    sim_cpu = ProcSampler(sim.pid).start()
                    r = asyncio.run(measure(cfg, coalesce=coalesce, seconds=seconds))
                    r["sim_cpu_pct"] = sim_cpu.stop().cpu_pct
                    results[coalesce].append(r)
    for coalesce, label in ((True, "coalesced"), (False, "one_per_point")):
        rs = results[coalesce]
        for key in rs[0]:
            fig[f"{label}_{key}"] = median([r[key] for r in rs])
    fig["points"] = points
    fig["min_requests_per_cycle"] = minimum
    co, naive = fig["coalesced_registers_per_s"], fig["one_per_point_registers_per_s"]
    rows.append(Row("poll throughput, block coalescing", co, "registers/s", f"≥ {TARGET:,}",
                    co >= TARGET))  # fmt: skip
    rows.append(Row("poll throughput, one request per point", naive, "registers/s",
                    f"coalescing: {co / naive:.1f}x"))  # fmt: skip
    rows.append(
        Row(
            "Modbus requests per site poll cycle, coalesced",
            fig["coalesced_requests_per_cycle"],
            "requests",
            f"minimum {minimum}",
            abs(fig["coalesced_requests_per_cycle"] - minimum) < 0.5,
        )
    )
    rows.append(
        Row(
            "Modbus requests per site poll cycle, one per point",
            fig["one_per_point_requests_per_cycle"],
            "requests",
            f"{points} points",
        )
    )
    rows.append(
        Row(
            "registers per site poll cycle (coalesced / per point)",
            f"{fig['coalesced_registers_per_cycle']:.0f} / "
            f"{fig['one_per_point_registers_per_cycle']:.0f}",
            "",
        )
    )
    rows.append(
        Row(
            "site poll cycles/s (coalesced / per point)",
            f"{fig['coalesced_site_cycles_per_s']:.0f} / "
            f"{fig['one_per_point_site_cycles_per_s']:.0f}",
            "cycles/s",
        )
    )
    rows.append(
        Row(
            "agent CPU while polling flat out (coalesced)", fig["coalesced_agent_cpu_pct"], "% core"
        )
    )
    rows.append(Row("simulator CPU meanwhile (coalesced)", fig["coalesced_sim_cpu_pct"], "% core"))
    rows.append(
        Row(
            "failed requests (coalesced / per point)",
            f"{fig['coalesced_failures']:.0f} / {fig['one_per_point_failures']:.0f}",
            "",
        )
    )
    show(
        f"agent poll throughput against the simulated site (median of {runs} runs of "
        f"{seconds:g} s)",
        rows,
    )
    emit("poll", fig)


if __name__ == "__main__":
    main()
