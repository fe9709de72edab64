"""Commands: verify, admit, check the interlocks, write, read back, audit, ack — and the agent's
own protective acts (lease lapse, aggregator offline, reserve reached, dormant exit).

A command from the cmd topic runs only if, in this order: the COSE signature verifies against a
pinned aggregator key (`bad_signature`, `unknown_kid`, `malformed`), the payload is a well-formed
command (`malformed`), `site` is ours (`wrong_site`), it was not issued more than five minutes
ahead of the agent's clock (`clock_skew`: one clock is wrong, and expiry would mean nothing), it
has not expired (`expired`), its `seq` is above the last accepted one (`replayed`) — that seq is
then persisted durably *before any device is touched*, so no command can ever run twice — and
the interlocks allow it (their reason codes). Then every write of the plan is encoded with the
profile's codec, written under the bus lock, read back and compared; a breaker channel is
followed on its status point until it moves. Each outcome is appended to the hash-chained audit
log and acked, signed: `applied` with the read-back, `rejected` with the reason, or `failed` with
the error (an unexpected error in our own code included: every verified command is acked).

Two locks keep writes from interleaving. The command lock serialises commands, lease restores
and dormant exits; it may be held for a while (a breaker channel is followed until it moves, up
to `BREAKER_SETTLE_S` per channel). The reserve stop must never wait behind that, so everything
that writes the *battery* (a battery command, a battery lease restore, the reserve stop) also
takes the battery lock, and the reserve stop takes only the battery lock (`enforce_battery`).
Order: command lock, then battery lock — never the other way, so they cannot deadlock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import cbor2

from agent.audit import AuditCheck, AuditEntry, AuditLog
from agent.config import SiteConfig
from agent.errors import CommandFailed, DeviceError
from agent.interlocks import (
    BATTERY_DISCHARGE,
    ChannelMap,
    DormantHold,
    Forced,
    SiteFacts,
    SiteView,
    check,
    dormant_setpoint,
    settle,
    watch,
)
from agent.leases import (
    BATTERY,
    DORMANT,
    Lease,
    LeaseBook,
    effect,
    restore_order,
    safe_default,
)
from agent.poller import Latest, Poller
from protocols import envelope, messages
from protocols.clock import Clock, now_ms
from protocols.codec import PointCodec, encode_write
from protocols.errors import CodecError, EnvelopeError, MessageError
from protocols.messages import (
    Ack,
    AckStatus,
    AcSetpoint,
    BatteryAuto,
    BreakerSet,
    Charge,
    Command,
    Dormant,
    Params,
    PeakShave,
    RectifierEco,
    Wake,
)
from protocols.points import BREAKER_CHANNELS
from protocols.profiles import PointType, Profile
from protocols.types import DeviceKind, Quality, Reading, Value

log = logging.getLogger(__name__)

AC_MODE_AUTO = 2
BREAKER_SETTLE_S = 10.0
BREAKER_POLL_S = 0.2
READBACK_MIN_WALL_S = 0.05
"""Read-backs while a breaker settles are at least this far apart in wall time: at 144x,
0.2 clock seconds were 1.4 ms, and a fleet's command round flooded the simulators with reads."""
RETRY_S = 30.0

AckPublisher = Callable[[Ack], Awaitable[None]]

BATTERY_PARAMS = (PeakShave, Charge, BatteryAuto)
"""The commands that write the battery (taken under the battery lock too)."""


# -- the plan -------------------------------------------------------------------------------------


def readback_final(began: float, deadline: float) -> bool:
    """Whether a read-back that does not show the written value fails the write.

    Only a read begun once the settle time is over may: on a slow link (or a busy simulator)
    a read begun before it can come back after it, showing the device as it was."""
    return began >= deadline


@dataclass(frozen=True, slots=True)
class Write:
    """One write of a canonical point, and how to know it took effect.

    `verify` names the point to read back (the written point itself, or a breaker channel's
    status); `expect` is the value it must show; `settle_s` how long it may take to get there.
    """

    device: str
    point: str
    value: Value
    verify: str
    expect: Value
    settle_s: float = 0.0


