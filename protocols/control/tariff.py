"""Time-of-use tariffs: which period (and price) applies at an instant, and when it changes.

A tariff is data (TOML, see config/tariffs/): seasons by month, each with prices per period and
one schedule for all days or one for weekdays and one for weekends; a schedule gives each period
its local wall-clock ranges ("08:00-15:00", "22:00-06:00" wraps midnight). Validation insists
that every minute of every day is covered exactly once, so a lookup can never fall in a hole.
Prices out of the usual order (critical peak ≥ peak ≥ flat ≥ valley) are reported by
`Tariff.price_warnings()`, not refused: some tariffs really do that.

Times are Unix seconds; periods are local to the tariff's time zone (default Asia/Shanghai).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from enum import StrEnum
from itertools import pairwise
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from protocols.clock import DEFAULT_TZ, local_time, zone
from protocols.control.errors import TariffError
from protocols.validation import read_toml, validation_problems

log = logging.getLogger(__name__)

MINUTES_PER_DAY = 24 * 60


class Period(StrEnum):
    """Tariff periods, dearest first."""

    CRITICAL_PEAK = "critical_peak"
    PEAK = "peak"
    FLAT = "flat"
    VALLEY = "valley"


PERIODS: tuple[Period, ...] = tuple(Period)
PEAK_PERIODS: frozenset[Period] = frozenset({Period.CRITICAL_PEAK, Period.PEAK})


class DayType(StrEnum):
    ALL = "all"
    WEEKDAY = "weekday"
    WEEKEND = "weekend"


def parse_hhmm(text: str) -> int:
    """'HH:MM' as minutes after midnight (24:00 allowed)."""
    hh, sep, mm = text.strip().partition(":")
    if not sep or not hh.isdigit() or not mm.isdigit():
        raise ValueError(f"time {text!r} is not HH:MM")
    minutes = int(hh) * 60 + int(mm)
    if int(mm) >= 60 or minutes > MINUTES_PER_DAY:
        raise ValueError(f"time {text!r} is outside 00:00..24:00")
    return minutes


def parse_range(text: str) -> list[tuple[int, int]]:
    """'HH:MM-HH:MM' as minute ranges [start, end); a range over midnight comes back as two."""
    start_s, sep, end_s = text.partition("-")
    if not sep:
        raise ValueError(f"range {text!r} is not HH:MM-HH:MM")
    start, end = parse_hhmm(start_s), parse_hhmm(end_s)
    if start == end:
        raise ValueError(f"range {text!r} is empty")
    if start < end:
        return [(start, end)]
    return [r for r in ((start, MINUTES_PER_DAY), (0, end)) if r[0] < r[1]]


class DaySchedule(BaseModel):
    """The periods of one kind of day, as local wall-clock ranges."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    days: DayType = DayType.ALL
    critical_peak: tuple[str, ...] = ()
    peak: tuple[str, ...] = ()
    flat: tuple[str, ...] = ()
    valley: tuple[str, ...] = ()

    # (start minute, period) in order, first at 0: the derived form every lookup uses.
    _steps: tuple[tuple[int, Period], ...] = PrivateAttr(())

    @model_validator(mode="after")
    def _cover_the_day_once(self) -> DaySchedule:
        owner: list[Period | None] = [None] * MINUTES_PER_DAY
        for period in PERIODS:
            for text in getattr(self, period.value):
                for start, end in parse_range(text):
                    for m in range(start, end):
                        if owner[m] is not None:
                            raise ValueError(
                                f"{period.value} {text!r} overlaps {owner[m]} at {m // 60:02d}:"
                                f"{m % 60:02d} ({self.days.value} days)"
                            )
                        owner[m] = period
        holes = [m for m, p in enumerate(owner) if p is None]
        if holes:
            m = holes[0]
            raise ValueError(
                f"{len(holes)} minutes of the day have no period, first at "
                f"{m // 60:02d}:{m % 60:02d} ({self.days.value} days)"
            )
        steps: list[tuple[int, Period]] = []
        for m, p in enumerate(owner):
            assert p is not None
            if not steps or steps[-1][1] != p:
                steps.append((m, p))
        self._steps = tuple(steps)
        return self

    @property
    def steps(self) -> tuple[tuple[int, Period], ...]:
        """(start minute, period) in order; each runs until the next start (or midnight)."""
        return self._steps

    def period_at_minute(self, minute: float) -> Period:
        current = self._steps[0][1]
        for start, period in self._steps:
            if start > minute:
                break
            current = period
        return current

    def used_periods(self) -> set[Period]:
        return {p for _, p in self._steps}


