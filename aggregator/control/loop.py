"""The control loop's shell: gathers the fleet's state, runs the pure core, sends commands.

Every `control.interval_s` of the aggregator's clock (simulated time on a SimClock):

1. read the sites, their presence and latest readings from storage, the policies (files plus
   the operator's API overrides), the tariffs and the demand-response events;
2. look up the ack status of every command the core is waiting on;
3. `core.plan_round(...)` → intents (changes, renewals, retries) and alarm changes;
4. send each intent through the commands module (`send_command(site, action, params, lease_s,
   issued_by)`), binding the command id to the core's memory, or counting a failure;
5. raise or clear `control_not_followed` alarms.

Storage calls run in a worker thread. Only one loop runs per aggregator (a second `run()` on
the same object raises), and across processes sharing one database a lease in the meta table
(`control.leader`) keeps a second aggregator's loop idle while the first one renews it.
On start the memory is rebuilt from the command log, so a restart neither forgets a lease it
must renew nor re-sends what is already in force.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import uuid
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from aggregator.control.core import (
    APPLIED,
    BATTERY_KEY,
    DORMANT_KEY,
    SENT,
    Ack,
    AlarmIntent,
    FleetMemory,
    KeyMemory,
    Round,
    SiteMemory,
    Tracked,
    bind_sent,
    mark_send_failed,
    plan_round,
)
from aggregator.control.events import DrStore
from aggregator.control.inputs import SiteInputs, measure
from aggregator.control.policies import (
    OVERRIDES_META_KEY,
    PolicyBook,
    SitePolicy,
    load_layers,
    load_overrides,
)
from aggregator.control.settings import ControlSettings, settings_from_config
from aggregator.errors import AggregatorError, ConfigError, StorageError
from aggregator.storage.base import Storage
from aggregator.storage.types import CommandRecord, SiteInfo
from protocols.clock import Clock, local_hour
from protocols.control.dormant import ChannelRole, Window, resolve_window
from protocols.control.errors import ControlError
from protocols.control.tariff import Tariff, load_tariffs

log = logging.getLogger(__name__)

CONTROL_ALARM_KIND = "control_not_followed"
LEADER_META_KEY = "control.leader"
_KEY_OF_ACTION = {
    "battery.peak_shave": BATTERY_KEY,
    "battery.charge": BATTERY_KEY,
    "battery.auto": BATTERY_KEY,
    "site.dormant": DORMANT_KEY,
    "site.wake": DORMANT_KEY,
}


class CommandSender(Protocol):
    """aggregator.commands: seals, publishes and records a command (sync or async)."""

    def send_command(
        self, site: str, action: str, params: dict[str, Any], lease_s: float, issued_by: str
    ) -> CommandRecord | Awaitable[CommandRecord]: ...


class ControlServices(Protocol):
    @property
    def storage(self) -> Storage: ...

    @property
    def clock(self) -> Clock: ...


class AlarmSink(Protocol):
    def control_alarm(self, site: str, active: bool, message: str, t_ms: int) -> None: ...


class StorageAlarms:
    """Raises and clears `control_not_followed` in the alarms table, one active per site.

    The alarm monitor's rules do not evaluate this kind (it has no reading behind it); it is
    listed with the others by the alarms API and the dashboard.
    """

    def __init__(self, storage: Storage, severity: str = "major") -> None:
        self.storage = storage
        self.severity = severity

    def control_alarm(self, site: str, active: bool, message: str, t_ms: int) -> None:
        current = [a for a in self.storage.active_alarms(site) if a.kind == CONTROL_ALARM_KIND]
        if active and not current:
            self.storage.add_alarm(site, CONTROL_ALARM_KIND, self.severity, message, t_ms)
            log.warning("alarm raised: %s %s: %s", site, CONTROL_ALARM_KIND, message)
        elif not active:
            for a in current:
                self.storage.clear_alarm(a.id, max(t_ms, a.raised_ms))
                log.info("alarm cleared: %s %s", site, CONTROL_ALARM_KIND)


@dataclass
class Snapshot:
    """What one round read from storage (kept for the status API)."""

    fleet: list[SiteInputs] = field(default_factory=list)
    acks: dict[str, Ack] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)


class ControlLoop:
    """`await ControlLoop(services).run()` — the thin async shell around `core.plan_round`."""

    def __init__(
        self,
        services: Any,
        *,
        settings: ControlSettings | None = None,
        sender: CommandSender | None = None,
        alarms: AlarmSink | None = None,
        tariffs: Mapping[str, Tariff] | None = None,
        owner: str | None = None,
    ) -> None:
        self.services = services
        self.storage: Storage = services.storage
        self.clock: Clock = services.clock
        config = getattr(services, "config", None)
        self.settings = settings or (
            settings_from_config(config) if config is not None else ControlSettings()
        )
        self.sender: CommandSender | None = sender or getattr(services, "commands", None)
        self.alarms: AlarmSink = alarms or StorageAlarms(self.storage)
        self._tariffs = dict(tariffs) if tariffs is not None else None
        self.book = PolicyBook()
        self._file_layers = load_layers(self.settings.policies_dir)
        self._overrides_raw: str | None = None
        self.memory = FleetMemory()
        self.last_round: Round | None = None
        self.owner = owner or f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._windows: dict[tuple[str, int], Window] = {}
        self._restored = False
        self._running = False
        self._warned: set[str] = set()

    # ---- configuration -----------------------------------------------------------------------

    @property
    def tariffs(self) -> dict[str, Tariff]:
        if self._tariffs is None:
            d = self.settings.tariffs_dir
            self._tariffs = load_tariffs(d) if d.is_dir() else {}
        return self._tariffs

    def _refresh_policies(self) -> None:
        raw = self.storage.get_meta(OVERRIDES_META_KEY)
        if raw == self._overrides_raw and self.book.layers:
            return
        self._overrides_raw = raw
        self.book.replace_layers([*self._file_layers, *load_overrides(self.storage)])

    def policy_for(self, info: SiteInfo) -> SitePolicy:
        self._refresh_policies()
        return self.book.resolve(info)

    # ---- one round ---------------------------------------------------------------------------

    def _window(
        self, info: SiteInfo, policy: SitePolicy, latest_devices: set[str], now: float
    ) -> Window:
        """The site's dormant window: explicit, else from its last week's capacity-channel
        load (recomputed once a day), else the bounds."""
        if policy.dormant.window is not None:
            return Window.parse(policy.dormant.window)
        day = int(now // 86400)
        cached = self._windows.get((info.site, day))
        if cached is not None:
            return cached
        hourly = self._hourly_capacity_load(info, policy, latest_devices, now)
        try:
            window = resolve_window(policy.dormant, hourly)
        except ControlError:
            window = resolve_window(policy.dormant, None)
        self._windows = {k: v for k, v in self._windows.items() if k[1] == day}
        self._windows[(info.site, day)] = window
        return window

    def _hourly_capacity_load(
        self, info: SiteInfo, policy: SitePolicy, devices: set[str], now: float
    ) -> list[float] | None:
        numbers = policy.channel_numbers(ChannelRole.CAPACITY)
        if not numbers or not devices:
            return None
        t1 = int(now * 1000)
        t0 = t1 - 7 * 86_400_000
        sums = [0.0] * 24
        counts = [0] * 24
        for device in sorted(devices):
            for n in numbers:
                rows = self.storage.rollups(
                    info.site, device, f"ch{n}_power", t0, t1, 900, limit=1000
                )
                for r in rows:
                    h = int(local_hour(r.bucket_ms / 1000.0, info.tz or policy.timezone)) % 24
                    sums[h] += r.mean
                    counts[h] += 1
        if sum(counts) < 24 * 4:  # less than a day of buckets: not enough history
            return None
        return [sums[h] / counts[h] if counts[h] else float("inf") for h in range(24)]

    def _restore(self, sites: list[SiteInfo], now: float) -> None:
        """Rebuild the per-key memory from the command log (leases still running)."""
        mem = dict(self.memory.sites)
        for info in sites:
            keys: dict[str, KeyMemory] = {}
            for rec in self.storage.command_history(info.site, limit=50):
                key = _KEY_OF_ACTION.get(rec.action)
                if key is None or key in keys or rec.issued_by != self.settings.issued_by:
                    continue
                sent_at = (rec.sent_ms or rec.issued_ms) / 1000.0
                if rec.status not in (SENT, APPLIED) or sent_at + rec.lease_s <= now:
                    keys[key] = KeyMemory()
                    continue
                keys[key] = KeyMemory(
                    last=Tracked(
                        rec.action, dict(rec.params), sent_at, int(rec.lease_s), rec.id, rec.status
                    )
                )
            keys = {k: v for k, v in keys.items() if v.last is not None}
            if keys:
                mem[info.site] = replace(mem.get(info.site, SiteMemory()), keys=keys)
        self.memory = replace(self.memory, sites=mem)

    def _is_leader(self, now: float) -> bool:
        raw = self.storage.get_meta(LEADER_META_KEY)
        if raw:
            held = json.loads(raw)
            if held.get("owner") != self.owner and float(held.get("until", 0)) > now:
                if "leader" not in self._warned:
                    log.warning("control loop idle: %s holds the control lease", held["owner"])
                    self._warned.add("leader")
                return False
        until = now + 3 * self.settings.interval_s
        self.storage.set_meta(LEADER_META_KEY, json.dumps({"owner": self.owner, "until": until}))
        return True

    def release(self) -> None:
        """Give up the leader lease (on shutdown) so another aggregator may take over."""
        raw = self.storage.get_meta(LEADER_META_KEY)
        if raw and json.loads(raw).get("owner") == self.owner:
            self.storage.set_meta(LEADER_META_KEY, json.dumps({"owner": "", "until": 0}))

    def snapshot(self, now: float) -> Snapshot:
        """Read everything the core needs (sync: call from a worker thread)."""
        snap = Snapshot()
        sites = self.storage.list_sites()
        if not self._restored:
            self._restore(sites, now)
            self._restored = True
        states = {s.site: s for s in self.storage.site_states()}
        for info in sites:
            if not info.enabled:
                continue
            try:
                policy = self.policy_for(info)
            except (ConfigError, ControlError) as exc:
                snap.problems[info.site] = str(exc)
                self._warn_once(info.site, f"site {info.site} not controlled: {exc}")
                continue
            latest = self.storage.latest(info.site)
            tariff = self.tariffs.get(policy.tariff) if policy.tariff else None
            if policy.tariff and tariff is None:
                snap.problems[info.site] = f"unknown tariff {policy.tariff!r}"
                self._warn_once(info.site, f"site {info.site}: unknown tariff {policy.tariff!r}")
            devices = {d for d, p in latest if p.startswith("ch") and p.endswith("_power")}
            state = states.get(info.site)
            snap.fleet.append(
                SiteInputs(
                    site=info.site,
                    policy=policy,
                    tariff=tariff,
                    measured=measure(latest, nominal_v=policy.battery.nominal_v),
                    window=self._window(info, policy, devices, now),
                    region=info.region,
                    tz=info.tz or policy.timezone,
                    online=state.online if state is not None else False,
                )
            )
        for sm in self.memory.sites.values():
            for km in sm.keys.values():
                last = km.last
                if last is not None and last.command_id is not None and last.status == SENT:
                    rec = self.storage.command(last.command_id)
                    if rec is not None:
                        snap.acks[rec.id] = Ack(rec.status, rec.reason)
        return snap

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("%s", message)

    def groups(self) -> dict[str, frozenset[str]]:
        out: dict[str, set[str]] = {}
        for layer in self.book.layers:
            if layer.sites:
                out.setdefault(layer.name, set()).update(layer.sites)
        return {k: frozenset(v) for k, v in out.items()}

    async def tick(self) -> Round | None:
        """One round at the clock's now. None when another aggregator leads the loop."""
        now = self.clock.now()
        if not await asyncio.to_thread(self._is_leader, now):
            return None
        snap = await asyncio.to_thread(self.snapshot, now)
        events = await asyncio.to_thread(DrStore(self.storage).events)
        rnd = plan_round(
            snap.fleet, events, self.memory, snap.acks, now, self.settings, groups=self.groups()
        )
        memory = rnd.memory
        for intent in rnd.intents:
            memory = await self._send(memory, intent, now)
        self.memory = memory
        for alarm in rnd.alarms:
            await asyncio.to_thread(self._alarm, alarm, now)
        self.last_round = rnd
        return rnd

    async def _send(self, memory: FleetMemory, intent: Any, now: float) -> FleetMemory:
        if self.sender is None:
            return mark_send_failed(memory, intent, "no command sender", now, self.settings)
        try:
            # The commands module seals, records and publishes synchronously: off the loop.
            sent = await asyncio.to_thread(
                self.sender.send_command,
                intent.site,
                intent.action,
                dict(intent.params),
                intent.lease_s,
                self.settings.issued_by,
            )
            record: CommandRecord = await sent if inspect.isawaitable(sent) else sent
        except AggregatorError as exc:
            log.warning(
                "control: %s %s to %s not sent: %s", intent.why, intent.action, intent.site, exc
            )
            return mark_send_failed(memory, intent, str(exc), now, self.settings)
        log.info("control: %s %s %s (%s)", intent.site, intent.why, intent.action, intent.reason)
        sent_ms = record.sent_ms or record.issued_ms
        return bind_sent(memory, intent, record.id, sent_ms / 1000.0 if sent_ms else now)

    def _alarm(self, alarm: AlarmIntent, now: float) -> None:
        self.alarms.control_alarm(alarm.site, alarm.active, alarm.message, int(now * 1000))

    async def run(self) -> None:
        """Run rounds every `interval_s` of the clock until cancelled."""
        if self._running:
            raise RuntimeError("this control loop is running already")
        self._running = True
        try:
            while True:
                try:
                    await self.tick()
                except (StorageError, ControlError, ConfigError) as exc:
                    log.warning("control round failed, retrying next round: %s", exc)
                await self.clock.sleep(self.settings.interval_s)
        finally:
            self._running = False
            await asyncio.to_thread(self.release)


__all__ = [
    "CONTROL_ALARM_KIND",
    "AlarmSink",
    "CommandSender",
    "ControlLoop",
    "ControlServices",
    "Snapshot",
    "StorageAlarms",
]
