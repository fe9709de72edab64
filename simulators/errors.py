"""Errors raised by the simulators.

    SimulatorError                  root: anything the simulators refuse
    ├── ScenarioError               a scenario / site file that does not validate (names the key)
    ├── WriteError                  a write a simulated device refuses (maps to a Modbus exception)
    │   ├── UnknownPointError       no such point, or an unmapped address  -> ILLEGAL_DATA_ADDRESS
    │   ├── ReadOnlyPointError      the point cannot be written            -> ILLEGAL_DATA_ADDRESS
    │   ├── InvalidValueError       out of range or not a valid code       -> ILLEGAL_DATA_VALUE
    │   └── RefusedError            valid, but the device says no (local lock) -> DEVICE_FAILURE
    ├── ControlError                the fault-control API was asked something it cannot do
    └── FleetError                  a fleet run cannot start or a process of it failed

Callers react by branch: a ScenarioError stops start-up with its message; a WriteError becomes a
Modbus exception response and the simulation goes on.
"""

from __future__ import annotations


class SimulatorError(Exception):
    """Root of every error raised by `simulators`."""


class ScenarioError(SimulatorError):
    """A scenario or site file that does not validate; the message names the key."""


class WriteError(SimulatorError):
    """A write the simulated device refuses."""


class UnknownPointError(WriteError):
    pass


class ReadOnlyPointError(WriteError):
    pass


class InvalidValueError(WriteError):
    pass


class RefusedError(WriteError):
    pass


class ControlError(SimulatorError):
    pass


class FleetError(SimulatorError):
    """A fleet run could not start, or one of its processes died; the message says which."""


__all__ = [
    "ControlError",
    "FleetError",
    "InvalidValueError",
    "ReadOnlyPointError",
    "RefusedError",
    "ScenarioError",
    "SimulatorError",
    "UnknownPointError",
    "WriteError",
]
