"""Commands against a simulated site: every refusal writes nothing; an accepted command is
written, read back and acked; leases and the reserve are enforced by the agent itself."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.audit import AuditLog
from agent.commands import CommandProcessor, SiteDevices, readback_final
from agent.poller import Poller, load_device_profiles
from protocols import envelope, messages
from protocols.clock import SimClock, now_ms
from protocols.codec import PointCodec
from protocols.envelope import Keyring
from protocols.keys import generate_key, load_public_key_hex
from protocols.messages import (
    Ack,
    AckStatus,
    BatteryAuto,
    BreakerSet,
    Command,
    Dormant,
    Params,
    PeakShave,
)
from protocols.profiles import Table
from simulators.spec import BatterySpec, SiteSpec
from tests.agent.devices_support import AGG_KEY, AGG_PRIVATE, Collector, wait_for
from tests.agent.sim_support import PROFILES, SimSite, start_sim_site

SITE = "site-t1"
TOPIC = f"sitewatt/v1/{SITE}/cmd"
START = 1_700_000_000.0 + 6 * 3600  # 14:00 in Asia/Shanghai


@dataclass
class Rig:
    site: SimSite
    poller: Poller
    proc: CommandProcessor
    audit: AuditLog
    acks: list[Ack]
    clock: SimClock

    def cmd(
        self,
        params: Params,
        seq: int,
        *,
        site: str = SITE,
        expires_in_ms: int = 60_000,
        lease_s: int = 60,
    ) -> Command:
        t = now_ms(self.clock)
        issued = min(t, t + expires_in_ms - 60_000)
        return Command(str(uuid.uuid4()), site, seq, issued, t + expires_in_ms, lease_s, params)

    async def send(self, cmd: Command, *, key: object = AGG_PRIVATE, topic: str = TOPIC) -> None:
        data = envelope.Signer(key).seal_bytes(messages.encode(cmd), topic)  # type: ignore[arg-type]
        await self.proc.handle(TOPIC, data)

    async def refresh(self) -> None:
        for d in self.poller.devices:
            await self.poller.poll_once(d)

    async def battery_mode(self) -> int:
        """Read the battery's mode register over Modbus, as an outsider would."""
        pt = self.poller.devices["battery"].profile.point("mode")
        words = await self.poller.bus_of("battery").read(2, Table.HOLDING, pt.address, 1)
        return int(words[0])

    async def read_point(self, device: str, point: str) -> float | bool:
        """Read any point over Modbus (decoded with its profile), as an outsider would."""
        pt = self.poller.devices[device].profile.point(point)
        unit = PROFILES[device][2]
        words = await self.poller.bus_of(device).read(unit, pt.table, pt.address, pt.width)
        if pt.table.is_bits:
            return bool(words[0])
        value, _ = PointCodec(pt).decode([int(w) for w in words])
        assert isinstance(value, float | int | bool), value
        return value

    async def channel_closed(self, n: int) -> bool:
        pt = self.poller.devices["breaker"].profile.point(f"ch{n}_closed")
        bits = await self.poller.bus_of("breaker").read(4, pt.table, pt.address, 1)
        return bool(bits[0])


