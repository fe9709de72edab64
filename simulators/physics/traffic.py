"""RAN traffic through the day and the DC power each breaker channel draws because of it.

A channel draws `idle + (peak - idle) * utilisation`, scaled by the site's size and reduced by
RAN software energy saving. The capacity layer's traffic moves to the anchor (coverage) layer
when the capacity layer is switched off, which is what makes the anchor's load rise in dormancy.
"""

from __future__ import annotations

from collections.abc import Sequence

from simulators.physics.localtime import LocalHour
from simulators.physics.noise import SmoothNoise, uniform
from simulators.spec import ChannelSpec, LoadKind, SavingLevel, TrafficProfile, TrafficSpec

# Fraction of the daily peak at each local hour 0..23 (operators' published day curves:
# a trough around 04:00, a morning ramp, a day plateau, the evening peak around 20–21).
CURVES: dict[TrafficProfile, tuple[float, ...]] = {
    TrafficProfile.URBAN: (
        0.42, 0.34, 0.29, 0.27, 0.26, 0.28, 0.36, 0.52, 0.70, 0.82, 0.88, 0.90,
        0.88, 0.86, 0.87, 0.88, 0.89, 0.90, 0.92, 0.96, 1.00, 0.97, 0.80, 0.58,
    ),
    TrafficProfile.RESIDENTIAL: (
        0.44, 0.35, 0.29, 0.27, 0.26, 0.27, 0.33, 0.45, 0.55, 0.60, 0.62, 0.66,
        0.70, 0.66, 0.64, 0.66, 0.70, 0.78, 0.88, 0.96, 1.00, 0.98, 0.85, 0.62,
    ),
    TrafficProfile.BUSINESS: (
        0.30, 0.27, 0.26, 0.25, 0.25, 0.27, 0.35, 0.60, 0.90, 1.00, 0.98, 0.92,
        0.85, 0.95, 0.98, 0.96, 0.92, 0.85, 0.70, 0.58, 0.52, 0.46, 0.40, 0.34,
    ),
    TrafficProfile.RURAL: (
        0.36, 0.30, 0.28, 0.27, 0.27, 0.30, 0.42, 0.60, 0.72, 0.78, 0.80, 0.80,
        0.78, 0.78, 0.80, 0.82, 0.85, 0.90, 0.95, 0.98, 1.00, 0.88, 0.65, 0.48,
    ),
}  # fmt: skip

SAVING_FACTOR: dict[SavingLevel, float] = {
    SavingLevel.NONE: 1.0,
    SavingLevel.SYMBOL: 0.75,
    SavingLevel.CHANNEL: 0.6,
    SavingLevel.DEEP_SLEEP: 0.3,
}
"""Share of a radio channel's draw left under each saving level (DOMAIN.md "Dormancy")."""

# How much each kind of equipment follows traffic (0: flat, 1: fully).
_TRAFFIC_WEIGHT: dict[LoadKind, float] = {
    LoadKind.TRANSMISSION: 0.3,
    LoadKind.BBU: 1.0,
    LoadKind.AAU_ANCHOR: 1.0,
    LoadKind.AAU_CAPACITY: 1.0,
    LoadKind.RRU: 1.0,
    LoadKind.AIRCON: 0.0,
    LoadKind.GATEWAY: 0.0,
    LoadKind.OTHER: 0.0,
    LoadKind.SPARE: 0.0,
}
_RADIO = {LoadKind.AAU_ANCHOR, LoadKind.AAU_CAPACITY, LoadKind.RRU}

CAPACITY_SHARE = 0.5
"""Share of the traffic the capacity layer carries when it is on; the anchor takes it otherwise."""


