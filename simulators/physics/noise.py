"""Deterministic randomness: the same seed gives the same site, in any process, at any step size.

Physics must not depend on how finely it is stepped, so random variation is a pure function of
(seed, time) rather than a stateful generator advanced per step.
"""

from __future__ import annotations

import math

_MASK = (1 << 64) - 1


def hash64(*parts: int) -> int:
    """splitmix64 over the parts: a fast, well-mixed integer hash."""
    x = 0x9E3779B97F4A7C15
    for p in parts:
        x = (x ^ (p & _MASK)) & _MASK
        x = (x + 0x9E3779B97F4A7C15) & _MASK
        z = x
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
        x = z ^ (z >> 31)
    return x


def uniform(*parts: int) -> float:
    """A number in [0, 1) fixed by the parts."""
    return (hash64(*parts) >> 11) / float(1 << 53)


def smooth(seed: int, t: float, period_s: float) -> float:
    """Smooth value noise in [-1, 1]: random knots every `period_s`, cosine-interpolated."""
    k = math.floor(t / period_s)
    f = t / period_s - k
    a = uniform(seed, k) * 2.0 - 1.0
    b = uniform(seed, k + 1) * 2.0 - 1.0
    w = (1.0 - math.cos(math.pi * f)) / 2.0
    return a + (b - a) * w


class SmoothNoise:
    """`smooth(seed, t, period_s)` with the two surrounding knots cached: same values, cheaper."""

    __slots__ = ("_a", "_b", "_k", "period_s", "seed")

    def __init__(self, seed: int, period_s: float) -> None:
        self.seed = seed
        self.period_s = period_s
        self._k = -(1 << 62)
        self._a = self._b = 0.0

    def __call__(self, t: float) -> float:
        x = t / self.period_s
        k = math.floor(x)
        if k != self._k:
            # Time moves forward a knot at a time: the old right knot is the new left one.
            self._a = self._b if k == self._k + 1 else uniform(self.seed, k) * 2.0 - 1.0
            self._b = uniform(self.seed, k + 1) * 2.0 - 1.0
            self._k = k
        w = (1.0 - math.cos(math.pi * (x - k))) / 2.0
        return self._a + (self._b - self._a) * w


__all__ = ["SmoothNoise", "hash64", "smooth", "uniform"]
