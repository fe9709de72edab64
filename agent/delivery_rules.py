"""Pure delivery decisions: when to form a batch, what to (re)send, when publishing is allowed.

No I/O and no clock: every function takes the present time (`now`, seconds of the agent's clock)
and any randomness (`u`, a draw in [0, 1)) as arguments, so the rules are tested as tables and the
delivery task (agent.delivery) only carries them out.

- Forming: a batch is formed when enough readings are pending to fill one, when the oldest has
  waited `batch_max_age_s`, or when a data-loss report is pending — and only while there is room
  in the in-flight window, so a backlog stays in the readings table until it can be sent (and its
  batches are as full as they can be).
- Sending: batches are sent in seq order; at most `window` are unreceipted on the wire at once
  (many in flight, not stop-and-wait); one not receipted within `receipt_timeout_s` is sent again,
  byte for byte (the aggregator drops the copy and receipts it again).
- The gate (the primary-host rule): publish only while the link is up AND the aggregator's
  retained state says online — unknown counts as offline. Each time the gate opens, it waits a
  random jitter of up to `jitter_max_s` first, so a fleet whose broker comes back does not
  stampede the aggregator.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class DeliveryPolicy:
    """The knobs of delivery; defaults are the field's (see config/site.toml `[outbox]`)."""

    batch_max_readings: int = 1000
    batch_max_age_s: float = 5.0
    window: int = 32
    receipt_timeout_s: float = 60.0
    jitter_max_s: float = 30.0
    live_window_s: float = 60.0
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0

    def __post_init__(self) -> None:
        if self.batch_max_readings < 1:
            raise ValueError("batch_max_readings must be >= 1")
        if self.window < 1:
            raise ValueError("window must be >= 1")
        if min(self.batch_max_age_s, self.receipt_timeout_s, self.live_window_s) <= 0:
            raise ValueError("batch_max_age_s, receipt_timeout_s and live_window_s must be > 0")
        if self.jitter_max_s < 0 or self.reconnect_min_s < 0:
            raise ValueError("jitter_max_s and reconnect_min_s must be >= 0")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be >= reconnect_min_s")


def should_form(
    policy: DeliveryPolicy,
    *,
    pending: int,
    oldest_pending_s: float | None,
    loss_pending: bool,
    unreceipted: int,
    now: float,
) -> bool:
    """Whether to form a batch now from the pending readings (or the pending loss report).

    `oldest_pending_s` is the time (seconds) of the oldest pending reading; `unreceipted` the
    number of formed batches not yet receipted.
    """
    if unreceipted >= policy.window:
        return False
    if loss_pending:
        return True
    if pending <= 0:
        return False
    if pending >= policy.batch_max_readings:
        return True
    return oldest_pending_s is not None and now - oldest_pending_s >= policy.batch_max_age_s


def historical_before(policy: DeliveryPolicy, now: float) -> float:
    """Batches whose newest reading is older than this (seconds) are marked historical."""
    return now - policy.live_window_s


def to_send(
    policy: DeliveryPolicy,
    unreceipted: Iterable[int],
    sent_at: Mapping[int, float],
    now: float,
) -> list[int]:
    """The seqs to publish now, in order.

    `unreceipted` are the seqs held in the outbox (any order); `sent_at` maps the seqs published
    on the present connection to when. A seq never sent on this connection is sent if the
    window has room; one sent longer than `receipt_timeout_s` ago is sent again.
    """
    seqs = sorted(unreceipted)
    in_flight = sum(1 for s in seqs if s in sent_at)  # retries keep their slot
    room = policy.window - in_flight
    out: list[int] = []
    for s in seqs:
        at = sent_at.get(s)
        if at is None:
            if room > 0:
                out.append(s)
                room -= 1
        elif now - at >= policy.receipt_timeout_s:
            out.append(s)
    return out


def next_deadline(
    policy: DeliveryPolicy,
    *,
    oldest_pending_s: float | None,
    sent_at: Mapping[int, float],
    now: float,
) -> float | None:
    """The next time something falls due on its own (batch age, receipt timeout), or None."""
    due: list[float] = []
    if oldest_pending_s is not None:
        due.append(oldest_pending_s + policy.batch_max_age_s)
    if sent_at:
        due.append(min(sent_at.values()) + policy.receipt_timeout_s)
    if not due:
        return None
    return max(now, min(due))


@dataclass(frozen=True)
class Gate:
    """Whether publishing is allowed: the link, the aggregator's state, and the jitter.

    `aggregator_online` is None until its retained state has been received and verified.
    `open_at` is when the gate opens after its jitter (None while it is closed).
    """

    link_up: bool = False
    aggregator_online: bool | None = None
    open_at: float | None = None

    @property
    def wanted(self) -> bool:
        """The conditions for publishing hold (jitter aside)."""
        return self.link_up and self.aggregator_online is True

    def is_open(self, now: float) -> bool:
        return self.open_at is not None and now >= self.open_at


class _Keep:
    """Sentinel type: "leave the aggregator state as it is" (distinct from None = unknown)."""

    def __repr__(self) -> str:
        return "KEEP"


KEEP = _Keep()


def gate_update(
    gate: Gate,
    policy: DeliveryPolicy,
    *,
    now: float,
    u: float,
    link_up: bool | None = None,
    aggregator_online: bool | _Keep | None = KEEP,
) -> Gate:
    """The gate after a change of link or aggregator state.

    Pass only what changed (`aggregator_online=None` means "unknown"; leave it out to keep it).
    When the conditions go from unmet to met, the gate opens `u * jitter_max_s` later; when they
    stop holding it closes at once.
    """
    new = gate
    if link_up is not None:
        new = replace(new, link_up=link_up)
    if not isinstance(aggregator_online, _Keep):
        new = replace(new, aggregator_online=aggregator_online)
    if not new.wanted:
        return replace(new, open_at=None)
    if new.open_at is None:
        return replace(new, open_at=now + jitter(policy, u))
    return new


def jitter(policy: DeliveryPolicy, u: float) -> float:
    """The wait before draining, for a uniform draw `u` in [0, 1)."""
    return policy.jitter_max_s * min(max(u, 0.0), 1.0)


def reconnect_delay(policy: DeliveryPolicy, attempt: int, u: float) -> float:
    """Delay before reconnect attempt `attempt` (1 = first retry): exponential, capped, with
    "full jitter" (a uniform share of the cap) so that agents spread their retries."""
    if attempt <= 0:
        return 0.0
    cap = min(policy.reconnect_max_s, policy.reconnect_min_s * 2.0 ** min(attempt - 1, 60))
    return policy.reconnect_min_s + (cap - policy.reconnect_min_s) * min(max(u, 0.0), 1.0)


__all__ = [
    "KEEP",
    "DeliveryPolicy",
    "Gate",
    "gate_update",
    "historical_before",
    "jitter",
    "next_deadline",
    "reconnect_delay",
    "should_form",
    "to_send",
]