class Season(BaseModel):
    """Months sharing prices and schedules."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    months: tuple[int, ...] = Field(min_length=1)
    prices: dict[Period, float]
    schedules: tuple[DaySchedule, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> Season:
        bad = [m for m in self.months if not 1 <= m <= 12]
        if bad:
            raise ValueError(f"season {self.name!r}: months {bad} are not 1..12")
        kinds = sorted(s.days.value for s in self.schedules)
        if kinds not in (["all"], ["weekday", "weekend"]):
            raise ValueError(
                f"season {self.name!r}: schedules must be one for 'all' days or one 'weekday' "
                f"and one 'weekend', got {kinds}"
            )
        for schedule in self.schedules:
            missing = schedule.used_periods() - set(self.prices)
            if missing:
                names = sorted(p.value for p in missing)
                raise ValueError(f"season {self.name!r}: no price for {names}")
        negative = {p.value: v for p, v in self.prices.items() if v < 0}
        if negative:
            raise ValueError(f"season {self.name!r}: negative prices {negative}")
        return self

    def schedule_for(self, weekday: int) -> DaySchedule:
        """The schedule for a day (`weekday` 0 = Monday … 6 = Sunday)."""
        wanted = DayType.WEEKEND if weekday >= 5 else DayType.WEEKDAY
        for schedule in self.schedules:
            if schedule.days in (DayType.ALL, wanted):
                return schedule
        raise AssertionError("validated seasons cover every day type")  # pragma: no cover


@dataclass(frozen=True, slots=True)
class Segment:
    """A stretch [start, end) of Unix seconds with one period and price."""

    start: float
    end: float
    period: Period
    price: float

    @property
    def hours(self) -> float:
        return (self.end - self.start) / 3600.0


class Tariff(BaseModel):
    """A time-of-use tariff. Build with `Tariff.model_validate(dict)` or `load_tariff(path)`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    description: str = ""
    currency: str = "CNY"
    timezone: str = DEFAULT_TZ
    seasons: tuple[Season, ...] = Field(min_length=1)

    _by_month: dict[int, Season] = PrivateAttr(default_factory=dict)
    _tz: tzinfo | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _months_once(self) -> Tariff:
        by_month: dict[int, Season] = {}
        for season in self.seasons:
            for m in season.months:
                if m in by_month:
                    raise ValueError(
                        f"month {m} is in both {by_month[m].name!r} and {season.name!r}"
                    )
                by_month[m] = season
        missing = [m for m in range(1, 13) if m not in by_month]
        if missing:
            raise ValueError(f"months {missing} belong to no season")
        try:
            self._tz = zone(self.timezone)
        except Exception as exc:  # zoneinfo raises several kinds
            raise ValueError(f"unknown time zone {self.timezone!r}") from exc
        self._by_month = by_month
        return self

    @property
    def tz(self) -> tzinfo:
        assert self._tz is not None
        return self._tz

    def price_warnings(self) -> list[str]:
        """Prices out of the usual order, per season; empty when all is as expected."""
        out: list[str] = []
        for season in self.seasons:
            ordered = [(p, season.prices[p]) for p in PERIODS if p in season.prices]
            for (p1, v1), (p2, v2) in pairwise(ordered):
                if v1 < v2:
                    out.append(
                        f"season {season.name!r}: {p1.value} price {v1} is below "
                        f"{p2.value} price {v2}"
                    )
        return out

    def season_at(self, t: float) -> Season:
        return self._by_month[local_time(t, self.tz).month]

    def period_at(self, t: float) -> Period:
        d = local_time(t, self.tz)
        schedule = self._by_month[d.month].schedule_for(d.weekday())
        return schedule.period_at_minute(d.hour * 60 + d.minute + d.second / 60)

    def price_at(self, t: float) -> float:
        return self.season_at(t).prices[self.period_at(t)]

    def segment_at(self, t: float) -> Segment:
        """The (merged) segment containing `t`."""
        return next(self.iter_segments(t))

    def next_change(self, t: float) -> float:
        """The first instant after `t` where the period or the price changes."""
        return self.segment_at(t).end

    def segments(self, start: float, end: float) -> list[Segment]:
        """Segments covering [start, end), clipped to it: for splitting energy by period."""
        if end < start:
            raise TariffError(f"interval ends ({end}) before it starts ({start})")
        out: list[Segment] = []
        if end == start:
            return out
        for seg in self.iter_segments(start):
            if seg.start >= end:
                break
            out.append(Segment(max(seg.start, start), min(seg.end, end), seg.period, seg.price))
        return out

    def iter_segments(self, start: float) -> Iterator[Segment]:
        """Merged segments from the one containing `start` onwards, without end."""
        pending: Segment | None = None
        for seg in self._raw_segments(start):
            if seg.end <= start:
                continue
            if pending is None:
                pending = seg
            elif seg.period == pending.period and seg.price == pending.price:
                pending = Segment(pending.start, seg.end, seg.period, seg.price)
            else:
                yield pending
                pending = seg

    def _raw_segments(self, start: float) -> Iterator[Segment]:
        day = local_time(start, self.tz).date()
        while True:
            midnight = datetime(day.year, day.month, day.day, tzinfo=self.tz)
            season = self._by_month[day.month]
            steps = season.schedule_for(day.weekday()).steps
            for i, (m, period) in enumerate(steps):
                m_end = steps[i + 1][0] if i + 1 < len(steps) else MINUTES_PER_DAY
                s = (midnight + timedelta(minutes=m)).timestamp()
                e = (midnight + timedelta(minutes=m_end)).timestamp()
                if e > s:
                    yield Segment(s, e, period, season.prices[period])
            day = day + timedelta(days=1)

    def day_prices(self, t: float) -> dict[Period, float]:
        """The prices of the periods that occur on the local day of `t`."""
        d = local_time(t, self.tz)
        season = self._by_month[d.month]
        schedule = season.schedule_for(d.weekday())
        return {p: season.prices[p] for p in PERIODS if p in schedule.used_periods()}


