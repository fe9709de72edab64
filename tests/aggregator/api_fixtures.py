"""A real SQLite storage filled with a small fleet, tokens of every role, and an app around it.

Shared by the API tests (imported explicitly, not through conftest, so it stays this area's own).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
from fastapi import FastAPI

from aggregator.alarms import AlarmConfig
from aggregator.api import ApiContext, create_app
from aggregator.auth import Role, generate_token, hash_token
from aggregator.errors import AckTimeoutError, UnknownSiteError
from aggregator.metrics import AggregatorMetrics
from aggregator.storage import (
    CommandRecord,
    CommandStatus,
    SiteInfo,
    SiteState,
    SqliteStorage,
    VerifiedBatch,
    open_storage,
)
from protocols.clock import ManualClock
from protocols.keys import generate_key, kid_hex, public_key_hex
from protocols.types import Quality, Reading

T0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC, ms
MIN = 60_000
HOUR = 60 * MIN
NOW = T0 + 2 * HOUR


class StorageCommandSender:
    """Records commands in the real storage and answers them as an agent would.

    Stands in for aggregator.commands (the MQTT publisher), whose round trip is tested with
    real agents elsewhere; here only the API's side of the contract matters.
    """

    def __init__(self, storage: SqliteStorage, clock: ManualClock, *, ack: str | None) -> None:
        self.storage = storage
        self.clock = clock
        self.ack = ack
        self.sent: list[CommandRecord] = []

    async def send_command(
        self, site: str, action: str, params: dict[str, Any], lease_s: float, issued_by: str
    ) -> CommandRecord:
        try:
            self.storage.get_site(site)
        except UnknownSiteError:
            raise
        now = int(self.clock.now() * 1000)
        record = self.storage.new_command(
            command_id=str(uuid4()),
            site=site,
            action=action,
            params=params,
            issued_ms=now,
            expires_ms=now + 60_000,
            lease_s=lease_s,
            issued_by=issued_by,
        )
        self.storage.mark_command_sent(record.id, now)
        self.sent.append(record)
        stored = self.storage.command(record.id)
        assert stored is not None
        return stored

    def wait_ack(self, command_id: str, timeout: float) -> Awaitable[CommandRecord]:
        async def wait() -> CommandRecord:
            if self.ack is None:
                raise AckTimeoutError(f"no ack for {command_id} within {timeout} s")
            now = int(self.clock.now() * 1000)
            done = self.storage.record_ack(
                command_id,
                status=self.ack,
                ack_ms=now + 40,
                readback={"bat.mode": 0},
                rtt_ms=40.0,
            )
            assert done is not None
            return done

        return wait()


@dataclass
class Fleet:
    storage: SqliteStorage
    clock: ManualClock
    metrics: AggregatorMetrics
    sender: StorageCommandSender
    ctx: ApiContext
    app: FastAPI
    tokens: dict[str, str]  # role name (and "revoked") -> token
    s1_spare_kid: str  # a second key of s1, for revocation tests
    alarm_config: AlarmConfig


def _batch(site: str, seq: int, readings: list[Reading], *, hist: bool = False) -> VerifiedBatch:
    last = max(r.t for r in readings)
    return VerifiedBatch(site, seq, "boot-1", last, last + 50, hist, readings)


def s1_readings() -> list[VerifiedBatch]:
    """Two hours of s1 at one-minute polls: 4 kW load, grid import, SOC falling, warm room."""
    batches = []
    for i in range(120):
        t = T0 + i * MIN
        rs = [
            Reading(t, "meter", "mains_present", True),
            Reading(t, "meter", "import_power", 3000.0 + i),
            Reading(t, "rect", "load_current", 80.0),
            Reading(t, "rect", "dc_voltage", 53.5),
            Reading(t, "bat", "soc", 90.0 - i * 0.1),
            Reading(t, "ac", "room_temp", 26.0 + (i % 10) * 0.1),
        ]
        # The breaker stops answering for the last ten polls.
        q = Quality.COMM_ERROR if i >= 110 else Quality.GOOD
        rs.append(Reading(t, "brk", "ch1_current", None if i >= 110 else 12.5, q))
        batches.append(_batch("s1", i + 1, rs))
    return batches


def fill(storage: SqliteStorage) -> str:
    """Enrol s1 (online), s2 (offline), store readings, alarms and commands. Returns the kid
    of s1's spare key."""
    for site, name in (("s1", "Hilltop"), ("s2", "Riverside")):
        storage.add_site(SiteInfo(site, name, "west", "Asia/Shanghai", "sichuan", T0))
        key = generate_key()
        storage.add_key(site, public_key_hex(key), kid_hex(key), T0)
    spare = generate_key()
    storage.add_key("s1", public_key_hex(spare), kid_hex(spare), T0 + 1)
    result = storage.store_batches(s1_readings())
    assert len(result.stored) == 120
    storage.store_batches(
        [_batch("s2", 1, [Reading(T0, "meter", "import_power", 1500.0)], hist=False)]
    )
    devices = {"meter": "meter", "rect": "rect", "bat": "lfp", "ac": "ac", "brk": "breaker"}
    storage.put_site_state(SiteState("s1", True, "boot-1", "0.1.0", devices, NOW - 1000, T0, None))
    storage.put_site_state(
        SiteState("s2", False, "boot-9", "0.1.0", {"meter": "meter"}, T0, T0, T0 + 5)
    )
    storage.add_alarm("s1", "comm_loss", "major", "breaker silent", NOW - 5 * MIN, device="brk")
    old = storage.add_alarm("s1", "mains_failure", "major", "mains", T0 + MIN, device="meter")
    storage.clear_alarm(old.id, T0 + 3 * MIN)
    storage.add_alarm("s2", "site_offline", "critical", "death", T0 + 5)
    cmd = storage.new_command(
        command_id=str(uuid4()),
        site="s1",
        action="battery.peak_shave",
        params={"discharge_limit_w": 2000.0},
        issued_ms=NOW - 10 * MIN,
        expires_ms=NOW - 9 * MIN,
        lease_s=1800,
        issued_by="planner",
    )
    storage.mark_command_sent(cmd.id, NOW - 10 * MIN)
    storage.record_ack(
        cmd.id,
        status=CommandStatus.APPLIED.value,
        ack_ms=NOW - 10 * MIN + 35,
        readback={"bat.mode": 2, "bat.discharge_power_limit_w": 2000.0},
        rtt_ms=35.0,
    )
    return kid_hex(spare)


def make_fleet(db: Path, *, ack: str | None = CommandStatus.APPLIED.value) -> Fleet:
    storage = open_storage(db)
    spare = fill(storage)
    clock = ManualClock(NOW / 1000)
    tokens: dict[str, str] = {}
    for role in Role:
        tokens[role.value] = generate_token()
        storage.add_token(f"{role.value}-token", role.value, hash_token(tokens[role.value]), T0)
    tokens["revoked"] = generate_token()
    revoked = storage.add_token("gone", "admin", hash_token(tokens["revoked"]), T0)
    storage.revoke_token(revoked.id, T0 + 1)
    metrics = AggregatorMetrics()
    sender = StorageCommandSender(storage, clock, ack=ack)
    ctx = ApiContext(storage=storage, clock=clock, metrics=metrics, commands=sender)
    return Fleet(
        storage, clock, metrics, sender, ctx, create_app(ctx), tokens, spare, AlarmConfig()
    )


async def client_for(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sitewatt.test") as c:
        yield c


def bearer(token: str | None) -> dict[str, str]:
    return {} if token is None else {"Authorization": f"Bearer {token}"}
