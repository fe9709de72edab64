"""Errors raised by the aggregator.

    AggregatorError                 root: anything the aggregator refuses or cannot do
    ├── ConfigError                 a config file or value that does not validate (names the key)
    ├── StorageError                the database failed or holds something unexpected
    │   └── SchemaError             the database's schema is newer than this code, or unreadable
    ├── SiteError                   a site-registry request that cannot be honoured
    │   ├── UnknownSiteError        no such site
    │   ├── SiteExistsError         enrolling a site twice
    │   └── SiteKeyError            a key that is malformed, already enrolled or unknown
    ├── CommandError                a command that cannot be sent (unknown site, not connected)
    │   └── AckTimeoutError         no ack arrived within the time given
    └── BrokerConfigError           a broker configuration that cannot be written

Callers react by branch: ConfigError and SchemaError stop start-up with their message; SiteError
and CommandError are the operator's mistake (the CLI prints them, the API answers 4xx); a
StorageError is logged and the message stays unacknowledged so the broker redelivers it.
"""

from __future__ import annotations


class AggregatorError(Exception):
    """Root of every error raised by `aggregator`."""


class ConfigError(AggregatorError):
    pass


class StorageError(AggregatorError):
    pass


class SchemaError(StorageError):
    pass


class SiteError(AggregatorError):
    pass


class UnknownSiteError(SiteError):
    pass


class SiteExistsError(SiteError):
    pass


class SiteKeyError(SiteError):
    pass


class CommandError(AggregatorError):
    pass


class AckTimeoutError(CommandError):
    pass


class BrokerConfigError(AggregatorError):
    pass


__all__ = [
    "AckTimeoutError",
    "AggregatorError",
    "BrokerConfigError",
    "CommandError",
    "ConfigError",
    "SchemaError",
    "SiteError",
    "SiteExistsError",
    "SiteKeyError",
    "StorageError",
    "UnknownSiteError",
]
