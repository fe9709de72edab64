"""What the agent, the aggregator and the simulators share; no I/O beyond encode/decode.

Modules, one concept each:
    clock       Clock, SystemClock, SimClock, ManualClock, ClockSettings, local-time helpers
    types       Quality, Reading, DeviceKind
    errors      the error tree (ProtocolError and below)
    profiles    device register maps (TOML) and their validation
    points      canonical point names per device kind
    codec       registers <-> typed, scaled values
    blocks      block-coalesced read planning
    keys        Ed25519 site and aggregator keys, kid
    envelope    COSE_Sign1 sealing and opening, Keyring
    topics      MQTT topic builders and parser
    messages    the wire messages (telemetry, state, receipt, command, ack, …)
    control     tariffs, reserve, economics and the pure planners
    validation  a pydantic ValidationError as "key.path: problem" lines
"""

from protocols.clock import Clock, ManualClock, SimClock, SystemClock
from protocols.errors import ProtocolError
from protocols.types import DeviceKind, Quality, Reading

__all__ = [
    "Clock",
    "DeviceKind",
    "ManualClock",
    "ProtocolError",
    "Quality",
    "Reading",
    "SimClock",
    "SystemClock",
]
