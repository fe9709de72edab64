"""Errors raised by the control planners (a branch of the `protocols` tree).

    ProtocolError                       protocols' root (protocols/errors.py)
    ├── ConfigError
    │   └── ControlConfigError          a tariff or policy file/value that does not validate
    │       └── TariffError             a tariff whose hours or seasons do not add up
    └── ControlError                    a planner given arguments it cannot work with
                                        (negative capacity, an interval that ends before it starts)

A ControlConfigError stops start-up (or the upload of a policy) with the path to the bad value; a
ControlError is a programming error in the caller, never a condition of the site.
"""

from __future__ import annotations

from protocols.errors import ConfigError, ProtocolError


class ControlError(ProtocolError):
    reason = "control"


class ControlConfigError(ConfigError):
    reason = "control_config"


class TariffError(ControlConfigError):
    reason = "tariff"


__all__ = ["ControlConfigError", "ControlError", "TariffError"]