async def make_rig(
    tmp_path: Path,
    *,
    soc: float,
    speed: float = 20.0,
    spec_kw: dict[str, Any] | None = None,
    interlocks: dict[str, Any] | None = None,
) -> AsyncIterator[Rig]:
    """A simulated site on a SimClock `speed` times real time, and a command processor on it.

    The poller is not started: the test polls (`refresh`). The configured poll interval only
    sets how old a reading the interlocks accept (3 intervals), so it scales with the speed:
    at least 3 s of real time, so that a loaded machine stalling the event loop between a
    refresh and `enforce` does not age the readings out (at speed 400, a 0.75 s stall was
    already 5 simulated minutes: the agent rightly called the SOC unknown)."""
    clock = SimClock(start=START, speed=speed)
    battery = BatterySpec(capacity_ah=1000, initial_soc=soc)
    spec = SiteSpec(id=SITE, **{"battery": battery, **(spec_kw or {})})
    site = await start_sim_site(spec, clock)
    cfg = site.config(tmp_path, poll_interval_s=max(5.0, speed), interlocks=interlocks or {})
    profiles = load_device_profiles(cfg)
    poller = Poller(cfg, profiles, Collector(), clock)
    audit = AuditLog(tmp_path / "agent.db")
    acks: list[Ack] = []

    async def publish(ack: Ack) -> None:
        acks.append(ack)

    proc = CommandProcessor(
        cfg,
        SiteDevices.build(cfg, profiles),
        poller,
        audit,
        clock,
        keyring=Keyring([load_public_key_hex(AGG_KEY)]),
        topic=TOPIC,
        publish_ack=publish,
    )
    rig = Rig(site, poller, proc, audit, acks, clock)
    try:

        def loaded() -> bool:
            site.runtime.sync()  # the physics move when asked (on each Modbus request)
            return site.runtime.model.dc_load_w > 0

        await wait_for(loaded, timeout=5)
        await rig.refresh()
        yield rig
    finally:
        await poller.stop()
        await site.server.stop()
        audit.close()


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    # SOC 35 %: below the ~36.7 % reserve of 4 kW x 3 h on 48 kWh (peak shave refused).
    async for r in make_rig(tmp_path, soc=35.0):
        yield r


async def test_refusals_write_nothing(rig: Rig) -> None:
    forger = generate_key()
    cases: list[tuple[str, Command, dict[str, object]]] = [
        ("bad_signature", rig.cmd(BreakerSet(4, False), 10), {"key": forger}),
        ("bad_signature", rig.cmd(BreakerSet(4, False), 11), {"topic": "sitewatt/v1/x/cmd"}),
        ("expired", rig.cmd(BreakerSet(4, False), 12, expires_in_ms=-1000), {}),
        ("wrong_site", rig.cmd(BreakerSet(4, False), 13, site="site-t2"), {}),
        ("below_reserve", rig.cmd(PeakShave(3000), 14), {}),
        ("critical_channel", rig.cmd(BreakerSet(2, False), 15), {}),
        ("critical_channel", rig.cmd(Dormant((4, 7), True, 2.0), 16), {}),
        ("replayed", rig.cmd(BreakerSet(4, False), 16), {}),
        ("replayed", rig.cmd(BreakerSet(4, False), 3), {}),
    ]
    unknown_kid = {"bad_signature", "unknown_kid"}
    for expected, cmd, kw in cases:
        await rig.send(cmd, **kw)  # type: ignore[arg-type]
        entry = rig.audit.last()
        assert entry is not None
        assert entry.status == "rejected"
        if expected == "bad_signature":
            assert entry.reason in unknown_kid, entry
        else:
            assert entry.reason == expected, (expected, entry)
    # Nothing was written to any device: counted by the simulator, and read over Modbus.
    assert rig.site.writes() == 0
    assert await rig.battery_mode() == 0
    assert await rig.channel_closed(2) and await rig.channel_closed(4)
    assert [a.status for a in rig.acks] == [AckStatus.REJECTED] * len(cases)
    assert rig.acks[4].reason == "below_reserve"
    assert rig.audit.verify().ok
    # The refused-but-authentic ones advanced the seq; a forged one never does.
    assert rig.proc.last_seq == 16


async def test_accepted_breaker_command_read_back_and_lease_lapse(rig: Rig) -> None:
    cmd = rig.cmd(BreakerSet(4, False), 1, lease_s=2)
    await rig.send(cmd)
    ack = rig.acks[-1]
    assert ack.status is AckStatus.APPLIED, ack
    assert ack.readback == {"breaker.ch4_closed": False}
    assert not await rig.channel_closed(4)
    assert rig.proc.leases.holds("breaker.4")
    # Not renewed: after 2 s (simulated) the agent closes it again by itself.
    expires = rig.proc.leases.leases["breaker.4"].expires
    assert await rig.proc.expire_leases() == []  # not yet
    await wait_for(lambda: rig.clock.now() > expires, timeout=5)
    assert await rig.proc.expire_leases() == ["breaker.4"]
    assert await rig.channel_closed(4)
    last = rig.audit.last()
    assert last is not None and last.source == "agent" and last.reason == "lease_lapsed"
    assert rig.audit.verify().ok


