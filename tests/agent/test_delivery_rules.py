"""Pure delivery rules: forming, the in-flight window, retries, the gate and its jitter."""

from __future__ import annotations

import pytest

from agent.delivery_rules import (
    DeliveryPolicy,
    Gate,
    gate_update,
    historical_before,
    jitter,
    next_deadline,
    reconnect_delay,
    should_form,
    to_send,
)

P = DeliveryPolicy(
    batch_max_readings=100, batch_max_age_s=5.0, window=3, receipt_timeout_s=10.0, jitter_max_s=30
)


@pytest.mark.parametrize(
    ("pending", "oldest", "loss", "unreceipted", "now", "expected"),
    [
        (0, None, False, 0, 100.0, False),  # nothing at all
        (99, 99.0, False, 0, 100.0, False),  # not full, not old
        (100, 99.0, False, 0, 100.0, True),  # full
        (5000, 99.0, False, 0, 100.0, True),  # backlog
        (1, 95.0, False, 0, 100.0, True),  # old enough
        (1, 95.1, False, 0, 100.0, False),  # just not old enough
        (0, None, True, 0, 100.0, True),  # a loss report to send
        (5000, 0.0, True, 3, 100.0, False),  # window full: the backlog waits as readings
        (5000, 0.0, False, 2, 100.0, True),
    ],
)
def test_should_form(
    pending: int, oldest: float | None, loss: bool, unreceipted: int, now: float, expected: bool
) -> None:
    got = should_form(
        P,
        pending=pending,
        oldest_pending_s=oldest,
        loss_pending=loss,
        unreceipted=unreceipted,
        now=now,
    )
    assert got is expected


@pytest.mark.parametrize(
    ("unreceipted", "sent_at", "now", "expected"),
    [
        ([], {}, 0.0, []),
        ([3, 1, 2], {}, 0.0, [1, 2, 3]),  # in seq order
        ([1, 2, 3, 4, 5], {}, 0.0, [1, 2, 3]),  # window of 3
        ([1, 2, 3, 4, 5], {1: 0.0, 2: 0.0}, 1.0, [3]),  # two in flight, one slot left
        ([1, 2, 3, 4], {1: 0.0, 2: 0.0, 3: 0.0}, 9.9, []),  # window full, none timed out
        ([1, 2, 3, 4], {1: 0.0, 2: 5.0, 3: 5.0}, 10.0, [1]),  # 1 timed out: resent, no new slot
        ([1, 2, 3, 4], {1: 0.0, 2: 0.0, 3: 0.0}, 10.0, [1, 2, 3]),  # all resent identically
        ([2, 4], {1: 0.0, 2: 0.0, 3: 0.0}, 1.0, [4]),  # 1 and 3 receipted meanwhile
    ],
)
def test_to_send(
    unreceipted: list[int], sent_at: dict[int, float], now: float, expected: list[int]
) -> None:
    assert to_send(P, unreceipted, sent_at, now) == expected


def test_next_deadline() -> None:
    assert next_deadline(P, oldest_pending_s=None, sent_at={}, now=1.0) is None
    assert next_deadline(P, oldest_pending_s=2.0, sent_at={}, now=1.0) == 7.0
    assert next_deadline(P, oldest_pending_s=2.0, sent_at={5: -5.0}, now=1.0) == 5.0
    assert next_deadline(P, oldest_pending_s=-100.0, sent_at={}, now=1.0) == 1.0  # overdue


def test_historical_before() -> None:
    assert historical_before(DeliveryPolicy(live_window_s=60), 1000.0) == 940.0


def test_gate_is_closed_until_link_and_aggregator_online() -> None:
    g = Gate()
    assert not g.is_open(0)
    g = gate_update(g, P, now=0, u=0.5, link_up=True)
    assert not g.is_open(1000)  # aggregator state unknown counts as offline
    g = gate_update(g, P, now=10, u=0.5, aggregator_online=False)
    assert not g.is_open(1000)
    g = gate_update(g, P, now=20, u=0.5, aggregator_online=True)
    assert g.open_at == 35.0  # 20 + 0.5 * 30
    assert not g.is_open(34.9) and g.is_open(35.0)


def test_gate_keeps_its_jitter_while_conditions_hold_and_closes_at_once() -> None:
    g = gate_update(Gate(), P, now=0, u=0.1, link_up=True, aggregator_online=True)
    assert g.open_at == 3.0
    g2 = gate_update(g, P, now=50, u=0.9, aggregator_online=True)  # a repeated online
    assert g2.open_at == 3.0
    g3 = gate_update(g2, P, now=60, u=0.9, link_up=False)
    assert g3.open_at is None and not g3.is_open(1e9)
    assert g3.aggregator_online is True  # kept: the retained state returns on reconnect anyway
    g4 = gate_update(g3, P, now=70, u=0.2, link_up=True)
    assert g4.open_at == 76.0  # a fresh jitter after the link returns
    g5 = gate_update(g4, P, now=80, u=0.2, aggregator_online=None)  # unknown again
    assert not g5.is_open(1e9)


@pytest.mark.parametrize(("u", "expected"), [(0.0, 0.0), (0.5, 15.0), (0.999, 29.97), (7, 30.0)])
def test_jitter_bounded(u: float, expected: float) -> None:
    assert jitter(P, u) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("attempt", "u", "expected"),
    [(0, 0.5, 0.0), (1, 1.0, 1.0), (2, 1.0, 2.0), (4, 1.0, 8.0), (10, 1.0, 60.0), (10, 0.0, 1.0)],
)
def test_reconnect_delay(attempt: int, u: float, expected: float) -> None:
    assert reconnect_delay(DeliveryPolicy(), attempt, u) == pytest.approx(expected)


@pytest.mark.parametrize(
    "kwargs",
    [{"batch_max_readings": 0}, {"window": 0}, {"receipt_timeout_s": 0}, {"jitter_max_s": -1}],
)
def test_policy_refuses_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        DeliveryPolicy(**kwargs)  # type: ignore[arg-type]
