"""The poller: one task per bus reads its devices in turn and hands readings to the outbox.

Each device is read in the fewest requests its profile allows (`protocols.blocks`), decoded by
precompiled block decoders (`protocols.codec`), stamped with one time per poll, filtered by
report-by-exception (deadbands + heartbeat, `agent.polling.ExceptionFilter`) and passed to the
`sink` (the outbox's `append`). A failed request gives its points `COMM_ERROR` with value None —
never the last value passed off as fresh. A device that does not answer is backed off
(`DeviceSchedule`), so it costs its bus one timeout now and then instead of every cycle; the
bus's other devices keep their rate, and other buses are other tasks.

`latest` holds every point's last reading (sent or not) for the interlocks, `check` and status.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agent.config import DeviceConfig, SiteConfig
from agent.errors import ConfigError, DeviceError, DeviceException
from agent.modbus_bus import ModbusBus
from agent.polling import DeviceSchedule, ExceptionFilter, next_due
from protocols.blocks import ReadBlock, plan_profile
from protocols.clock import Clock, now_ms
from protocols.errors import CodecError, ProfileError
from protocols.profiles import Profile, load_profile
from protocols.types import Quality, Reading, Value

log = logging.getLogger(__name__)

Sink = Callable[[Sequence[Reading]], None]


def load_device_profiles(config: SiteConfig) -> dict[str, Profile]:
    """Every enabled device's profile, checked against the device's kind and deadbands.

    Devices of one model share one parsed `Profile` (it is frozen): ten 100-point meters hold
    one copy of the register map, not ten (~130 KB each).
    """
    problems: list[str] = []
    out: dict[str, Profile] = {}
    parsed: dict[Path, Profile] = {}
    for dev_id, dev in config.devices.items():
        where = f"devices.{dev_id}"
        path = config.profile_path(dev_id)
        try:
            profile = parsed[path] if path in parsed else load_profile(path)
        except ProfileError as exc:
            problems.append(f"{where}.profile: {exc}")
            continue
        parsed[path] = profile
        if profile.device.kind is not dev.kind:
            problems.append(
                f"{where}.profile: {profile.name!r} is a {profile.device.kind.value} profile, "
                f"the device is a {dev.kind.value}"
            )
        for point in dev.deadbands:
            if point not in profile.by_name:
                problems.append(f"{where}.deadbands.{point}: no such point in {profile.name!r}")
        out[dev_id] = profile
    if problems:
        raise ConfigError(problems, source=str(config.source or ""))
    return out


class Latest:
    """The last reading of every point, by device and point, and its last *good* reading.

    The interlocks read `good()`: the last good value if it is younger than their maximum age.
    One failed poll (a Modbus timeout on a busy RS-485 line) therefore does not blind them for
    an instant, while a device that stays silent for longer than that age does.
    """

    def __init__(self) -> None:
        self._data: dict[str, dict[str, Reading]] = {}
        self._good: dict[str, dict[str, Reading]] = {}

    def update(self, readings: Iterable[Reading]) -> None:
        for r in readings:
            self._data.setdefault(r.device, {})[r.point] = r
            if r.quality is Quality.GOOD:
                self._good.setdefault(r.device, {})[r.point] = r

    def put_device(self, device: str, row: dict[str, Reading]) -> None:
        self._data[device] = row
        good = self._good.setdefault(device, {})
        for name, r in row.items():
            if r.quality is Quality.GOOD:
                good[name] = r

    def get(self, device: str, point: str) -> Reading | None:
        """The last reading, whatever its quality."""
        return self._data.get(device, {}).get(point)

    def good_reading(
        self, device: str, point: str, *, now_ms: int, max_age_ms: int
    ) -> Reading | None:
        """The last good reading if it is at most `max_age_ms` old, else None."""
        r = self._good.get(device, {}).get(point)
        if r is None or now_ms - r.t > max_age_ms:
            return None
        return r

    def good(self, device: str, point: str, *, now_ms: int, max_age_ms: int) -> Value:
        """The value of the last good reading if it is at most `max_age_ms` old, else None."""
        r = self.good_reading(device, point, now_ms=now_ms, max_age_ms=max_age_ms)
        return None if r is None else r.value

    def device(self, device: str) -> dict[str, Reading]:
        return dict(self._data.get(device, {}))

    def devices(self) -> list[str]:
        return list(self._data)


@dataclass
class DeviceState:
    """One device under polling: its plan, schedule, filter and counters."""

    id: str
    config: DeviceConfig
    profile: Profile
    blocks: list[ReadBlock]
    names: list[str]
    schedule: DeviceSchedule
    filter: ExceptionFilter
    polls: int = 0
    failures: int = 0
    reads_ok: int = 0
    last_poll_t: float | None = None
    last_error: str | None = None
    poll_times: list[float] = field(default_factory=list)

    @classmethod
    def build(
        cls, dev_id: str, dev: DeviceConfig, profile: Profile, config: SiteConfig
    ) -> DeviceState:
        blocks = plan_profile(profile)
        names = [p.name for b in blocks for p in b.points]
        bands = []
        for b in blocks:
            for p in b.points:
                band = dev.deadbands.get(p.name, p.deadband)
                bands.append(float(band or 0.0))
        pol = config.polling
        schedule = DeviceSchedule(
            interval=dev.poll_interval_s,
            jitter=pol.jitter,
            backoff_factor=pol.backoff_factor,
            backoff_max=pol.backoff_max_s,
        )
        return cls(
            dev_id,
            dev,
            profile,
            blocks,
            names,
            schedule,
            ExceptionFilter(bands, int(dev.max_interval_s * 1000)),
        )


@dataclass(frozen=True, slots=True)
class PollResult:
    """All of one poll's readings (not only the reported ones) and how it went."""

    readings: list[Reading]
    answered: bool
    error: str | None


