"""Safety review of the command path: each test pins a finding (a fix or a decision) against
the simulated site or as a pure table."""

from __future__ import annotations

import sqlite3
import time
import uuid
from pathlib import Path

import pytest

from agent.audit import AuditLog
from agent.commands import MAX_CLOCK_SKEW_MS, CommandProcessor, admit
from agent.interlocks import SiteView, check, reserve_of, watch
from agent.leases import effect, safe_default
from protocols.clock import Clock
from protocols.messages import (
    AckStatus,
    AcSetpoint,
    BatteryAuto,
    BreakerSet,
    Command,
    Dormant,
    PeakShave,
    RectifierEco,
    Wake,
)
from simulators.modbus.faults import Fault, FaultKind
from simulators.spec import RectifierSpec
from tests.agent.devices_support import wait_for
from tests.agent.test_commands import make_rig
from tests.agent.test_interlocks import FACTS, VIEW, with_

NOW_MS = 1_700_000_000_000


async def clock_past(clock: Clock, t: float, timeout: float = 10.0) -> None:
    """Until the (fast) clock reads later than `t`."""
    await wait_for(lambda: clock.now() > t, timeout=timeout)


# -- a transient gap in the SOC during a discharge ---------------------------------------------


def test_an_aged_soc_raises_the_reserve_by_what_the_load_could_have_drawn() -> None:
    fresh = reserve_of(VIEW, FACTS)
    aged = reserve_of(with_(soc_age_s=600.0), FACTS)
    assert fresh is not None and aged is not None
    # 10 minutes of 4 kW through 0.95 from 19.2 kWh: 3.65 points more.
    assert aged - fresh == pytest.approx(100 * 4000 * (600 / 3600) / 0.95 / 19_200)
    view: SiteView = with_(soc=78.0)
    assert watch(view, FACTS, discharging=True, dormant=None) == []
    stop = watch(with_(soc=78.0, soc_age_s=600.0), FACTS, discharging=True, dormant=None)
    assert [f.reason for f in stop] == ["reserve_reached"]


async def test_one_lost_battery_poll_does_not_stop_a_discharge_a_silent_battery_does(
    tmp_path: Path,
) -> None:
    """One failed poll leaves the last good SOC usable for the interlocks' maximum age (three
    poll intervals); beyond that the SOC is unknown and the agent stops the discharge."""
    async for rig in make_rig(tmp_path, soc=90.0):
        await rig.send(rig.cmd(PeakShave(3000), 1, lease_s=3600))
        assert rig.acks[-1].status is AckStatus.APPLIED, rig.acks[-1]
        assert await rig.battery_mode() == 2
        good_at = rig.clock.now()
        # The battery answers every request with an exception (reads and writes alike).
        rig.site.faults.add(
            "battery", Fault(FaultKind.EXCEPTION, time.monotonic(), time.monotonic() + 600)
        )
        await rig.refresh()
        soc = rig.poller.latest.get("battery", "soc")
        assert soc is not None and soc.value is None  # the poll did fail
        view = rig.proc.view()
        assert view.soc is not None and view.soc_age_s > 0
        assert await rig.proc.enforce() == []  # one lost poll: the discharge goes on
        # Silent for longer than the maximum age: SOC unknown, the agent tries to stop it.
        max_age_s = rig.proc.max_age_ms / 1000
        await clock_past(rig.clock, good_at + max_age_s + 1)
        await rig.refresh()
        assert rig.proc.view().soc is None
        assert await rig.proc.enforce() == ["soc_unknown"]
        last = rig.audit.last()
        assert last is not None and last.reason.startswith("write") and last.status == "failed"
        assert rig.proc.discharging  # not stopped: the battery refused the write
        # It answers again: the SOC is known and above the reserve, the discharge may go on.
        rig.site.faults.clear("battery")
        await rig.refresh()
        assert await rig.proc.enforce() == []
        assert await rig.battery_mode() == 2
        assert rig.audit.verify().ok