class TrafficCurve:
    """Traffic as a fraction of the site's peak, a pure function of time.

    Per-site variation comes from the seed: a phase shift of up to ±40 minutes, an amplitude
    of 0.9–1.1 and smooth noise, so no two sites of a fleet are identical.
    """

    def __init__(self, spec: TrafficSpec, *, seed: int, local: LocalHour) -> None:
        self.spec = spec
        self._local = local
        base = CURVES[spec.profile]
        lo = min(base)
        nf = spec.night_fraction
        self._curve = tuple(nf + (v - lo) * (1.0 - nf) / (1.0 - lo) for v in base)
        self._shift_h = (uniform(seed, 101) - 0.5) * 4.0 / 3.0
        self._amplitude = 0.9 + 0.2 * uniform(seed, 102)
        self._noise = SmoothNoise(seed, 900.0)

    def base(self, hour: float) -> float:
        """The profile's fraction at a local hour, linearly interpolated between hours."""
        h = hour % 24.0
        i = int(h)
        f = h - i
        a = self._curve[i]
        b = self._curve[(i + 1) % 24]
        return a + (b - a) * f

    def at(self, t: float) -> float:
        hour = self._local.hour(t) - self._shift_h
        v = self.base(hour) * self._amplitude
        v *= 1.0 + self.spec.noise * self._noise(t)
        return min(1.1, max(0.02, v))


def saving_at(spec: TrafficSpec, hour: float) -> SavingLevel:
    """The scheduled RAN saving level at a local hour (the window may cross midnight)."""
    if spec.saving_window_h is None:
        return SavingLevel.NONE
    start, end = spec.saving_window_h
    inside = start <= hour < end if start <= end else (hour >= start or hour < end)
    return spec.saving_level if inside else SavingLevel.NONE


class ChannelLoads:
    """The DC draw of one breaker's channels: what does not change per step worked out once.

    A site asks for its channels' powers every physics step; the channels, their kinds and the
    site's scale are fixed, so only traffic, contacts and saving levels are looked at then.
    """

    def __init__(self, channels: Sequence[ChannelSpec], *, scale: float) -> None:
        self.channels = tuple(channels)
        self.scale = scale
        self._capacity = [i for i, c in enumerate(channels) if c.kind is LoadKind.AAU_CAPACITY]
        self._share = CAPACITY_SHARE if self._capacity else 0.0
        # Per channel: draws at all, idle, peak - idle, traffic weight, anchor?, radio?
        self._rows = [
            (
                c.kind not in (LoadKind.AIRCON, LoadKind.SPARE),
                c.idle_w,
                c.peak_w - c.idle_w,
                _TRAFFIC_WEIGHT[c.kind],
                c.kind is LoadKind.AAU_ANCHOR,
                c.kind in _RADIO,
            )
            for c in channels
        ]

    def powers(
        self, closed: Sequence[bool], traffic: float, saving: Sequence[SavingLevel]
    ) -> list[float]:
        """DC watts per channel. Open channels draw nothing; AIRCON channels are filled in
        later."""
        cap_total = len(self._capacity)
        cap_on = 0
        for i in self._capacity:
            if closed[i]:
                cap_on += 1
        on_frac = cap_on / cap_total if cap_total else 0.0
        share = self._share
        anchor_util = min(1.0, traffic * (1.0 - share * on_frac) / (1.0 - share))
        util_other = min(1.0, traffic)
        scale = self.scale
        out: list[float] = []
        for (draws, idle, span, w, anchor, radio), on, lvl in zip(
            self._rows, closed, saving, strict=True
        ):
            if not on or not draws:
                out.append(0.0)
                continue
            util = anchor_util if anchor else util_other
            p = idle + span * (1.0 - w + w * util)
            if radio:
                p *= SAVING_FACTOR[lvl]
            out.append(p * scale)
        return out


def channel_powers(
    channels: Sequence[ChannelSpec],
    closed: Sequence[bool],
    traffic: float,
    *,
    scale: float,
    saving: Sequence[SavingLevel],
) -> list[float]:
    """DC watts per channel. Open channels draw nothing; AIRCON channels are filled in later."""
    return ChannelLoads(channels, scale=scale).powers(closed, traffic, saving)


def peak_load_w(channels: Sequence[ChannelSpec], *, scale: float) -> float:
    """The DC draw at full traffic, every channel closed and no RAN saving: the most the site's
    channels ask (DC air-conditioning, filled in by the site model, not included)."""
    n = len(channels)
    return sum(
        channel_powers(channels, [True] * n, 1.0, scale=scale, saving=[SavingLevel.NONE] * n)
    )


__all__ = [
    "CAPACITY_SHARE",
    "CURVES",
    "SAVING_FACTOR",
    "ChannelLoads",
    "TrafficCurve",
    "channel_powers",
    "peak_load_w",
    "saving_at",
]