def valley_start(tariff: Tariff, now: float) -> float:
    """When the valley containing `now` began (segments split at midnight are joined)."""
    start = tariff.segment_at(now).start
    for _ in range(3):
        before = tariff.segment_at(start - 1.0)
        if before.period is not Period.VALLEY:
            break
        start = before.start
    return start


def tariff_from_mapping(data: Mapping[str, Any], *, source: str = "<tariff>") -> Tariff:
    """Validate a parsed tariff; errors name the source and the bad key."""
    try:
        return Tariff.model_validate(dict(data))
    except ValidationError as exc:
        problems = "; ".join(validation_problems(exc))
        raise TariffError(f"{source}: {problems}") from exc


def load_tariff(path: str | Path) -> Tariff:
    """Read and validate one tariff TOML file; logs (does not refuse) unusual price orders."""
    p = Path(path)
    tariff = tariff_from_mapping(read_toml(p, TariffError), source=str(p))
    for warning in tariff.price_warnings():
        log.warning("%s: %s", p, warning)
    return tariff


def load_tariffs(directory: str | Path) -> dict[str, Tariff]:
    """Every *.toml tariff in a directory, by its `name`."""
    out: dict[str, Tariff] = {}
    for p in sorted(Path(directory).glob("*.toml")):
        t = load_tariff(p)
        if t.name in out:
            raise TariffError(f"{p}: tariff name {t.name!r} is used twice")
        out[t.name] = t
    return out


__all__ = [
    "PEAK_PERIODS",
    "PERIODS",
    "DaySchedule",
    "DayType",
    "Period",
    "Season",
    "Segment",
    "Tariff",
    "load_tariff",
    "load_tariffs",
    "parse_hhmm",
    "parse_range",
    "tariff_from_mapping",
    "valley_start",
]