# -- wake restores the site's own rectifier ECO setting ---------------------------------------


@pytest.mark.parametrize("eco_default", [True, False])
async def test_wake_and_lease_lapse_restore_the_sites_own_eco_setting(
    tmp_path: Path, eco_default: bool
) -> None:
    spec = {"rectifier": RectifierSpec(eco_enable=eco_default)}
    il = {"rectifier_eco_default": eco_default}
    async for rig in make_rig(tmp_path, soc=90.0, spec_kw=spec, interlocks=il):
        assert await rig.read_point("rectifier", "eco_enable") == eco_default
        await rig.send(rig.cmd(Dormant((4,), True, 2.0), 1))
        assert rig.acks[-1].status is AckStatus.APPLIED, rig.acks[-1]
        assert await rig.read_point("rectifier", "eco_enable") == 1
        await rig.send(rig.cmd(Wake(), 2))
        assert rig.acks[-1].status is AckStatus.APPLIED, rig.acks[-1]
        assert rig.acks[-1].readback["rectifier.eco_enable"] == eco_default
        assert await rig.read_point("rectifier", "eco_enable") == eco_default
        # Away from the default, ECO holds a lease; its lapse brings the default back.
        await rig.send(rig.cmd(RectifierEco(not eco_default), 3, lease_s=2))
        assert rig.proc.leases.holds("rectifier")
        assert await rig.read_point("rectifier", "eco_enable") == (not eco_default)
        await clock_past(rig.clock, rig.proc.leases.leases["rectifier"].expires)
        assert await rig.proc.expire_leases() == ["rectifier"]
        assert await rig.read_point("rectifier", "eco_enable") == eco_default
        # The default itself holds no lease.
        await rig.send(rig.cmd(RectifierEco(eco_default), 4))
        assert rig.acks[-1].status is AckStatus.APPLIED and not rig.proc.leases.holds("rectifier")


def test_eco_lease_follows_the_configured_default() -> None:
    on = RectifierEco(True)
    off = RectifierEco(False)
    assert effect(off, ac_default_c=25.0, eco_default=True) == (("rectifier",), ())
    assert effect(on, ac_default_c=25.0, eco_default=True) == ((), ("rectifier",))
    assert safe_default("rectifier", ac_default_c=25.0, eco_default=True) == RectifierEco(True)
    assert safe_default("rectifier", ac_default_c=25.0) == RectifierEco(False)


# -- a command that fails half-way still takes its lease and hold ------------------------------


async def test_half_applied_dormant_is_undone_when_its_lease_lapses(tmp_path: Path) -> None:
    """Channel 4 opens, then the rectifier refuses the ECO write: the command failed, but the
    channel is open — the agent must still own it (lease + dormant hold) and close it later."""
    async for rig in make_rig(tmp_path, soc=90.0):
        rig.site.faults.add(
            "rectifier", Fault(FaultKind.EXCEPTION, time.monotonic(), time.monotonic() + 600)
        )
        await rig.send(rig.cmd(Dormant((4,), True, 2.0), 1, lease_s=5))
        ack = rig.acks[-1]
        assert ack.status is AckStatus.FAILED and ack.reason.startswith("write"), ack
        assert ack.readback == {"breaker.ch4_closed": False}  # what did happen, reported
        assert not await rig.channel_closed(4)
        assert rig.proc.hold is not None and rig.proc.hold.channels == (4,)
        assert rig.proc.leases.holds("dormant")
        rig.site.faults.clear("rectifier")
        await clock_past(rig.clock, rig.proc.leases.leases["dormant"].expires)
        await rig.refresh()
        assert await rig.proc.expire_leases() == ["dormant"]
        assert await rig.channel_closed(4)
        assert rig.proc.hold is None and not rig.proc.leases.held()


# -- admission: a sane clock ---------------------------------------------------------------------


def _command(issued: int, expires: int, seq: int = 5) -> Command:
    return Command(str(uuid.uuid4()), "s1", seq, issued, expires, 60, BatteryAuto())