@dataclass(frozen=True)
class SiteDevices:
    """The site's devices by role, resolved from the config and profiles once at start."""

    profiles: Mapping[str, Profile]
    batteries: tuple[str, ...] = ()
    breakers: tuple[str, ...] = ()
    rectifiers: tuple[str, ...] = ()
    aircons: tuple[str, ...] = ()
    meters: tuple[str, ...] = ()
    channels: ChannelMap = field(default_factory=ChannelMap)

    @classmethod
    def build(cls, config: SiteConfig, profiles: Mapping[str, Profile]) -> SiteDevices:
        def having(kind: DeviceKind, point: str | None = None) -> tuple[str, ...]:
            return tuple(
                d for d in config.devices_of(kind) if point is None or point in profiles[d].by_name
            )

        breakers = having(DeviceKind.BREAKER)
        counts = [(b, profiles[b].device.channels or BREAKER_CHANNELS) for b in breakers]
        return cls(
            profiles=profiles,
            batteries=having(DeviceKind.BATTERY, "mode"),
            breakers=breakers,
            rectifiers=having(DeviceKind.RECTIFIER, "eco_enable"),
            aircons=having(DeviceKind.AIRCON, "setpoint"),
            meters=having(DeviceKind.METER),
            channels=ChannelMap.build(counts),
        )

    def facts(self, config: SiteConfig) -> SiteFacts:
        return SiteFacts.build(
            config.interlocks,
            self.channels,
            has_battery=bool(self.batteries),
            has_aircon=bool(self.aircons),
            has_rectifier=bool(self.rectifiers),
            has_mains=any("mains_present" in self.profiles[m].by_name for m in self.meters),
        )


def plan_writes(
    params: Params,
    devices: SiteDevices,
    view: SiteView,
    facts: SiteFacts,
    latest: Latest,
    *,
    hold: DormantHold | None = None,
) -> list[Write]:
    """The canonical-point writes that carry out `params` (interlocks already passed)."""
    lim = facts.limits
    out: list[Write] = []

    def put(device: str, point: str, value: Value, settle: float = 0.0) -> None:
        out.append(Write(device, point, value, point, value, settle))

    def channel(n: int, closed: bool) -> None:
        ref = devices.channels.resolve(n)
        if ref is None:
            raise CommandFailed("unknown_channel", f"no breaker channel {n}")
        dev, ch = ref
        out.append(Write(dev, f"ch{ch}_cmd", closed, f"ch{ch}_closed", closed, BREAKER_SETTLE_S))

    match params:
        case PeakShave(discharge_limit_w=limit):
            share = limit / max(1, len(devices.batteries))
            for b in devices.batteries:
                put(
                    b,
                    "discharge_power_limit_w",
                    _clamp(devices, b, "discharge_power_limit_w", share),
                )
                put(b, "mode", BATTERY_DISCHARGE)
        case Charge(charge_limit_w=limit, target_soc=target):
            share = limit / max(1, len(devices.batteries))
            for b in devices.batteries:
                put(b, "charge_power_limit_w", _clamp(devices, b, "charge_power_limit_w", share))
                put(b, "target_soc", target)
                put(b, "mode", 1)
        case BatteryAuto():
            for b in devices.batteries:
                put(b, "mode", 0)
        case Dormant(channels=chans, rectifier_eco=eco, ac_offset_c=offset):
            for n in chans:
                channel(n, False)
            if eco:
                for r in devices.rectifiers:
                    put(r, "eco_enable", 1)
            if offset > 0:
                for a in devices.aircons:
                    put(a, "setpoint", dormant_setpoint(view, facts, offset))
        case Wake():
            for n, (dev, ch) in enumerate(devices.channels.channels, start=1):
                status = latest.get(dev, f"ch{ch}_closed")
                opened_by_us = hold is not None and n in hold.channels
                if opened_by_us or status is None or status.value is not True:
                    channel(n, True)
            # The site's own ECO setting, except that ECO is never switched on during an outage
            # (then it is left as it is; the rectifier's controller leaves ECO without mains).
            if not (lim.rectifier_eco_default and view.mains_present is False):
                for r_id in devices.rectifiers:
                    put(r_id, "eco_enable", 1 if lim.rectifier_eco_default else 0)
            for a in devices.aircons:
                _ac_auto(devices, a, lim.ac_default_setpoint_c, put)
        case AcSetpoint(setpoint_c=sp):
            for a in devices.aircons:
                put(a, "setpoint", sp)
        case BreakerSet(channel=n, closed=closed):
            channel(n, closed)
        case RectifierEco(enabled=on):
            if on and view.mains_present is False:
                return out  # a restore to an ECO-on default waits for the mains (see Wake)
            for r_id in devices.rectifiers:
                put(r_id, "eco_enable", 1 if on else 0)
    return out