async def read_device(bus: ModbusBus, dev: DeviceState, t: int) -> PollResult:
    """Read every block of a device once; failed blocks become COMM_ERROR readings.

    After a timeout or disconnect the device's remaining blocks are not tried (they would each
    cost a timeout); an exception response fails only its own block.
    """
    cfg = dev.config
    out: list[Reading] = []
    answered = False
    dead = False
    error: str | None = None
    for block in dev.blocks:
        if dead:
            out += block.failed(t=t, device=dev.id)
            continue
        try:
            raw = await bus.read(
                cfg.unit_id,
                block.table,
                block.start,
                block.count,
                timeout=cfg.timeout_s,
                retries=cfg.retries,
            )
        except DeviceException as exc:
            answered = True
            error = str(exc)
            out += block.failed(t=t, device=dev.id)
            continue
        except DeviceError as exc:
            dead = True
            error = str(exc)
            out += block.failed(t=t, device=dev.id)
            continue
        answered = True
        try:
            out += block.readings(raw, t=t, device=dev.id)
        except CodecError as exc:
            error = str(exc)
            out += [Reading(t, dev.id, p.name, None, Quality.BAD_VALUE) for p in block.points]
    return PollResult(out, answered, error)


class Poller:
    """Polls every enabled device of a site, one task per bus; `sink` receives the readings."""

    def __init__(
        self,
        config: SiteConfig,
        profiles: Mapping[str, Profile],
        sink: Sink,
        clock: Clock,
        *,
        rng: random.Random | None = None,
        buses: Mapping[str, ModbusBus] | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.sink = sink
        self.latest = Latest()
        self._rng = rng or random.Random()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = False
        self.buses: dict[str, ModbusBus] = dict(buses or {})
        self.devices: dict[str, DeviceState] = {}
        self.by_bus: dict[str, list[DeviceState]] = {}
        gap = config.polling.rtu_frame_gap_ms
        for bus_name, dev_ids in config.buses().items():
            for dev_id in dev_ids:
                dev = config.devices[dev_id]
                if bus_name not in self.buses:
                    self.buses[bus_name] = ModbusBus.for_device(dev, frame_gap_ms=gap)
                state = DeviceState.build(dev_id, dev, profiles[dev_id], config)
                self.devices[dev_id] = state
                self.by_bus.setdefault(bus_name, []).append(state)
        self._listeners: list[Callable[[str, list[Reading]], None]] = []

    def bus_of(self, device_id: str) -> ModbusBus:
        return self.buses[self.config.devices[device_id].bus]

    def add_listener(self, fn: Callable[[str, list[Reading]], None]) -> None:
        """Called after every poll with the device id and all its readings (for interlocks)."""
        self._listeners.append(fn)

    async def start(self) -> None:
        if self._tasks:
            return
        self._stopped = False
        for bus_name, devs in self.by_bus.items():
            task = asyncio.create_task(self._run_bus(bus_name, devs), name=f"poll {bus_name}")
            self._tasks.append(task)

    async def stop(self) -> None:
        """Cancel every bus task and wait until each has ended, then close the buses.

        No time limit: a task that outlived a bounded wait went on to append to an outbox its
        agent had closed ("append failed: closed database" under fleet load). A task slow to
        give way is cancelled again every 5 s. From the first line on, nothing reaches the sink
        or the listeners, so a poll still running outside these tasks (a command's read-back)
        ends without reporting. Cancelling `stop` itself leaves the tasks cancelled and tracked;
        calling it again waits for them.
        """
        self._stopped = True
        for task in self._tasks:
            task.cancel()
        pending = {t for t in self._tasks if not t.done()}
        while pending:
            _, pending = await asyncio.wait(pending, timeout=5.0)
            if pending:
                log.warning(
                    "%d poll task(s) still running after stop; cancelling again", len(pending)
                )
                for task in pending:
                    task.cancel()
        self._tasks.clear()
        for bus in self.buses.values():
            await bus.close()

    async def __aenter__(self) -> Poller:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def poll_once(self, device_id: str, *, report: bool = True) -> PollResult:
        """Poll one device now (used by the bus loop, `check` and after a command's write)."""
        dev = self.devices[device_id]
        bus = self.bus_of(device_id)
        t = now_ms(self.clock)
        result = await read_device(bus, dev, t)
        if self._stopped:
            return result  # stopped while reading: the outbox may be closed already
        dev.polls += 1
        dev.last_poll_t = t / 1000.0
        dev.poll_times.append(t / 1000.0)
        if len(dev.poll_times) > 64:
            del dev.poll_times[:32]
        if result.answered:
            dev.reads_ok += 1
        else:
            dev.failures += 1
        dev.last_error = result.error
        readings = result.readings
        self.latest.put_device(device_id, {r.point: r for r in readings})
        if report:
            values = [r.value for r in readings]
            qualities = [r.quality for r in readings]
            chosen = dev.filter.select(t, values, qualities)
            if not result.answered:
                # Every failed attempt is reported (DESIGN: a silent device's points are
                # reported comm-error): report-by-exception would send it once, and the
                # aggregator would never see the silence last. Backoff keeps these rare.
                chosen = list(range(len(readings)))
            if chosen:
                if len(chosen) == len(readings):
                    self.sink(readings)
                else:
                    self.sink([readings[i] for i in chosen])
        for fn in self._listeners:
            fn(device_id, readings)
        return result

    async def _run_bus(self, bus_name: str, devs: list[DeviceState]) -> None:
        now = self.clock.now()
        for d in devs:
            d.schedule.start(now, self._rng.random())
        schedules = [d.schedule for d in devs]
        while True:
            d = devs[next_due(schedules)]
            wait = d.schedule.due_in(self.clock.now())
            if wait > 0:
                await self.clock.sleep(wait)
            try:
                result = await self.poll_once(d.id)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug in one poll must not end the bus's polling
                log.exception("poll of %s failed unexpectedly", d.id)
                result = PollResult([], False, f"internal error: {exc}")
            now = self.clock.now()
            if result.answered:
                if d.schedule.on_success(now, self._rng.random()):
                    log.info("device %s answers again", d.id)
            elif d.schedule.on_failure(now, self._rng.random(), result.error or "no answer"):
                log.warning("device %s stopped answering: %s", d.id, result.error)


__all__ = [
    "DeviceState",
    "Latest",
    "PollResult",
    "Poller",
    "Sink",
    "load_device_profiles",
    "read_device",
]