async def test_aggregator_offline_restores_safe_default(tmp_path: Path) -> None:
    async for rig in make_rig(tmp_path, soc=90.0):
        await rig.send(rig.cmd(PeakShave(2000), 1, lease_s=600))
        assert rig.acks[-1].status is AckStatus.APPLIED, rig.acks[-1]
        assert await rig.battery_mode() == 2
        await rig.send(rig.cmd(Dormant((4, 5), True, 2.0), 2, lease_s=600))
        assert rig.acks[-1].status is AckStatus.APPLIED, rig.acks[-1]
        assert not await rig.channel_closed(4)
        restored = await rig.proc.aggregator_offline()
        assert restored == ["battery", "dormant"]
        assert await rig.battery_mode() == 0
        assert await rig.channel_closed(4) and await rig.channel_closed(5)
        assert rig.proc.leases.held() == [] and rig.proc.hold is None


async def test_state_survives_restart(tmp_path: Path) -> None:
    async for rig in make_rig(tmp_path, soc=90.0):
        await rig.send(rig.cmd(BatteryAuto(), 41))
        again = CommandProcessor(
            rig.proc.config,
            rig.proc.devices,
            rig.poller,
            AuditLog(tmp_path / "agent.db"),
            rig.clock,
            keyring=rig.proc.keyring,
            topic=TOPIC,
        )
        assert again.last_seq == 41
        await again.handle(
            TOPIC,
            envelope.Signer(AGG_PRIVATE).seal_bytes(
                messages.encode(rig.cmd(BatteryAuto(), 41)), TOPIC
            ),
        )
        last = again.audit.last()
        assert last is not None and last.reason == "replayed"
        again.audit.close()


async def test_discharge_stops_at_reserve(tmp_path: Path) -> None:
    """A peak shave in force; SOC falls through the reserve on a fast clock; the agent stops it."""
    async for rig in make_rig(tmp_path, soc=37.6, speed=400.0):
        view = rig.proc.view()
        from agent.interlocks import reserve_of

        reserve = reserve_of(view, rig.proc.facts)
        assert reserve is not None and 36.0 < reserve < 37.5, reserve
        await rig.send(rig.cmd(PeakShave(6000), 1, lease_s=3600))
        assert rig.acks[-1].status is AckStatus.APPLIED, rig.acks[-1]
        stopped_at: list[float] = []
        while not stopped_at:
            await rig.refresh()
            if await rig.proc.enforce():
                stopped_at.append(rig.proc.view().soc or -1)
            assert rig.clock.now() - START < 4 * 3600, "SOC never reached the reserve"
        assert await rig.battery_mode() == 0
        soc_now = rig.site.runtime.model.battery.soc
        assert soc_now >= reserve - 1.0, (soc_now, reserve)
        last = rig.audit.last()
        assert last is not None and last.reason == "reserve_reached" and last.status == "applied"
        assert not rig.proc.leases.holds("battery") and not rig.proc.discharging


def test_only_a_read_begun_after_the_settle_time_fails_a_write() -> None:
    """A fleet's busy simulator answered reads begun before the breaker's settle deadline after
    it, showing the channel as it was: those must lead to one more read, not a failure."""
    deadline = 110.0
    assert not readback_final(began=100.0, deadline=deadline)
    assert not readback_final(began=109.9, deadline=deadline)  # even if it returns at 125
    assert readback_final(began=110.0, deadline=deadline)
    assert readback_final(began=111.0, deadline=deadline)