def _clamp(devices: SiteDevices, device: str, point: str, value: float) -> int:
    """A power limit within what the device's profile accepts ("as much as you can")."""
    p = devices.profiles[device].by_name.get(point)
    if p is not None and p.max is not None:
        value = min(value, p.max)
    if p is not None and p.min is not None:
        value = max(value, p.min)
    return round(value)


def _ac_auto(
    devices: SiteDevices, a: str, setpoint: float, put: Callable[[str, str, Value], None]
) -> None:
    """AC back to automatic: its default setpoint, auto mode and running (if it has them)."""
    points = devices.profiles[a].by_name
    put(a, "setpoint", setpoint)
    if "mode" in points and points["mode"].writable:
        put(a, "mode", AC_MODE_AUTO)
    if "on" in points and points["on"].writable:
        put(a, "on", True)


# -- the site view --------------------------------------------------------------------------------


def site_view(
    latest: Latest, devices: SiteDevices, facts: SiteFacts, *, t_ms: int, max_age_ms: int
) -> SiteView:
    """Summarise the latest good readings into what the interlocks need."""

    def good_reading(dev: str, point: str) -> Reading | None:
        return latest.good_reading(dev, point, now_ms=t_ms, max_age_ms=max_age_ms)

    def good(dev: str, point: str) -> Value:
        r = good_reading(dev, point)
        return None if r is None else r.value

    def first(devs: Iterable[str], point: str) -> float | None:
        for d in devs:
            v = good(d, point)
            if v is not None:
                return float(v)
        return None

    batteries = devices.batteries or tuple(
        d for d in devices.profiles if devices.profiles[d].device.kind is DeviceKind.BATTERY
    )
    rectifiers = tuple(
        d for d in devices.profiles if devices.profiles[d].device.kind is DeviceKind.RECTIFIER
    )
    load: float | None = None
    for r in rectifiers:
        v, i = good(r, "dc_voltage"), good(r, "load_current")
        if v is not None and i is not None:
            load = (load or 0.0) + abs(float(v)) * abs(float(i))
    # The larger of the two views: a load that reads low would lower the reserve.
    channels, _ = _channel_power(good_reading, devices, None)
    if channels is not None:
        load = channels if load is None else max(load, channels)
    mains: bool | None = None
    for m in devices.meters:
        v = good(m, "mains_present")
        if v is not None:
            mains = bool(v) if mains is None else (mains and bool(v))
    mode = first(batteries, "mode")
    soc: float | None = None
    soc_age_s = 0.0
    for b in batteries:
        reading = latest.good_reading(b, "soc", now_ms=t_ms, max_age_ms=max_age_ms)
        if reading is not None and reading.value is not None:
            soc, soc_age_s = float(reading.value), max(0.0, (t_ms - reading.t) / 1000.0)
            break
    coverage, coverage_t = (
        _channel_power(good_reading, devices, facts.coverage) if facts.coverage else (None, None)
    )
    return SiteView(
        now=t_ms / 1000.0,
        soc=soc,
        soc_age_s=soc_age_s,
        soh=first(batteries, "soh"),
        load_w=load,
        battery_mode=None if mode is None else int(mode),
        battery_current=first(batteries, "current"),
        mains_present=mains,
        room_temp_c=first(devices.aircons, "room_temp"),
        ac_setpoint_c=first(devices.aircons, "setpoint"),
        coverage_load_w=coverage,
        coverage_t_ms=coverage_t,
    )


