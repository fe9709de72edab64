"""The aggregator's control loop: policies, demand-response events and the shell around the
pure planners of `protocols.control`.

`core` is pure (fleet snapshot + events + memory + now → commands); `loop.ControlLoop` is the
async shell that reads storage, sends through the commands module and raises alarms.
"""

from aggregator.control.core import FleetMemory, Intent, Round, plan_round
from aggregator.control.events import DrEvent, DrEventError, DrStore, UnknownEventError, new_event
from aggregator.control.inputs import Measured, SiteInputs, measure
from aggregator.control.loop import CONTROL_ALARM_KIND, ControlLoop, StorageAlarms
from aggregator.control.policies import (
    PolicyBook,
    PolicyLayer,
    ScopeKind,
    SitePolicy,
    layer_from_mapping,
    load_layers,
)
from aggregator.control.settings import ControlSettings, settings_from_config

__all__ = [
    "CONTROL_ALARM_KIND",
    "ControlLoop",
    "ControlSettings",
    "DrEvent",
    "DrEventError",
    "DrStore",
    "FleetMemory",
    "Intent",
    "Measured",
    "PolicyBook",
    "PolicyLayer",
    "Round",
    "ScopeKind",
    "SiteInputs",
    "SitePolicy",
    "StorageAlarms",
    "UnknownEventError",
    "layer_from_mapping",
    "load_layers",
    "measure",
    "new_event",
    "plan_round",
    "settings_from_config",
]
