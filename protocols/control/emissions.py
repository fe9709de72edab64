"""Grid emission factors (kgCO2/kWh). Reports name the set, year and region they used.

China 2022 figures from national statistics (DOMAIN.md): the national average, the six regional
grids, and the power-sector carbon-market factor.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocols.control.errors import ControlError


@dataclass(frozen=True, slots=True)
class EmissionFactor:
    set_name: str
    year: int
    region: str
    kg_per_kwh: float

    @property
    def label(self) -> str:
        return f"{self.set_name} {self.year} {self.region} ({self.kg_per_kwh} kgCO2/kWh)"


@dataclass(frozen=True, slots=True)
class EmissionFactorSet:
    name: str
    year: int
    factors: dict[str, float]

    def factor(self, region: str) -> EmissionFactor:
        try:
            value = self.factors[region]
        except KeyError:
            known = ", ".join(sorted(self.factors))
            raise ControlError(
                f"no {self.name} {self.year} factor for {region!r} (known: {known})"
            ) from None
        return EmissionFactor(self.name, self.year, region, value)


CHINA_2022 = EmissionFactorSet(
    "china-grid",
    2022,
    {
        "national": 0.5366,
        "east": 0.5617,
        "central": 0.5395,
        "north": 0.6776,
        "northeast": 0.5564,
        "northwest": 0.5857,
        "south": 0.3869,
        "southwest": 0.2268,
    },
)
CHINA_2022_CARBON_MARKET = EmissionFactorSet("china-carbon-market", 2022, {"national": 0.5703})

FACTOR_SETS: dict[tuple[str, int], EmissionFactorSet] = {
    (s.name, s.year): s for s in (CHINA_2022, CHINA_2022_CARBON_MARKET)
}

DEFAULT_FACTOR = CHINA_2022.factor("national")


def emission_factor(
    set_name: str = "china-grid", year: int = 2022, region: str = "national"
) -> EmissionFactor:
    """Look a factor up by set, year and region."""
    try:
        factor_set = FACTOR_SETS[(set_name, year)]
    except KeyError:
        known = ", ".join(f"{n} {y}" for n, y in sorted(FACTOR_SETS))
        raise ControlError(
            f"unknown emission factor set {set_name} {year} (known: {known})"
        ) from None
    return factor_set.factor(region)


__all__ = [
    "CHINA_2022",
    "CHINA_2022_CARBON_MARKET",
    "DEFAULT_FACTOR",
    "FACTOR_SETS",
    "EmissionFactor",
    "EmissionFactorSet",
    "emission_factor",
]