def _channel_power(
    good: Callable[[str, str], Reading | None],
    devices: SiteDevices,
    only: frozenset[tuple[str, int]] | None,
) -> tuple[float | None, int | None]:
    """Sum of channel powers (W), or current × breaker voltage where no power point exists;
    and when the oldest reading in the sum was taken (ms)."""
    total: float | None = None
    oldest: int | None = None
    for dev, ch in devices.channels.channels:
        if only is not None and (dev, ch) not in only:
            continue
        used = [good(dev, f"ch{ch}_power")]
        if used[0] is None or used[0].value is None:
            used = [good(dev, f"ch{ch}_current"), good(dev, "voltage")]
        if any(r is None or r.value is None for r in used):
            continue
        p = 1.0
        for r in used:
            assert r is not None and r.value is not None
            p *= float(r.value)
            oldest = r.t if oldest is None else min(oldest, r.t)
        total = (total or 0.0) + p
    return total, oldest


def reading_max_age_s(config: SiteConfig) -> float:
    """How old the last good reading of a point may be for the interlocks (clock seconds).

    One lost poll must not blind them: the reading missed (one interval), the poller's backoff
    before its retry (`backoff_factor` × the interval, capped), and one interval more for jitter
    and a loaded event loop — in the agent's clock, like the poll intervals, so it scales with a
    fast SimClock. At least 15 s. Beyond it the reserve stop calls the SOC unknown and a dormant
    site wakes (`inputs_unknown`).
    """
    pol = config.polling
    ages = [
        2 * d.poll_interval_s + min(pol.backoff_max_s, pol.backoff_factor * d.poll_interval_s)
        for d in config.devices.values()
        if d.enabled
    ]
    return max([15.0, *ages])


# -- admission ------------------------------------------------------------------------------------


MAX_CLOCK_SKEW_MS = 300_000
"""How far ahead of the agent's clock a command's `issued` may be. Beyond it one of the two
clocks is wrong; if it is the agent's (a gateway that booted without its RTC and before NTP, in
1970), `expires` means nothing to it, so a delayed command could run any time: refuse."""


def admit(cmd: Command, *, site: str, now: int, last_seq: int) -> str | None:
    """The reason to refuse a verified command before the interlocks, or None."""
    if cmd.site != site:
        return "wrong_site"
    if cmd.issued > now + MAX_CLOCK_SKEW_MS:
        return "clock_skew"
    if cmd.expires <= now:
        return "expired"
    if cmd.seq <= last_seq:
        return "replayed"
    return None


