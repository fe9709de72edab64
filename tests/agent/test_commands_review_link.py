"""Safety review of the command path, whole agent against a simulated site and mosquitto: the
reserve stop never waits behind a slow breaker, and acks survive a broker outage."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from agent.acks import AckQueue, QueuedAck
from protocols.messages import AckStatus, BreakerSet, PeakShave
from simulators.broker import Broker
from simulators.modbus.faults import Fault, FaultKind
from simulators.physics.battery import BatteryMode
from simulators.spec import BatterySpec, BreakerSpec, SiteSpec
from tests.agent.devices_support import wait_for
from tests.agent.test_commands_review_dormant import SITE, Live, running

SPEED = 4.0  # slow enough that a breaker settling is long in wall time too
POLL_S = 2.0  # simulated: the battery is read every 0.5 s of real time
OPEN_DELAY_S = 9.0  # the breaker takes 9 simulated seconds to open (BREAKER_SETTLE_S is 10)


def slow_breaker_site() -> SiteSpec:
    return SiteSpec(
        id=SITE,
        battery=BatterySpec(capacity_ah=1000, initial_soc=60.0),
        breaker=BreakerSpec(open_delay_s=OPEN_DELAY_S),
    )


def slow_answers() -> Fault:
    """Every breaker request answered 50 ms late, for the next minute."""
    return Fault(FaultKind.LATENCY, time.monotonic(), time.monotonic() + 60, latency_s=0.05)


def breaker_written(live: Live) -> bool:
    return live.site.units["breaker"].writes > 0


async def test_reserve_stop_does_not_wait_for_a_settling_breaker(
    tmp_path: Path, mosquitto: Broker
) -> None:
    spec = slow_breaker_site()
    async with running(tmp_path, mosquitto, spec=spec, speed=SPEED, poll_s=POLL_S) as live:
        model = live.site.runtime.model
        shave = live.op.send(live.clock, PeakShave(3000))
        await wait_for(lambda: live.op.ack_for(shave) is not None, timeout=10)
        ack = live.op.ack_for(shave)
        assert ack is not None and ack.status is AckStatus.APPLIED, ack
        assert model.battery.mode is BatteryMode.DISCHARGE
        # A breaker command that holds the command lock while the channel settles (≈ 2.3 s).
        live.site.faults.add("breaker", slow_answers())
        opening = live.op.send(live.clock, BreakerSet(4, False))
        await wait_for(lambda: breaker_written(live), timeout=10)
        # Meanwhile the SOC falls through the reserve (≈ 33 % for this load on 48 kWh).
        crossed_at = live.clock.now()
        model.battery.soc = 20.0
        await wait_for(lambda: model.battery.mode is not BatteryMode.DISCHARGE, timeout=10)
        stopped_at = live.clock.now()
        assert live.op.ack_for(opening) is None, "the stop waited for the breaker to settle"
        assert stopped_at - crossed_at < OPEN_DELAY_S

        # The audit entry is committed (off the loop) just after the write that stopped it.
        def stop_entry() -> Any:
            return next(
                (e for e in live.agent.audit.entries() if e.reason == "reserve_reached"), None
            )

        await wait_for(lambda: stop_entry() is not None, timeout=10)
        stop = stop_entry()
        assert stop.status == "applied" and stop.action == "battery.auto"
        # The breaker command completes on its own, after the stop.
        await wait_for(lambda: live.op.ack_for(opening) is not None, timeout=15)
        ack = live.op.ack_for(opening)
        assert ack is not None and ack.status is AckStatus.APPLIED, ack
        order = [e.command_id for e in live.agent.audit.entries()]
        assert order.index("agent:reserve_reached") < order.index(opening.id)
        assert live.agent.audit.verify().ok


async def test_an_ack_finished_while_the_broker_is_down_arrives_once_after(
    tmp_path: Path, mosquitto: Broker
) -> None:
    """The command arrives, the broker stops while the breaker settles, the outcome is known
    with no link: the signed ack waits in the agent's database and is published, the very same
    bytes, once the broker is back (at least once by design; here exactly once)."""
    spec = slow_breaker_site()
    async with running(tmp_path, mosquitto, spec=spec, speed=SPEED, poll_s=POLL_S) as live:
        opening = live.op.send(live.clock, BreakerSet(4, False))
        await wait_for(lambda: breaker_written(live), timeout=10)
        await asyncio.to_thread(mosquitto.stop)
        assert live.agent.audit.last() is None, "the command finished before the broker stopped"
        await wait_for(lambda: live.agent.audit.last() is not None, timeout=15)
        entry = live.agent.audit.last()
        assert entry is not None and entry.command_id == opening.id and entry.status == "applied"
        queue = AckQueue(tmp_path / "agent.db")  # a second connection, as `status` would open

        def queued() -> list[QueuedAck]:
            return queue.pending()

        try:
            # The ack is stored (off the loop) just after the audit entry.
            await wait_for(lambda: len(queued()) == 1, timeout=10)
            stored = queued()
            assert stored[0].command_id == opening.id and stored[0].seq == opening.seq
            assert live.op.ack_for(opening) is None
            await asyncio.to_thread(mosquitto.start)
            await wait_for(lambda: live.op.ack_for(opening) is not None, timeout=30)
            ack = live.op.ack_for(opening)
            assert ack is not None and ack.status is AckStatus.APPLIED, ack
            assert ack.readback == {"breaker.ch4_closed": False}
            await wait_for(lambda: queued() == [], timeout=10)  # PUBACKed: deleted
            # Nothing more comes: one copy, the bytes signed when the outcome was known.
            await asyncio.sleep(0.5)
            assert [a.id for a in live.op.acks].count(opening.id) == 1
            assert live.op.ack_bytes == [stored[0].body]
            assert live.agent.delivery.counters.acks_published == 1
        finally:
            queue.close()
