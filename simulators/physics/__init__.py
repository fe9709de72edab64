"""Site equipment physics: pure models stepped by simulated time, no I/O."""

from simulators.physics.aircon import Aircon, AirconMode, Climate
from simulators.physics.battery import Battery, BatteryMode
from simulators.physics.breaker import Breaker, TripReason
from simulators.physics.events import Conditions, EventSchedule
from simulators.physics.meter import GridMeter
from simulators.physics.rectifier import RectifierPlant, module_efficiency
from simulators.physics.site import SimLogEntry, SiteModel, Totals
from simulators.physics.traffic import TrafficCurve

__all__ = [
    "Aircon",
    "AirconMode",
    "Battery",
    "BatteryMode",
    "Breaker",
    "Climate",
    "Conditions",
    "EventSchedule",
    "GridMeter",
    "RectifierPlant",
    "SimLogEntry",
    "SiteModel",
    "Totals",
    "TrafficCurve",
    "TripReason",
    "module_efficiency",
]