@dataclass
class CommandCounters:
    received: int = 0
    applied: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    failed: int = 0
    forced: dict[str, int] = field(default_factory=dict)

    def reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one command (also what its ack says)."""

    status: AckStatus
    reason: str = ""
    readback: Mapping[str, Value] = field(default_factory=dict)
    touched: bool = False
    """Whether any write may have reached a device (also for a failed command)."""


class CommandProcessor:
    """Runs commands and the agent's own protective acts against the site's devices."""

    def __init__(
        self,
        config: SiteConfig,
        devices: SiteDevices,
        poller: Poller,
        audit: AuditLog,
        clock: Clock,
        *,
        keyring: Mapping[bytes, Any],
        topic: str,
        publish_ack: AckPublisher | None = None,
    ) -> None:
        self.config = config
        self.devices = devices
        self.facts = devices.facts(config)
        self.poller = poller
        self.audit = audit
        self.clock = clock
        self.keyring = keyring
        self.topic = topic
        self.publish_ack = publish_ack
        self.counters = CommandCounters()
        self._lock = asyncio.Lock()
        self._battery_lock = asyncio.Lock()
        self.last_seq: int = int(audit.get_state("last_seq", 0))
        self.leases = LeaseBook({x["key"]: Lease(**x) for x in audit.get_state("leases", [])})
        hold = audit.get_state("dormant")
        self.hold: DormantHold | None = (
            None
            if hold is None
            else DormantHold(
                hold["until_ms"],
                hold["coverage_at_entry_w"],
                tuple(hold["channels"]),
                settle_until_ms=hold.get("settle_until_ms"),
            )
        )
        self.discharging: bool = bool(audit.get_state("discharging", False))
        self.max_age_ms = int(reading_max_age_s(config) * 1000)
        self._started = clock.now()
        self._retry_at: dict[str, float] = {}
        self.audit_check = self._check_audit()

    def _check_audit(self) -> AuditCheck:
        """Verify the audit chain at start; a break is itself recorded in the chain.

        Commands keep running (the safety acts must, and refusing would only make the site
        uncontrollable), but the break is logged and written down: the next append would
        otherwise hide a cut tail, whose only trace is the recorded head it replaces.
        """
        result = self.audit.verify()
        if not result.ok:
            log.error(
                "%s: audit log broken at row %s: %s",
                self.config.site_id,
                result.bad_n,
                result.problem,
            )
            self.audit.append(
                AuditEntry(
                    t=now_ms(self.clock),
                    source="agent",
                    command_id="agent:audit_broken",
                    seq=None,
                    action="audit.verify",
                    params={},
                    status=AckStatus.FAILED.value,
                    reason="audit_broken",
                    readback={
                        "problem": result.problem,
                        "bad_n": result.bad_n,
                        "entries": result.entries,
                    },
                )
            )
        return result

    # -- incoming -----------------------------------------------------------------------------

    async def handle(self, topic: str, payload: bytes) -> Outcome:
        """Handle one message of the cmd topic (the delivery task's command handler)."""
        self.counters.received += 1
        async with self._lock:
            try:
                opened = envelope.unseal(payload, topic, self.keyring)
            except EnvelopeError as exc:
                return await self._refuse_unverified(payload, exc.reason, str(exc))
            try:
                msg = messages.decode(opened.payload)
            except MessageError as exc:
                return await self._refuse_unverified(payload, "malformed", str(exc))
            if not isinstance(msg, Command):
                return await self._refuse_unverified(payload, "malformed", "not a command")
            return await self._run(msg)

    async def _refuse_unverified(self, payload: bytes, reason: str, detail: str) -> Outcome:
        """Log and audit a message we cannot trust; ack it if it names a command of ours."""
        self.counters.reject(reason)
        log.warning("%s: refused a command message: %s", self.config.site_id, detail)
        cmd_id, seq, action = "?", None, "?"
        claimed = _claimed_command(payload)
        if claimed is not None:
            cmd_id, seq, action = claimed
        await self.audit.append_async(
            AuditEntry(
                t=now_ms(self.clock),
                source="unverified",
                command_id=cmd_id,
                seq=seq,
                action=action,
                params={},
                status=AckStatus.REJECTED.value,
                reason=reason,
                readback={"detail": detail[:200]},
            )
        )
        outcome = Outcome(AckStatus.REJECTED, reason)
        if claimed is not None and seq is not None:
            await self._ack(cmd_id, seq, outcome)
        return outcome

    async def _run(self, cmd: Command) -> Outcome:
        now = now_ms(self.clock)
        reason = admit(cmd, site=self.config.site_id, now=now, last_seq=self.last_seq)
        if reason is not None:
            return await self._finish(cmd, Outcome(AckStatus.REJECTED, reason), advance=False)
        # Durable before any write: this command can never run again, whatever happens next.
        self.last_seq = cmd.seq
        await self.audit.set_state_async({"last_seq": cmd.seq})
        if isinstance(cmd.params, BATTERY_PARAMS):
            async with self._battery_lock:  # checked and written with no reserve stop between
                return await self._check_and_apply(cmd)
        return await self._check_and_apply(cmd)

    async def _check_and_apply(self, cmd: Command) -> Outcome:
        try:
            view = self.view()
            verdict = check(cmd.params, view, self.facts)
        except Exception as exc:  # a bug of ours: the command fails, and is still acked
            log.exception("%s: command %s: internal error", self.config.site_id, cmd.id)
            return await self._finish(cmd, Outcome(AckStatus.FAILED, _internal(exc)))
        if not verdict.allowed:
            log.info("%s: command %s refused: %s", self.config.site_id, cmd.id, verdict.detail)
            return await self._finish(cmd, Outcome(AckStatus.REJECTED, verdict.reason))
        outcome = await self._apply(cmd.params, view)
        if outcome.status is AckStatus.APPLIED or (outcome.touched and self._holds(cmd.params)):
            # A command that failed half-way (a channel opened, then a write refused) leaves
            # the site partly in its state: it takes its lease and hold all the same, so that
            # the lapse, the aggregator going offline or a dormant exit undo what was done.
            await self._after_applied(cmd.params, view, cmd.id, cmd.seq, cmd.lease_s)
        return await self._finish(cmd, outcome)

    async def _finish(self, cmd: Command, outcome: Outcome, *, advance: bool = True) -> Outcome:
        if outcome.status is AckStatus.APPLIED:
            self.counters.applied += 1
        elif outcome.status is AckStatus.FAILED:
            self.counters.failed += 1
        else:
            self.counters.reject(outcome.reason)
        await self.audit.append_async(
            AuditEntry(
                t=now_ms(self.clock),
                source="aggregator",
                command_id=cmd.id,
                seq=cmd.seq,
                action=cmd.action.value,
                params=cmd.params.to_map(),
                status=outcome.status.value,
                reason=outcome.reason,
                readback=dict(outcome.readback),
            )
        )
        await self._ack(cmd.id, cmd.seq, outcome)
        return outcome

    async def _ack(self, cmd_id: str, seq: int, outcome: Outcome) -> None:
        if self.publish_ack is None:
            return
        ack = Ack(
            id=cmd_id,
            site=self.config.site_id,
            seq=seq,
            status=outcome.status,
            t=now_ms(self.clock),
            reason=outcome.reason or ("" if outcome.status is AckStatus.APPLIED else "error"),
            readback={k: v for k, v in outcome.readback.items() if _wire_value(v)},
        )
        try:
            await self.publish_ack(ack)  # the runtime stores it durably (agent.acks)
        except Exception as exc:  # the outcome stands; the audit log has it
            log.warning("%s: ack for %s not queued: %s", self.config.site_id, cmd_id, exc)

    # -- applying -----------------------------------------------------------------------------

    def view(self) -> SiteView:
        return site_view(
            self.poller.latest,
            self.devices,
            self.facts,
            t_ms=now_ms(self.clock),
            max_age_ms=self.max_age_ms,
        )

    def _holds(self, params: Params) -> bool:
        """Whether `params` moves a lease key away from its safe default."""
        lim = self.config.interlocks
        held, _ = effect(
            params, ac_default_c=lim.ac_default_setpoint_c, eco_default=lim.rectifier_eco_default
        )
        return bool(held)

    async def _apply(self, params: Params, view: SiteView) -> Outcome:
        readback: dict[str, Value] = {}
        try:
            plan = plan_writes(
                params, self.devices, view, self.facts, self.poller.latest, hold=self.hold
            )
            for w in plan:
                readback[f"{w.device}.{w.verify}"] = await self.write_and_verify(w)
        except Exception as exc:
            if not isinstance(exc, CommandFailed):  # a bug of ours: fail, ack, stay running
                log.exception("%s: %s: internal error", self.config.site_id, params.ACTION.value)
                return Outcome(AckStatus.FAILED, _internal(exc), readback, True)
            # A failed write may still have reached the device: count it as touched too.
            touched = bool(readback) or exc.reason in ("write", "readback", "readback_mismatch")
            return Outcome(
                AckStatus.FAILED, f"{exc.reason}: {exc.detail}"[:1000], readback, touched
            )
        return Outcome(AckStatus.APPLIED, "", readback, bool(readback))

    async def write_and_verify(self, w: Write) -> Value:
        """Encode, write under the bus lock, read back until it shows the expected value."""
        profile = self.devices.profiles[w.device]
        dev = self.config.devices[w.device]
        bus = self.poller.bus_of(w.device)
        point = profile.by_name.get(w.point)
        check_pt = profile.by_name.get(w.verify)
        if point is None or check_pt is None:
            raise CommandFailed("no_point", f"{w.device} has no point {w.point!r}")
        try:
            data = encode_write(point, w.value)
        except CodecError as exc:
            raise CommandFailed("encode", str(exc)) from exc
        try:
            if isinstance(data, bool):
                await bus.write_coil(
                    dev.unit_id, point.address, data, timeout=dev.timeout_s, retries=dev.retries
                )
            else:
                await bus.write_registers(
                    dev.unit_id, point.address, data, timeout=dev.timeout_s, retries=dev.retries
                )
        except DeviceError as exc:
            raise CommandFailed("write", f"{w.device}.{w.point}: {exc}") from exc
        codec = PointCodec(check_pt)
        deadline = self.clock.now() + w.settle_s
        pause = max(BREAKER_POLL_S, READBACK_MIN_WALL_S * self.clock.speed)
        while True:
            began = self.clock.now()
            try:
                raw = await bus.read(
                    dev.unit_id,
                    check_pt.table,
                    check_pt.address,
                    check_pt.width,
                    timeout=dev.timeout_s,
                    retries=dev.retries,
                )
            except DeviceError as exc:
                raise CommandFailed("readback", f"{w.device}.{w.verify}: {exc}") from exc
            if check_pt.type is PointType.BOOL:
                value: Value = bool(raw[0])
                quality = Quality.GOOD
            else:
                value, quality = codec.decode([int(x) for x in raw])
            if quality is Quality.GOOD and _same(value, w.expect, check_pt.scale):
                return value
            if readback_final(began, deadline):
                raise CommandFailed(
                    "readback_mismatch",
                    f"{w.device}.{w.verify} reads {value!r}, expected {w.expect!r}",
                )
            await self.clock.sleep(max(0.0, min(pause, deadline - self.clock.now())))

    async def _after_applied(
        self, params: Params, view: SiteView, cmd_id: str, seq: int, lease_s: float
    ) -> None:
        lim = self.config.interlocks
        self.leases.apply(
            params,
            command_id=cmd_id,
            seq=seq,
            now=self.clock.now(),
            lease_s=lease_s,
            ac_default_c=lim.ac_default_setpoint_c,
            eco_default=lim.rectifier_eco_default,
        )
        match params:
            case PeakShave():
                self.discharging = True
            case Charge() | BatteryAuto():
                self.discharging = False
            case Dormant(channels=chans, until=until):
                # The load-rise baseline is taken once the coverage cells have taken over the
                # capacity layer's traffic (interlocks.settle), not from `view` (before entry).
                settle_ms = int(self.config.interlocks.dormant_settle_s * 1000)
                self.hold = DormantHold(
                    until, None, tuple(chans), settle_until_ms=now_ms(self.clock) + settle_ms
                )
            case Wake():
                self.hold = None
        await self._save()

    async def _save(self) -> None:
        hold = self.hold
        await self.audit.set_state_async(
            {
                "leases": [
                    {"key": x.key, "command_id": x.command_id, "seq": x.seq, "expires": x.expires}
                    for x in self.leases.held()
                ],
                "dormant": None
                if hold is None
                else {
                    "until_ms": hold.until_ms,
                    "coverage_at_entry_w": hold.coverage_at_entry_w,
                    "channels": list(hold.channels),
                    "settle_until_ms": hold.settle_until_ms,
                },
                "discharging": self.discharging,
            }
        )

    # -- the agent's own acts -----------------------------------------------------------------

    async def enforce(self) -> list[str]:
        """Apply the interlocks' forced acts now (reserve reached, dormant exit); their reasons."""
        return await self.enforce_battery() + await self.enforce_dormant()

    async def enforce_battery(self) -> list[str]:
        """Stop a discharge at the reserve (or with the SOC unknown) now.

        Takes only the battery lock: a command holding the command lock while a breaker
        settles does not delay it (the module docstring)."""
        async with self._battery_lock:
            view = self.view()
            discharging = self.discharging or view.battery_mode == BATTERY_DISCHARGE
            forced = watch(view, self.facts, discharging=discharging, dormant=None)
            return await self._force(forced, view)

    async def enforce_dormant(self) -> list[str]:
        """Leave dormant mode now if an exit rule says so (and take the settled baseline)."""
        async with self._lock:
            if self.hold is None:
                return []
            view = self.view()
            await self._settle(view)
            # Right after a start nothing has been polled yet: that is no silent device.
            warm = self.clock.now() - self._started >= self.max_age_ms / 1000
            forced = watch(view, self.facts, discharging=False, dormant=self.hold, warm=warm)
            return await self._force(forced, view)

    async def _force(self, forced: list[Forced], view: SiteView) -> list[str]:
        done = []
        for f in forced:
            if not self._may_try(f.reason):
                continue
            outcome = await self._act(f.params, f.reason, f.detail, view)
            self._tried(f.reason, outcome)
            done.append(f.reason)
        return done

    async def _settle(self, view: SiteView) -> None:
        """Take the dormant hold's load-rise baseline once the site has settled."""
        if self.hold is None:
            return
        settled = settle(self.hold, view)
        if settled is not None:
            self.hold = settled
            await self._save()
            log.info(
                "%s: dormant: coverage load settled at %.0f W (load-rise baseline)",
                self.config.site_id,
                settled.coverage_at_entry_w or 0.0,
            )

    async def expire_leases(self) -> list[str]:
        """Restore the safe default of every lease that ran out; the keys restored."""
        async with self._lock:
            lapsed = self.leases.lapsed(self.clock.now())
            return await self._restore(lapsed, "lease_lapsed")

    async def aggregator_offline(self) -> list[str]:
        """The aggregator went offline: undo everything it asked for that is still in force."""
        async with self._lock:
            return await self._restore(self.leases.held(), "aggregator_offline")

    async def _restore(self, leases: list[Lease], reason: str) -> list[str]:
        keys = restore_order(leases)
        view = self.view() if keys else None
        done = []
        for key in keys:
            assert view is not None
            if not self._may_try(key):
                continue
            lim = self.config.interlocks
            params = safe_default(
                key, ac_default_c=lim.ac_default_setpoint_c, eco_default=lim.rectifier_eco_default
            )
            if key == BATTERY:
                async with self._battery_lock:
                    outcome = await self._act(params, reason, f"restore {key}", self.view())
            else:
                outcome = await self._act(params, reason, f"restore {key}", view)
            self._tried(key, outcome)
            done.append(key)
        return done

    def _may_try(self, key: str) -> bool:
        """A protective act that failed is retried, but not more than every RETRY_S."""
        return self.clock.now() >= self._retry_at.get(key, 0.0)

    def _tried(self, key: str, outcome: Outcome) -> None:
        if outcome.status is AckStatus.APPLIED:
            self._retry_at.pop(key, None)
        else:
            self._retry_at[key] = self.clock.now() + RETRY_S

    async def _act(self, params: Params, reason: str, detail: str, view: SiteView) -> Outcome:
        """Apply a protective action of the agent's own, audit it, update state."""
        self.counters.forced[reason] = self.counters.forced.get(reason, 0) + 1
        log.warning("%s: %s -> %s (%s)", self.config.site_id, reason, params.ACTION.value, detail)
        outcome = await self._apply(params, view)
        if outcome.status is AckStatus.APPLIED:
            await self._after_applied(params, view, f"agent:{reason}", 0, 0)
            # A restore returns its key to default: drop the lease even if the params hold none.
            if isinstance(params, BatteryAuto):
                self.leases.release([BATTERY])
            if isinstance(params, Wake):
                self.leases.release([DORMANT])
            await self._save()
        await self.audit.append_async(
            AuditEntry(
                t=now_ms(self.clock),
                source="agent",
                command_id=f"agent:{reason}",
                seq=None,
                action=params.ACTION.value,
                params=params.to_map(),
                status=outcome.status.value,
                reason=outcome.reason or reason,
                readback=dict(outcome.readback),
            )
        )
        return outcome


def _internal(exc: Exception) -> str:
    return f"internal: {type(exc).__name__}: {exc}"[:1000]


def _same(value: Value, expect: Value, scale: float) -> bool:
    if value is None or expect is None:
        return value is expect
    if isinstance(expect, bool) or isinstance(value, bool):
        return bool(value) == bool(expect)
    return abs(float(value) - float(expect)) <= abs(scale) / 2 + 1e-9


def _wire_value(v: object) -> bool:
    return v is None or type(v) in (int, float, bool)


def _claimed_command(payload: bytes) -> tuple[str, int | None, str] | None:
    """(id, seq, action) a message *claims*, read without trusting it, for the audit and ack."""
    try:
        outer = cbor2.loads(payload)
        value = getattr(outer, "value", outer)
        inner = cbor2.loads(value[2])
        cid, seq, action = inner.get("id"), inner.get("seq"), inner.get("action")
    except Exception:  # hostile bytes: cbor2 may raise almost anything
        return None
    if isinstance(cid, str) and len(cid) == 36 and type(seq) is int and 0 <= seq < 2**63:
        return cid, seq, str(action)[:64]
    return None


__all__ = [
    "MAX_CLOCK_SKEW_MS",
    "READBACK_MIN_WALL_S",
    "CommandCounters",
    "CommandProcessor",
    "Outcome",
    "SiteDevices",
    "Write",
    "admit",
    "plan_writes",
    "readback_final",
    "reading_max_age_s",
    "site_view",
]
