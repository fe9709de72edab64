"""MQTT topic names: `{prefix}/{site}/{kind}` and `{prefix}/aggregator/state`.

The topic is signed into every message (the envelope's external AAD), so building and parsing it
must be exact. Site ids are restricted to a safe charset so a site id can never be an MQTT wildcard
or add a topic level, and `aggregator` is reserved for the aggregator's own state topic.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

from protocols.errors import ConfigError, MessageError

DEFAULT_PREFIX = "sitewatt/v1"
AGGREGATOR = "aggregator"
SITE_ID_MAX = 64

_SITE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_PREFIX_LEVEL_RE = re.compile(r"[A-Za-z0-9._-]+")


class TopicKind(StrEnum):
    """The last level of a topic; `AGGREGATOR_STATE` is `{p}/aggregator/state`."""

    TELEMETRY = "telemetry"
    STATE = "state"
    RECEIPT = "receipt"
    CMD = "cmd"
    ACK = "ack"
    AGGREGATOR_STATE = "aggregator/state"


_SITE_KINDS = {k.value: k for k in TopicKind if k is not TopicKind.AGGREGATOR_STATE}


class ParsedTopic(NamedTuple):
    """A parsed topic: `site` is `AGGREGATOR` for the aggregator's state topic."""

    site: str
    kind: TopicKind


def site_id_problem(site: object) -> str | None:
    """Why `site` is not a valid site id, or None if it is one."""
    if not isinstance(site, str):
        return f"site id must be a string, got {type(site).__name__}"
    if not _SITE_RE.fullmatch(site):
        return (
            f"site id {site[:80]!r} must be 1-{SITE_ID_MAX} characters of A-Z a-z 0-9 . _ - "
            "starting with a letter or digit"
        )
    if site.casefold() == AGGREGATOR:
        return f"site id {site!r} is reserved"
    return None


def check_site_id(site: object) -> str:
    """`site` if it is a valid site id; MessageError otherwise."""
    problem = site_id_problem(site)
    if problem is not None:
        raise MessageError(problem)
    assert isinstance(site, str)
    return site


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic builder and parser for one prefix (default `sitewatt/v1`)."""

    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        levels = self.prefix.split("/")
        if not all(_PREFIX_LEVEL_RE.fullmatch(level) for level in levels):
            raise ConfigError(
                f"topic prefix {self.prefix!r}: levels must be non-empty A-Z a-z 0-9 . _ -"
            )

    def _site_topic(self, site: str, kind: TopicKind) -> str:
        return f"{self.prefix}/{check_site_id(site)}/{kind.value}"

    def telemetry(self, site: str) -> str:
        return self._site_topic(site, TopicKind.TELEMETRY)

    def state(self, site: str) -> str:
        return self._site_topic(site, TopicKind.STATE)

    def receipt(self, site: str) -> str:
        return self._site_topic(site, TopicKind.RECEIPT)

    def cmd(self, site: str) -> str:
        return self._site_topic(site, TopicKind.CMD)

    def ack(self, site: str) -> str:
        return self._site_topic(site, TopicKind.ACK)

    def aggregator_state(self) -> str:
        return f"{self.prefix}/{AGGREGATOR}/state"

    def topic(self, site: str, kind: TopicKind) -> str:
        """The topic of `kind` for `site` (`site` is ignored for AGGREGATOR_STATE)."""
        if kind is TopicKind.AGGREGATOR_STATE:
            return self.aggregator_state()
        return self._site_topic(site, kind)

    def all_sites(self, kind: TopicKind) -> str:
        """A subscription filter for `kind` of every site, e.g. `sitewatt/v1/+/telemetry`."""
        if kind is TopicKind.AGGREGATOR_STATE:
            return self.aggregator_state()
        return f"{self.prefix}/+/{kind.value}"

    def parse(self, topic: str) -> ParsedTopic:
        """Split a received topic into (site, kind); MessageError if it is not one of ours."""
        head = self.prefix + "/"
        if not isinstance(topic, str) or not topic.startswith(head):
            raise MessageError(f"topic {str(topic)[:120]!r} is not under {self.prefix!r}")
        rest = topic[len(head) :].split("/")
        if len(rest) != 2:
            raise MessageError(f"topic {topic[:120]!r} is not {self.prefix}/<site>/<kind>")
        site, last = rest
        if site == AGGREGATOR and last == "state":
            return ParsedTopic(AGGREGATOR, TopicKind.AGGREGATOR_STATE)
        kind = _SITE_KINDS.get(last)
        if kind is None:
            raise MessageError(f"topic {topic[:120]!r}: unknown kind {last[:40]!r}")
        return ParsedTopic(check_site_id(site), kind)


def shared_subscription(group: str, topic_filter: str) -> str:
    """An MQTT 5 shared subscription (`$share/group/filter`), for ingest spread over workers."""
    if not _PREFIX_LEVEL_RE.fullmatch(group):
        raise ConfigError(f"shared subscription group {group!r} must be A-Z a-z 0-9 . _ -")
    return f"$share/{group}/{topic_filter}"


DEFAULT_TOPICS = Topics()

__all__ = [
    "AGGREGATOR",
    "DEFAULT_PREFIX",
    "DEFAULT_TOPICS",
    "SITE_ID_MAX",
    "ParsedTopic",
    "TopicKind",
    "Topics",
    "check_site_id",
    "shared_subscription",
    "site_id_problem",
]
