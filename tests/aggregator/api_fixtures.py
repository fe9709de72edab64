"""A real SQLite storage filled with a small fleet, tokens of every role, and an app around it.

Shared by the API tests (imported explicitly, not through conftest, so it stays this area's own).
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from uuid import uuid4

import httpx
from fastapi import FastAPI

from aggregator.alarms import AlarmConfig
from aggregator.api import ApiContext, create_app
from aggregator.auth import generate_token, hash_token
from aggregator.commands import Commands
from aggregator.metrics import AggregatorMetrics
from aggregator.sites import SiteRegistry
from aggregator.storage import (
    SiteInfo,
    SiteState,
    SqliteStorage,
    VerifiedBatch,
    open_storage,
)
from protocols import messages
from protocols.clock import ManualClock
from protocols.envelope import Signer, unseal
from protocols.keys import generate_key, kid_hex, public_key_hex
from protocols.messages import AckStatus
from protocols.types import Quality, Reading
from tests.support.aggregator_data import add_applied_peak_shave, add_role_tokens

T0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC, ms
MIN = 60_000
HOUR = 60 * MIN
NOW = T0 + 2 * HOUR


class LoopbackAgent:
    """The far end of `aggregator.commands.Commands`: instead of MQTT, `publish` hands the
    sealed command here; it is verified with the aggregator's public key like an agent would,
    and (when `ack` is set) acknowledged from another thread after `delay_s`, through the same
    `handle_ack` ingest calls. The MQTT leg itself is tested with real agents elsewhere.
    """

    def __init__(self, signer: Signer, clock: ManualClock, *, delay_s: float = 0.02) -> None:
        self.keyring = {signer.kid: signer.public_key}
        self.clock = clock
        self.delay_s = delay_s
        self.ack: AckStatus | None = None
        self.commands: Commands | None = None
        self.received: list[messages.Command] = []
        self._timers: list[threading.Timer] = []

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        msg = messages.decode(unseal(payload, topic, self.keyring).payload)
        assert isinstance(msg, messages.Command) and qos == 1 and not retain
        self.received.append(msg)
        if self.ack is not None:
            timer = threading.Timer(self.delay_s, self._answer, (msg, self.ack))
            self._timers.append(timer)
            timer.start()

    def _answer(self, cmd: messages.Command, status: AckStatus) -> None:
        assert self.commands is not None
        now = int(self.clock.now() * 1000)
        reason = "" if status is AckStatus.APPLIED else "interlock"
        ack = messages.Ack(cmd.id, cmd.site, cmd.seq, status, now, reason, {"bat.mode": 0})
        self.commands.handle_ack(ack, now + 40)

    def close(self) -> None:
        for timer in self._timers:
            timer.cancel()
            timer.join()


@dataclass
class Fleet:
    storage: SqliteStorage
    clock: ManualClock
    metrics: AggregatorMetrics
    agent: LoopbackAgent
    commands: Commands
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
    add_applied_peak_shave(
        storage,
        command_id=str(uuid4()),
        site="s1",
        limit_w=2000.0,
        issued_ms=NOW - 10 * MIN,
        lease_s=1800,
        rtt_ms=35,
    )
    return kid_hex(spare)


def make_fleet(db: Path) -> Fleet:
    storage = open_storage(db)
    spare = fill(storage)
    clock = ManualClock(NOW / 1000)
    tokens = add_role_tokens(storage, T0, suffix="-token")
    tokens["revoked"] = generate_token()
    revoked = storage.add_token("gone", "admin", hash_token(tokens["revoked"]), T0)
    storage.revoke_token(revoked.id, T0 + 1)
    metrics = AggregatorMetrics()
    signer = Signer(generate_key())
    agent = LoopbackAgent(signer, clock)
    commands = Commands(storage, signer, agent, clock=clock, metrics=metrics)
    agent.commands = commands
    registry = SiteRegistry(storage, clock)
    ctx = ApiContext(
        storage=storage, clock=clock, metrics=metrics, commands=commands, registry=registry
    )
    app = create_app(ctx)
    return Fleet(storage, clock, metrics, agent, commands, ctx, app, tokens, spare, AlarmConfig())


def close_fleet(f: Fleet) -> None:
    f.agent.close()
    f.storage.close()


async def client_for(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sitewatt.test") as c:
        yield c


def bearer(token: str | None) -> dict[str, str]:
    return {} if token is None else {"Authorization": f"Bearer {token}"}
