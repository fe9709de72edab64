"""The async shell on a real SQLite storage: rounds on a ManualClock, commands recorded as the
commands module records them, acks written back as ingest writes them, the not-followed alarm
in the alarms table, and the memory rebuilt from the command log after a restart."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from aggregator.control.loop import CONTROL_ALARM_KIND, ControlLoop
from aggregator.control.settings import ControlSettings
from aggregator.errors import CommandError
from aggregator.storage import (
    CommandRecord,
    SiteInfo,
    SiteState,
    SqliteStorage,
    VerifiedBatch,
    open_storage,
)
from protocols.clock import ManualClock
from protocols.types import Reading
from tests.control_loop.helpers import ROOT, at

POLICY = """
tariff = "shanghai-two-part"
[scope]
kind = "default"
[[channels]]
number = 4
role = "capacity"
"""


class Sender:
    """Records commands in storage like aggregator.commands (which also seals and publishes)."""

    def __init__(self, storage: SqliteStorage, clock: ManualClock) -> None:
        self.storage, self.clock = storage, clock
        self.sent: list[CommandRecord] = []
        self.down = False

    def send_command(
        self, site: str, action: str, params: dict[str, Any], lease_s: float, issued_by: str
    ) -> CommandRecord:
        if self.down:
            raise CommandError("not connected to the broker")
        now = int(self.clock.now() * 1000)
        rec = self.storage.new_command(
            command_id=str(uuid.uuid4()), site=site, action=action, params=params,
            issued_ms=now, expires_ms=now + 60_000, lease_s=lease_s, issued_by=issued_by,
        )  # fmt: skip
        self.storage.mark_command_sent(rec.id, now)
        self.sent.append(rec)
        return rec

    def ack(self, status: str, reason: str | None = None) -> None:
        rec = self.sent[-1]
        self.storage.record_ack(rec.id, status=status, ack_ms=rec.issued_ms + 50, reason=reason)


@dataclass
class Services:
    storage: SqliteStorage
    clock: ManualClock


def store(storage: SqliteStorage, seq: int, t: float, *, soc: float = 90.0) -> None:
    ms = int(t * 1000)
    rs = [
        Reading(ms, "meter", "mains_present", True),
        Reading(ms, "meter", "import_power", 2100.0),
        Reading(ms, "rect", "load_current", 40.0),
        Reading(ms, "rect", "dc_voltage", 50.0),
        Reading(ms, "bat", "soc", soc),
        Reading(ms, "bat", "soh", 100.0),
        Reading(ms, "bat", "capacity_ah", 400.0),
        Reading(ms, "bat", "current", 0.0),
        Reading(ms, "bat", "voltage", 52.0),
        Reading(ms, "ac", "room_temp", 25.0),
        Reading(ms, "brk", "ch1_closed", True),
        Reading(ms, "brk", "ch4_power", 600.0),
    ]
    storage.store_batches([VerifiedBatch("s1", seq, "b", ms, ms, False, rs)])
    storage.put_site_state(SiteState("s1", True, "b", "0", {}, ms, ms, None))


@pytest.fixture
def setup(tmp_path: Path) -> tuple[SqliteStorage, ManualClock, Sender, ControlSettings]:
    storage = open_storage(tmp_path / "agg.db")
    storage.add_site(SiteInfo("s1", "Hilltop", "east", "Asia/Shanghai", "", 0))
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "default.toml").write_text(POLICY)
    settings = ControlSettings(
        enabled=True,
        policies_dir=tmp_path / "p",
        tariffs_dir=ROOT / "config" / "tariffs",
        ack_timeout_s=60,
        max_failures=2,
    )
    clock = ManualClock(at(10))
    return storage, clock, Sender(storage, clock), settings


async def test_rounds_send_changes_and_track_acks(setup: Any) -> None:
    storage, clock, sender, settings = setup
    loop = ControlLoop(Services(storage, clock), settings=settings, sender=sender)
    store(storage, 1, clock.now() - 5)
    rnd = await loop.tick()
    assert rnd is not None and [i.action for i in rnd.intents] == ["battery.peak_shave"]
    assert sender.sent[0].issued_by == "control" and sender.sent[0].lease_s == 600
    sender.ack("applied")
    clock.advance(60)
    store(storage, 2, clock.now() - 5)
    rnd = await loop.tick()
    assert rnd is not None and rnd.intents == [] and len(sender.sent) == 1
    # Rejected twice in a row (max_failures = 2): control_not_followed in the alarms table.
    clock.advance(250)  # renewal due at 300 s
    store(storage, 3, clock.now() - 5)
    rnd = await loop.tick()
    assert rnd is not None and [i.why for i in rnd.intents] == ["renew"]
    sender.ack("rejected", "interlock: SOC at reserve")
    clock.advance(60)
    store(storage, 4, clock.now() - 5)
    await loop.tick()  # counts the failure, backs off 30 s
    clock.advance(60)
    store(storage, 5, clock.now() - 5)
    rnd = await loop.tick()
    assert rnd is not None and [i.why for i in rnd.intents] == ["retry"]
    sender.ack("rejected", "interlock: SOC at reserve")
    clock.advance(60)
    store(storage, 6, clock.now() - 5)
    await loop.tick()
    alarms = [a for a in storage.active_alarms("s1") if a.kind == CONTROL_ALARM_KIND]
    assert len(alarms) == 1 and "interlock: SOC at reserve" in alarms[0].message
    # The next retry is applied: the alarm clears.
    clock.advance(120)
    store(storage, 7, clock.now() - 5)
    await loop.tick()
    sender.ack("applied")
    clock.advance(60)
    store(storage, 8, clock.now() - 5)
    await loop.tick()
    assert [a for a in storage.active_alarms("s1") if a.kind == CONTROL_ALARM_KIND] == []
    storage.close()


async def test_send_failure_counts_and_restart_restores_the_lease(setup: Any) -> None:
    storage, clock, sender, settings = setup
    store(storage, 1, clock.now() - 5)
    sender.down = True
    loop = ControlLoop(Services(storage, clock), settings=settings, sender=sender)
    await loop.tick()
    assert loop.memory.sites["s1"].key("battery").failures == 1
    sender.down = False
    clock.advance(60)
    store(storage, 2, clock.now() - 5)
    await loop.tick()
    sender.ack("applied")
    assert [r.action for r in sender.sent] == ["battery.peak_shave"]
    # A new loop (aggregator restart) finds the running lease in the command log: no resend.
    again = ControlLoop(Services(storage, clock), settings=settings, sender=sender, owner="b")
    loop.release()
    clock.advance(60)
    store(storage, 3, clock.now() - 5)
    rnd = await again.tick()
    assert rnd is not None and rnd.intents == []


async def test_a_second_aggregator_stays_idle(setup: Any) -> None:
    storage, clock, sender, settings = setup
    store(storage, 1, clock.now() - 5)
    first = ControlLoop(Services(storage, clock), settings=settings, sender=sender, owner="a")
    second = ControlLoop(Services(storage, clock), settings=settings, sender=sender, owner="b")
    assert await first.tick() is not None
    assert await second.tick() is None
    first.release()
    assert await second.tick() is not None
