"""A minimal agent for delivery tests: synthetic readings → Outbox → Delivery → broker.

Reading number i is a pure function of i (`reading(i)`), and i is the outbox's own persisted
`appended_total` at the time of the append: the outbox is the only store. So after any number of
`kill -9`s, the readings taken (those whose `append` returned) are exactly `reading(0 … N-1)` with
N = the outbox's `appended_total`, and a test can check the receiver holds exactly those.

    python -m tests.support.delivery_driver --db agent.db --key site.key --site S \
        --aggregator-pub HEX --port 1883 [--no-append]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from pathlib import Path

from agent.delivery import Delivery, DeliverySettings
from agent.delivery_rules import DeliveryPolicy
from agent.identity import load_identity
from agent.mqtt_link import LinkSettings
from agent.outbox import Outbox, OutboxLimits
from protocols.clock import SystemClock
from protocols.types import Quality, Reading

T0 = 1_700_000_000_000


def reading(i: int) -> Reading:
    """The i-th synthetic reading: its value is i, so receivers can check the set exactly."""
    return Reading(T0 + i, f"d{i % 4}", "p", i, Quality.GOOD)


async def run(a: argparse.Namespace) -> None:
    identity = load_identity(a.site, a.key, [a.aggregator_pub])
    outbox = Outbox(a.db, limits=OutboxLimits(max_readings=None, max_bytes=None, max_age_s=None))
    settings = DeliverySettings(
        link=LinkSettings(host=a.host, port=a.port, client_id=f"agent-{a.site}", keepalive_s=5),
        policy=DeliveryPolicy(
            batch_max_readings=a.batch,
            batch_max_age_s=0.05,
            window=16,
            receipt_timeout_s=5.0,
            jitter_max_s=a.jitter,
            reconnect_min_s=0.1,
            reconnect_max_s=0.5,
        ),
        idle_tick_s=0.05,
    )
    delivery = Delivery(settings, identity, outbox, SystemClock())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    task = asyncio.create_task(delivery.run())
    print("ready", flush=True)
    while not stop.is_set():
        if a.append:
            n = outbox.stats().appended_total
            outbox.append([reading(i) for i in range(n, n + a.chunk)])
            delivery.wake()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), a.every)
    await delivery.stop()
    await task
    outbox.close()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--db", type=Path, required=True)
    p.add_argument("--key", type=Path, required=True)
    p.add_argument("--site", required=True)
    p.add_argument("--aggregator-pub", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--no-append", dest="append", action="store_false")
    p.add_argument("--chunk", type=int, default=37, help="readings per append")
    p.add_argument("--every", type=float, default=0.002, help="seconds between appends")
    p.add_argument("--batch", type=int, default=200, help="max readings per batch")
    p.add_argument("--jitter", type=float, default=0.05, help="max drain jitter, seconds")
    asyncio.run(run(p.parse_args(argv)))


if __name__ == "__main__":
    main()
