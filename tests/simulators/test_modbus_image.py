"""The register image: a refresh that re-encodes only changed points leaves every register as a
full encoding of the same values would."""

from __future__ import annotations

import math

import pytest

from protocols.clock import parse_time
from protocols.profiles import PointType, Table, load_profile, load_profiles
from simulators.devices import PointValue, view
from simulators.modbus.image import RegisterImage
from simulators.physics import SiteModel
from simulators.spec import BatterySpec, Chemistry, SiteSpec

T0 = parse_time("2025-07-01T00:00:00+08:00")


def full_encoding(
    profile_name: str, values: dict[str, PointValue], extras: dict[str, PointValue]
) -> dict[Table, dict[int, int | bool]]:
    image = RegisterImage(load_profile(profile_name))
    image.extras.update(extras)
    image.refresh(values)
    return image.tables


def twists(step: int, values: dict[str, PointValue], image: RegisterImage) -> None:
    """Values that encode differently although they compare equal or look alike: signed zeros
    on float32 points, missing sensors, NaN, a point left out (extras or the default)."""
    points = image.profile.points
    for i, p in enumerate(points):
        if p.type is PointType.F32 and (step + i) % 3 != 0:
            values[p.name] = -0.0 if (step + i) % 3 == 1 else 0.0
        elif p.type is not PointType.BOOL and not p.bits and (step + i) % 11 == 5:
            values[p.name] = None
        elif p.type is not PointType.BOOL and not p.bits and (step + i) % 13 == 7:
            values[p.name] = math.nan
        elif (step + i) % 17 == 3:
            values.pop(p.name, None)
    writable = [p for p in points if p.writable and p.type is not PointType.BOOL and not p.bits]
    if writable and step % 4 == 2:
        p = writable[step % len(writable)]
        values.pop(p.name, None)
        image.extras[p.name] = p.min if p.min is not None else 1.0


@pytest.mark.parametrize("profile_name", sorted(load_profiles()))
def test_incremental_refresh_matches_a_full_encoding(profile_name: str) -> None:
    profile = load_profile(profile_name)
    lead = profile_name == "battery_strata_bsm4"
    chem = Chemistry.LEAD_ACID if lead else Chemistry.LFP
    m = SiteModel(SiteSpec(battery=BatterySpec(chemistry=chem)), start=T0)
    dev = view(profile.device.kind)
    image = RegisterImage(profile)
    bitfields: dict[str, dict[str, bool]] = {}  # one dict per point, refilled in place
    changed = 0
    for step in range(60):
        m.advance_to(T0 + 600.0 * (step + 1))
        values = dict(dev.read(m))
        for name, v in list(values.items()):
            if isinstance(v, dict):
                kept = bitfields.setdefault(name, {})
                kept.clear()
                kept.update(v)
                if step % 2:  # flip a flag in the same dict the image saw last time
                    first = next(iter(kept), None)
                    if first is not None:
                        kept[first] = not kept[first]
                values[name] = kept
        twists(step, values, image)
        before = {t: dict(cells) for t, cells in image.tables.items()}
        image.refresh(values)
        changed += before != image.tables
        assert image.tables == full_encoding(profile_name, values, dict(image.extras)), step
    assert changed > 30  # the values did move: the comparison was not of idle images
