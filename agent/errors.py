"""Errors raised by the edge agent.

    AgentError                      root: anything the agent refuses or cannot do
    ├── ConfigError                 the site config does not validate (each problem names its key)
    ├── DeviceError                 a Modbus exchange failed: mark the readings comm-error, back off
    │   ├── DeviceTimeout           no answer within the device's timeout
    │   ├── DeviceDisconnected      no connection (refused, reset, serial port gone)
    │   └── DeviceException         the device answered with a Modbus exception (code carried)
    ├── CommandError                a command that is not run as asked (carries `reason`)
    │   ├── CommandRejected         refused before any write: signature, site, expiry, replay,
    │   │                           interlock, unknown action (ack `rejected`)
    │   └── CommandFailed           a write or its read-back went wrong (ack `failed`)
    ├── AuditError                  the audit log cannot be written or does not verify
    └── DeliveryError               the outbox / MQTT side (agent-delivery's branch)
        ├── OutboxError             the SQLite outbox cannot store or read
        └── LinkError               the MQTT link is down or refused us

Callers react by branch: a ConfigError stops start-up with its message; a DeviceError is retried by
the poller on its schedule and never stops polling of other devices; a CommandError becomes an ack.
"""

from __future__ import annotations

from collections.abc import Sequence


class AgentError(Exception):
    """Root of every error raised by `agent`."""

    reason: str = "agent"


class ConfigError(AgentError):
    """The site config is invalid; `problems` holds one "key.path: what is wrong" per problem."""

    reason = "config"

    def __init__(self, problems: Sequence[str], *, source: str = "") -> None:
        self.problems = tuple(problems)
        self.source = source
        head = f"{source}: " if source else ""
        if len(self.problems) == 1:
            super().__init__(f"{head}{self.problems[0]}")
        else:
            lines = "\n".join(f"  {p}" for p in self.problems)
            super().__init__(f"{head}{len(self.problems)} problems:\n{lines}")


class DeviceError(AgentError):
    reason = "device"


class DeviceTimeout(DeviceError):
    reason = "timeout"


class DeviceDisconnected(DeviceError):
    reason = "disconnected"


class DeviceException(DeviceError):
    """A Modbus exception response; `code` is the Modbus exception code (2 = illegal address)."""

    reason = "exception"

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class CommandError(AgentError):
    """A command not run as asked; `reason` is the short code sent in the ack."""

    reason = "command"

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class CommandRejected(CommandError):
    pass


class CommandFailed(CommandError):
    pass


class AuditError(AgentError):
    reason = "audit"


class DeliveryError(AgentError):
    reason = "delivery"


class OutboxError(DeliveryError):
    reason = "outbox"


class LinkError(DeliveryError):
    reason = "link"


__all__ = [
    "AgentError",
    "AuditError",
    "CommandError",
    "CommandFailed",
    "CommandRejected",
    "ConfigError",
    "DeliveryError",
    "DeviceDisconnected",
    "DeviceError",
    "DeviceException",
    "DeviceTimeout",
    "LinkError",
    "OutboxError",
]
