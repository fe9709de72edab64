"""Command round trip (figure 5): p50 / p99 / max over 1,000 commands.

The real aggregator side (`aggregator.service.build_services`: ingest + commands on SQLite) runs
in this process; the real agent (`sitewatt-agent run`, shipped config) in its own process, against
the simulated site and a private mosquitto. Each command is timed from `Commands.send_command`
(seq from storage, record, seal, publish QoS 1) through the broker, the agent (verify against the
pinned key, site, expiry, seq, interlocks, Modbus write, read-back, audit entry, signed ack),
the broker again, ingest (verify, store the ack against the command) to `wait_ack_blocking`
returning the completed record. One command at a time: `ac.setpoint` alternating 24 / 25 °C (a
real register write and read-back each time). The planning step that would precede a command is
pure arithmetic (protocols.control) and not part of this figure.

    python -m bench.bench_command [--quick] [--commands N]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from aggregator.config import config_from_dict
from aggregator.service import build_services
from aggregator.storage import CommandStatus
from bench.bench_footprint import agent_process
from bench.common import (
    Row,
    agent_toml,
    emit,
    median,
    mosquitto,
    parser,
    percentile,
    show,
    sim_site,
)
from protocols.keys import generate_key, load_private_key, public_key_hex, save_private_key

P99_TARGET_MS = 100.0
SITE = "sim-site-1"


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--commands", type=int, default=None, help="default 1,000 (quick: 50)")
    args = ap.parse_args()
    n = args.commands or (50 if args.quick else 1000)
    fig: dict[str, Any] = {"commands": n}
    with tempfile.TemporaryDirectory(prefix="sitewatt-bench-command-") as d:
        tmp = Path(d)
        agg_key_file = tmp / "aggregator.key"
        save_private_key(generate_key(), agg_key_file)
        agg_pub = public_key_hex(load_private_key(agg_key_file))
        site_key = generate_key()
        with sim_site(tmp) as sim, mosquitto() as b:
            config = config_from_dict({
                "broker": {"port": b.port, "client_id": "bench-command"},
                "database": {"path": str(tmp / "aggregator.db")},
                "keys": {"key_file": str(agg_key_file)},
                "log_level": "warning",
            })  # fmt: skip
            services = build_services(config)
            services.registry.enrol(SITE, public_key_hex(site_key))
            ingest, commands = services.ingest, services.commands
            assert ingest is not None and commands is not None
            ingest.start()
            if not ingest.wait_connected(10):
                raise SystemExit("ingest did not connect")
            cfg = agent_toml(tmp, device_ports=sim.ports, broker_port=b.port,
                             aggregator_pub_hex=agg_pub, site_key=site_key)  # fmt: skip
            rtts: list[float] = []
            stored_rtts: list[float] = []
            statuses: dict[str, int] = {}
            try:
                with agent_process(cfg, tmp):
                    deadline = time.monotonic() + 60
                    while time.monotonic() < deadline:
                        st = ingest.presence().get(SITE)
                        if st is not None and st.online:
                            break
                        time.sleep(0.1)
                    else:
                        raise SystemExit("the agent never came online (see agent.log)")
                    time.sleep(2.0)  # first polls done: the interlocks have their inputs
                    for i in range(n + 5):
                        t0 = time.perf_counter()
                        rec = commands.send_command(
                            SITE, "ac.setpoint", {"setpoint_c": 24.0 + (i % 2)}, 600, "bench"
                        )
                        done = commands.wait_ack_blocking(rec.id, 10.0)
                        rtt = (time.perf_counter() - t0) * 1000
                        if i < 5:
                            continue  # warm-up: first connections, caches
                        rtts.append(rtt)
                        status = str(done.status)
                        statuses[status] = statuses.get(status, 0) + 1
                        if done.rtt_ms is not None:
                            stored_rtts.append(done.rtt_ms)
            finally:
                ingest.stop()
                services.storage.close()
    applied = statuses.get(CommandStatus.APPLIED.value, 0)
    fig.update({
        "p50_ms": percentile(rtts, 50),
        "p99_ms": percentile(rtts, 99),
        "max_ms": max(rtts),
        "mean_ms": sum(rtts) / len(rtts),
        "stored_rtt_p50_ms": median(stored_rtts),
        "applied": applied,
        "statuses": statuses,
    })  # fmt: skip
    rows = [
        Row("command round trip p50", fig["p50_ms"], "ms"),
        Row("command round trip p99", fig["p99_ms"], "ms", f"≤ {P99_TARGET_MS:g} ms",
            fig["p99_ms"] <= P99_TARGET_MS),
        Row("command round trip max", fig["max_ms"], "ms"),
        Row("  sent → ack received (as the aggregator stores it), p50", fig["stored_rtt_p50_ms"],
            "ms"),
        Row("  applied with read-back", f"{applied} / {n}", "", "all", applied == n),
    ]  # fmt: skip
    show(f"command round trip over {n} commands, one at a time", rows)
    emit("command", fig)


if __name__ == "__main__":
    main()
