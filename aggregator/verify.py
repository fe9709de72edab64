"""What ingest decides about each message, as pure functions: verify or reject (with the reason
it is counted under), and how a birth or death changes a site's presence.

No I/O and no clock: the caller passes the time. Rejection reasons:

    bad_signature   the signature does not verify (tampered bytes, or moved to another topic)
    unknown_kid     signed by a key no site has enrolled
    revoked         signed by a key that was revoked (or whose site is disabled)
    wrong_topic     a topic that is not ours, or a kid/payload of another site than the topic's,
                    or a message type that does not belong on that topic
    malformed       not a COSE_Sign1 of our profile, or a payload that does not decode
    stale           timestamps outside the accepted window (too old, or in the future)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import cbor2

from aggregator.sites import SiteKeyring
from aggregator.storage import SiteState
from protocols import messages
from protocols.envelope import HEADER_KID, unseal
from protocols.errors import (
    BadSignatureError,
    EnvelopeError,
    MessageError,
    UnknownKeyError,
)
from protocols.topics import TopicKind, Topics
from protocols.types import ReadingColumns

Reason = Literal["bad_signature", "unknown_kid", "revoked", "wrong_topic", "malformed", "stale"]
REASONS: tuple[Reason, ...] = (
    "bad_signature",
    "unknown_kid",
    "revoked",
    "wrong_topic",
    "malformed",
    "stale",
)

_ACCEPTED: dict[TopicKind, tuple[type[messages.Message], ...]] = {
    TopicKind.TELEMETRY: (messages.TelemetryBatch, messages.DataLoss),
    TopicKind.STATE: (messages.SiteState,),
    TopicKind.ACK: (messages.Ack,),
}


class Rejected(Exception):
    """A message ingest drops; `reason` is one of REASONS."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: Reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Window:
    """Accepted timestamps relative to `now_ms`: not older than `max_age_ms`, not more than
    `max_future_ms` ahead (site clocks drift; a site's historical backlog is old but bounded)."""

    now_ms: int
    max_age_ms: int
    max_future_ms: int

    def check(self, t_min: int, t_max: int, what: str, *, past: bool = True) -> None:
        if t_max > self.now_ms + self.max_future_ms:
            raise Rejected("stale", f"{what} {t_max} is ahead of our clock {self.now_ms}")
        if past and t_min < self.now_ms - self.max_age_ms:
            raise Rejected("stale", f"{what} {t_min} is older than the accepted window")


@dataclass(frozen=True, slots=True)
class Verified:
    site: str
    kind: TopicKind
    message: messages.Message
    kid: bytes


def verify_message(
    topic: str, payload: bytes, keyring: SiteKeyring, topics: Topics, window: Window
) -> Verified:
    """Verify one received message; raises Rejected with the reason to count it under."""
    try:
        parsed = topics.parse(topic)
    except MessageError as exc:
        raise Rejected("wrong_topic", str(exc)) from exc
    accepted = _ACCEPTED.get(parsed.kind)
    if accepted is None:
        raise Rejected("wrong_topic", f"ingest does not take {parsed.kind.value} messages")
    try:
        opened = unseal(payload, topic, keyring.active)
    except UnknownKeyError as exc:
        kid = _kid_of(payload)
        if kid is not None and kid in keyring.revoked:
            raise Rejected("revoked", f"kid {kid.hex()} is revoked") from exc
        raise Rejected("unknown_kid", str(exc)) from exc
    except BadSignatureError as exc:
        raise Rejected("bad_signature", str(exc)) from exc
    except EnvelopeError as exc:
        raise Rejected("malformed", str(exc)) from exc
    owner = keyring.site_of.get(opened.kid)
    if owner != parsed.site:
        raise Rejected(
            "wrong_topic", f"kid {opened.kid.hex()} belongs to {owner!r}, not {parsed.site!r}"
        )
    try:
        msg = messages.decode(opened.payload)
    except MessageError as exc:
        raise Rejected("malformed", str(exc)) from exc
    if not isinstance(msg, accepted):
        raise Rejected("wrong_topic", f"a {msg.TYPE} message on a {parsed.kind.value} topic")
    msg_site = getattr(msg, "site", None)
    if msg_site != parsed.site:
        raise Rejected("wrong_topic", f"payload site {msg_site!r} on {parsed.site!r}'s topic")
    _check_times(msg, window)
    return Verified(parsed.site, parsed.kind, msg, opened.kid)


def _kid_of(payload: bytes) -> bytes | None:
    """The kid in a message's protected header, without verifying (to tell revoked from
    unknown)."""
    try:
        obj = cbor2.loads(payload)
        header = cbor2.loads(obj.value[0])
        kid = header.get(HEADER_KID)
    except Exception:  # anything odd here is just "unknown"
        return None
    return kid if isinstance(kid, bytes) else None


def _check_times(msg: messages.Message, window: Window) -> None:
    if isinstance(msg, messages.TelemetryBatch):
        window.check(msg.sent, msg.sent, "sent")
        if msg.readings:
            ts = ReadingColumns.of(msg.readings).t
            window.check(min(ts), max(ts), "reading time")
    elif isinstance(msg, messages.DataLoss):
        window.check(msg.sent, msg.sent, "sent")
    elif isinstance(msg, messages.SiteState | messages.Ack):
        # a death is signed at connect time, possibly long ago: only the future is refused
        window.check(msg.t, msg.t, "t", past=False)


def apply_presence(
    current: SiteState, msg: messages.SiteState, received_ms: int
) -> SiteState | None:
    """The site's presence after a birth or death message, or None if it changes nothing.

    A birth older than the one we hold (a retained copy delivered again) is ignored; a death of
    another boot than the current online one is ignored (the broker published an old session's
    will after the new session had already announced itself).
    """
    if msg.online:
        if current.birth_ms is not None and msg.t < current.birth_ms:
            return None
        if current.online and current.boot == msg.boot and current.birth_ms == msg.t:
            return None
        return replace(
            current,
            online=True,
            boot=msg.boot,
            version=msg.version,
            devices=dict(msg.devices),
            birth_ms=msg.t,
            last_seen_ms=max(current.last_seen_ms or 0, received_ms),
        )
    if not current.online:
        return None
    if current.boot and msg.boot != current.boot:
        return None
    return replace(current, online=False, death_ms=received_ms)


__all__ = [
    "REASONS",
    "Reason",
    "Rejected",
    "Verified",
    "Window",
    "apply_presence",
    "verify_message",
]