@pytest.mark.parametrize(
    ("issued", "expires", "reason"),
    [
        (NOW_MS - 1_000, NOW_MS + 59_000, None),
        (NOW_MS + 60_000, NOW_MS + 120_000, None),  # a clock a minute apart: fine
        (NOW_MS + MAX_CLOCK_SKEW_MS + 1, NOW_MS + 10 * 60_000, "clock_skew"),
        (NOW_MS - 120_000, NOW_MS - 60_000, "expired"),
    ],
)
def test_admission_refuses_commands_from_a_clock_far_ahead(
    issued: int, expires: int, reason: str | None
) -> None:
    assert admit(_command(issued, expires), site="s1", now=NOW_MS, last_seq=4) == reason
    # The agent's clock at 0 (1970): the same valid command is refused.
    if reason is None:
        assert admit(_command(issued, expires), site="s1", now=0, last_seq=4) == "clock_skew"


# -- every verified command is acked, even when our own code fails ------------------------------


async def test_an_internal_error_fails_the_command_with_an_ack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async for rig in make_rig(tmp_path, soc=90.0):

        async def broken(w: object) -> None:
            raise RuntimeError("a bug in the write path")

        monkeypatch.setattr(rig.proc, "write_and_verify", broken)
        cmd = rig.cmd(BreakerSet(4, False), 7, lease_s=5)
        await rig.send(cmd)
        ack = rig.acks[-1]
        assert ack.id == cmd.id and ack.status is AckStatus.FAILED, ack
        assert ack.reason.startswith("internal: RuntimeError"), ack
        last = rig.audit.last()
        assert last is not None and last.status == "failed" and last.seq == 7
        assert rig.proc.last_seq == 7  # never runs again
        # It may have written something: the lease is held, its lapse restores the default.
        assert rig.proc.leases.holds("breaker.4")


# -- the audit chain is verified at start, and a break is written down ---------------------------


async def test_a_cut_audit_tail_is_recorded_at_start(tmp_path: Path) -> None:
    async for rig in make_rig(tmp_path, soc=90.0):
        await rig.send(rig.cmd(BatteryAuto(), 1))
        await rig.send(rig.cmd(BatteryAuto(), 2))
        assert rig.proc.audit_check.ok and rig.audit.verify().entries == 2
        with sqlite3.connect(tmp_path / "agent.db") as db:  # someone removes the last entry
            db.execute("DELETE FROM audit WHERE n = 2")
        again = CommandProcessor(
            rig.proc.config,
            rig.proc.devices,
            rig.poller,
            AuditLog(tmp_path / "agent.db"),
            rig.clock,
            keyring=rig.proc.keyring,
            topic=rig.proc.topic,
        )
        try:
            assert not again.audit_check.ok and "ends at row 1" in again.audit_check.problem
            last = again.audit.last()
            assert last is not None and last.reason == "audit_broken" and last.n == 2
            assert last.readback is not None and "ends at row 1" in last.readback["problem"]
            # The chain goes on from there, the break on record in it.
            assert again.audit.verify().ok
            assert CommandProcessor(
                rig.proc.config,
                rig.proc.devices,
                rig.poller,
                again.audit,
                rig.clock,
                keyring=rig.proc.keyring,
                topic=rig.proc.topic,
            ).audit_check.ok
        finally:
            again.audit.close()


# -- cooling is never relaxed blind ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("setpoint", "room", "reason"),
    [
        (28.0, None, "temp_unknown"),  # relaxing without seeing the room: refused
        (22.0, None, ""),  # cooling harder is always allowed
        (25.0, None, ""),  # the default itself
        (28.0, 36.0, "room_hot"),
        (28.0, 30.0, ""),
    ],
)
def test_ac_setpoint_is_not_relaxed_without_a_room_temperature(
    setpoint: float, room: float | None, reason: str
) -> None:
    verdict = check(AcSetpoint(setpoint), with_(room_temp_c=room), FACTS)
    assert verdict.reason == reason and verdict.allowed is (reason == "")
