"""Delivery end to end through a real mosquitto: outbox → Delivery → broker → receiver."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path

import pytest

from agent.delivery import Delivery
from agent.outbox import Outbox, OutboxLimits
from protocols import envelope, messages
from protocols.clock import SimClock, SystemClock
from protocols.keys import generate_key
from protocols.topics import Topics
from protocols.types import Quality, Reading
from simulators.broker import Broker
from tests.support.delivery_driver import reading
from tests.support.delivery_fixtures import (
    FAST,
    SITE,
    UNBOUNDED,
    FixedRandom,
    Keys,
    Sniffer,
    running,
    settings,
    until,
    wait_receiver,
)
from tests.support.receiver import Receiver

T = Topics()


def every_value_once(rx: Receiver, n: int) -> None:
    values = rx.values(SITE)
    assert len(values) == n, f"{len(values)} stored, {n} taken"
    assert sorted(values) == list(range(n))


async def test_every_reading_exactly_once(
    mosquitto: Broker, receiver: Receiver, site_keys: Keys, tmp_path: Path
) -> None:
    outbox = Outbox(tmp_path / "agent.db", limits=UNBOUNDED)
    delivery = Delivery(settings(mosquitto), site_keys.identity(), outbox, SystemClock())
    n = 0
    async with running(delivery):
        for _ in range(50):
            outbox.append([reading(i) for i in range(n, n + 97)])
            n += 97
            delivery.wake()
            await asyncio.sleep(0)  # let the delivery task interleave with the appends
        await wait_receiver(receiver, lambda r: r.stored_readings >= n, 20)
        await until(lambda: outbox.stats().depth == 0 and not outbox.batches(), 10, "receipts")
    every_value_once(receiver, n)
    assert delivery.counters.receipted_batches == receiver.stored_batches
    assert receiver.rejected == {}
    # Batches are big (≥ 100 readings) once the stream runs: one signature per batch.
    sizes = [row[0] for row in receiver.query("SELECT n FROM batches")]
    assert max(sizes) == FAST.batch_max_readings
    outbox.close()


async def test_birth_retained_and_signed_offline_on_clean_stop(
    mosquitto: Broker, receiver: Receiver, site_keys: Keys, tmp_path: Path
) -> None:
    outbox = Outbox(tmp_path / "agent.db", limits=UNBOUNDED)
    devices = {"bat1": "lfp-48v", "rect1": "rectifier"}
    delivery = Delivery(
        settings(mosquitto, devices=devices),
        site_keys.identity(),
        outbox,
        SystemClock(),
        boot="b00t",
    )
    ring = envelope.Keyring([site_keys.site_key.public_key()])
    topic = T.state(SITE)
    with Sniffer(mosquitto, [topic]) as sniff:
        async with running(delivery):
            await until(lambda: len(sniff.on(topic)) >= 1, 10, "birth")
        await until(lambda: len(sniff.on(topic)) >= 2, 10, "offline state")
        birth, death = (
            messages.decode(envelope.unseal(p, topic, ring).payload) for p, _ in sniff.on(topic)[:2]
        )
    assert isinstance(birth, messages.SiteState) and isinstance(death, messages.SiteState)
    assert birth.online and birth.boot == "b00t" and dict(birth.devices) == devices
    assert not death.online and death.boot == "b00t"
    # A newcomer sees the retained state: offline now.
    with Sniffer(mosquitto, [topic]) as late:
        await until(lambda: len(late.on(topic)) >= 1, 10, "retained state")
        payload, retained = late.on(topic)[0]
    state = messages.decode(envelope.unseal(payload, topic, ring).payload)
    assert retained and isinstance(state, messages.SiteState) and not state.online
    outbox.close()


async def test_aggregator_offline_means_no_publishing_then_drain_after_jitter(
    mosquitto: Broker, receiver: Receiver, site_keys: Keys, tmp_path: Path
) -> None:
    receiver.set_online(False)
    outbox = Outbox(tmp_path / "agent.db", limits=UNBOUNDED)
    policy = replace(FAST, jitter_max_s=1.0)
    delivery = Delivery(
        settings(mosquitto, policy),
        site_keys.identity(),
        outbox,
        SystemClock(),
        rng=FixedRandom(0.5),
    )
    seen: list[bool | None] = []
    delivery.add_aggregator_listener(seen.append)
    with Sniffer(mosquitto, [T.telemetry(SITE)]) as sniff:
        async with running(delivery):
            await until(lambda: delivery.aggregator_online is False, 10, "offline state seen")
            outbox.append([reading(i) for i in range(1000)])
            delivery.wake()
            # Batches would be due within 50 ms; for a whole second nothing may go out.
            await asyncio.sleep(1.0)
            assert sniff.on(T.telemetry(SITE)) == []
            assert outbox.stats().pending_readings == 1000 and outbox.batches() == []
            t_online = time.monotonic()
            receiver.set_online(True)
            await wait_receiver(receiver, lambda r: r.stored_readings >= 1000, 15)
            await until(lambda: outbox.stats().depth == 0 and not outbox.batches(), 10, "receipts")
    assert receiver.first_stored_at is not None
    first = receiver.first_stored_at - t_online
    # The fixed draw 0.5 × 1 s of jitter: not before, and not much after.
    assert 0.45 <= first <= 1.5, f"drained {first:.3f}s after the aggregator came back"
    every_value_once(receiver, 1000)
    assert seen[:2] == [False, True]
    outbox.close()


async def test_unreceipted_batches_are_resent_identically_after_restart(
    mosquitto: Broker, site_keys: Keys, tmp_path: Path
) -> None:
    """No receiver: the batches stay unreceipted, and a restarted agent sends the same bytes."""
    db = tmp_path / "agent.db"
    tel = T.telemetry(SITE)
    with Sniffer(mosquitto, [tel]) as sniff:
        state = messages.AggregatorState(online=True, t=1)
        signer = envelope.Signer(site_keys.aggregator_key)
        agg = T.aggregator_state()
        sniff.publish(agg, signer.seal_bytes(messages.encode(state), agg), retain=True)
        outbox = Outbox(db, limits=UNBOUNDED)
        outbox.append([reading(i) for i in range(450)])
        delivery = Delivery(settings(mosquitto), site_keys.identity(), outbox, SystemClock())
        async with running(delivery):
            await until(lambda: len(sniff.on(tel)) >= 3, 10, "first sends")
        outbox.close()
        first = {_seq(p): p for p, _ in sniff.on(tel)}
        assert len(first) == 3
        outbox = Outbox(db, limits=UNBOUNDED)
        assert [b.seq for b in outbox.batches()] == sorted(first)
        delivery = Delivery(settings(mosquitto), site_keys.identity(), outbox, SystemClock())
        n_before = len(sniff.on(tel))
        async with running(delivery):
            await until(lambda: len(sniff.on(tel)) >= n_before + 3, 10, "re-sends")
        again = [p for p, _ in sniff.on(tel)[n_before:]]
        outbox.close()
    assert {_seq(p): p for p in again} == first  # same seqs, same bytes


def _seq(payload: bytes) -> int:
    import cbor2

    inner = cbor2.loads(payload).value[2]
    return int(cbor2.loads(inner)["seq"])


async def test_forged_receipt_deletes_nothing(
    mosquitto: Broker, site_keys: Keys, tmp_path: Path
) -> None:
    tel, rec, agg = T.telemetry(SITE), T.receipt(SITE), T.aggregator_state()
    good = envelope.Signer(site_keys.aggregator_key)
    forger = envelope.Signer(generate_key())
    with Sniffer(mosquitto, [tel]) as sniff:
        online = messages.AggregatorState(online=True, t=1)
        sniff.publish(agg, good.seal_bytes(messages.encode(online), agg), retain=True)
        outbox = Outbox(tmp_path / "agent.db", limits=UNBOUNDED)
        outbox.append([reading(i) for i in range(10)])
        delivery = Delivery(settings(mosquitto), site_keys.identity(), outbox, SystemClock())
        async with running(delivery):
            await until(lambda: len(sniff.on(tel)) >= 1, 10, "a batch")
            seq = _seq(sniff.on(tel)[0][0])
            receipt = messages.Receipt(site=SITE, seqs=(seq,), t=2)
            other_site = messages.Receipt(site="site-b", seqs=(seq,), t=2)
            sniff.publish(rec, forger.seal_bytes(messages.encode(receipt), rec))
            sniff.publish(rec, good.seal_bytes(messages.encode(receipt), T.receipt("site-b")))
            sniff.publish(rec, good.seal_bytes(messages.encode(other_site), rec))
            await until(lambda: sum(delivery.counters.rejected.values()) == 3, 10, "rejections")
            assert outbox.batch(seq) is not None
            assert delivery.counters.rejected == {
                "unknown_kid": 1,
                "bad_signature": 1,
                "malformed": 1,
            }
            sniff.publish(rec, good.seal_bytes(messages.encode(receipt), rec))
            await until(lambda: outbox.batch(seq) is None, 10, "genuine receipt applied")
        outbox.close()


async def test_data_loss_is_reported_signed_and_counted(
    mosquitto: Broker, receiver: Receiver, site_keys: Keys, tmp_path: Path
) -> None:
    receiver.set_online(False)
    outbox = Outbox(
        tmp_path / "agent.db", limits=OutboxLimits(max_readings=500, max_bytes=None, max_age_s=None)
    )
    delivery = Delivery(settings(mosquitto), site_keys.identity(), outbox, SystemClock())
    async with running(delivery):
        await until(lambda: delivery.aggregator_online is False, 10, "offline state seen")
        for k in range(20):
            outbox.append([reading(i) for i in range(100 * k, 100 * k + 100)])
        assert outbox.stats().dropped_total == 1500
        receiver.set_online(True)
        await wait_receiver(
            receiver, lambda r: r.stored_readings >= 500 and r.stored_batches >= 4, 15
        )
        await until(lambda: outbox.stats().depth == 0 and not outbox.batches(), 10, "receipts")
    losses = receiver.losses(SITE)
    assert [(c, o, n) for _, c, o, n in losses] == [(1500, reading(0).t, reading(1499).t)]
    assert sorted(receiver.values(SITE)) == list(range(1500, 2000))
    # The loss record came first: its seq is below every batch of readings.
    first_batch = receiver.query("SELECT min(seq) FROM readings")[0][0]
    assert losses[0][0] < first_batch
    outbox.close()


async def test_commands_are_routed_to_the_handler(
    mosquitto: Broker, receiver: Receiver, site_keys: Keys, tmp_path: Path
) -> None:
    outbox = Outbox(tmp_path / "agent.db", limits=UNBOUNDED)
    delivery = Delivery(settings(mosquitto), site_keys.identity(), outbox, SystemClock())
    got: list[tuple[str, bytes]] = []

    async def handler(topic: str, payload: bytes) -> None:
        got.append((topic, payload))

    delivery.set_command_handler(handler)
    with Sniffer(mosquitto, [T.ack(SITE)]) as sniff:
        async with running(delivery):
            await until(lambda: delivery.publishing, 10, "connected and online")
            sniff.publish(T.cmd(SITE), b"opaque command bytes")
            await until(lambda: len(got) == 1, 10, "command routed")
            ack = messages.Ack(
                id="00000000-0000-4000-8000-000000000001",
                site=SITE,
                seq=1,
                status=messages.AckStatus.APPLIED,
                t=5,
            )
            await delivery.publish_signed(ack)
            await until(lambda: len(sniff.on(T.ack(SITE))) == 1, 10, "ack")
    assert got == [(T.cmd(SITE), b"opaque command bytes")]
    ring = envelope.Keyring([site_keys.site_key.public_key()])
    opened = envelope.unseal(sniff.on(T.ack(SITE))[0][0], T.ack(SITE), ring)
    assert messages.decode(opened.payload) == ack
    outbox.close()


@pytest.mark.parametrize("outage_s", [2.0, 20.0])
async def test_broker_outage_loses_and_duplicates_nothing(
    mosquitto: Broker, receiver: Receiver, site_keys: Keys, tmp_path: Path, outage_s: float
) -> None:
    outbox = Outbox(tmp_path / "agent.db", limits=UNBOUNDED)
    delivery = Delivery(settings(mosquitto), site_keys.identity(), outbox, SystemClock())
    n = 0

    async def produce(seconds: float) -> None:
        nonlocal n
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            outbox.append([reading(i) for i in range(n, n + 50)])
            n += 50
            delivery.wake()
            await asyncio.sleep(0.02)  # the poller's pace, not synchronisation

    async with running(delivery):
        await produce(1.0)
        await wait_receiver(receiver, lambda r: r.stored_readings > 0, 10)
        mosquitto.stop()
        await until(lambda: not delivery.connected, 10, "link loss noticed")
        await produce(outage_s)
        assert outbox.stats().depth > 0
        mosquitto.start()
        await produce(1.0)
        await wait_receiver(receiver, lambda r: r.stored_readings >= n, 30)
        await until(lambda: outbox.stats().depth == 0 and not outbox.batches(), 15, "receipts")
    every_value_once(receiver, n)
    assert delivery.counters.connects >= 2
    outbox.close()


async def test_backlog_batches_are_marked_historical(
    mosquitto: Broker, receiver: Receiver, site_keys: Keys, tmp_path: Path
) -> None:
    now = int(time.time() * 1000)
    outbox = Outbox(tmp_path / "agent.db", limits=UNBOUNDED)
    old = [Reading(now - 3_600_000 + i, "bat", "soc", i) for i in range(FAST.batch_max_readings)]
    outbox.append(old)
    outbox.append([Reading(now + i, "bat", "soc", 1000 + i) for i in range(10)])
    delivery = Delivery(settings(mosquitto), site_keys.identity(), outbox, SystemClock())
    async with running(delivery):
        await wait_receiver(receiver, lambda r: r.stored_readings >= len(old) + 10, 10)
    rows = receiver.query("SELECT n, hist FROM batches ORDER BY seq")
    assert rows == [(len(old), 1), (10, 0)]  # the hour-old batch fills history only
    outbox.close()


async def test_a_nan_value_does_not_poison_its_batch(
    mosquitto: Broker, receiver: Receiver, site_keys: Keys, tmp_path: Path
) -> None:
    outbox = Outbox(tmp_path / "agent.db", limits=UNBOUNDED)
    outbox.append(
        [
            Reading(1, "ac", "room_t", float("nan")),
            Reading(2, "ac", "room_t", float("inf")),
            Reading(3, "ac", "room_t", 24.5),
        ]
    )
    delivery = Delivery(settings(mosquitto), site_keys.identity(), outbox, SystemClock())
    async with running(delivery):
        await wait_receiver(receiver, lambda r: r.stored_readings >= 3, 10)
        await until(lambda: outbox.stats().depth == 0 and not outbox.batches(), 10, "receipt")
    rows = receiver.query("SELECT t, value, quality FROM readings ORDER BY t")
    bad = int(Quality.BAD_VALUE)
    assert rows == [(1, None, bad), (2, None, bad), (3, 24.5, 0)]
    outbox.close()


async def test_an_idle_delivery_at_144x_looks_at_most_every_wall_floor(
    mosquitto: Broker, receiver: Receiver, site_keys: Keys, tmp_path: Path
) -> None:
    """A 1 s idle tick is 7 ms of wall time at 144x: a fleet host of 250 agents spent half its
    CPU waking to find nothing to do. The unprompted look has a wall floor; a reading appended
    is still picked up at once (the wake), and delivered."""
    outbox = Outbox(tmp_path / "agent.db", limits=UNBOUNDED)
    floor = 0.2
    delivery = Delivery(
        settings(mosquitto, idle_min_wall_s=floor),
        site_keys.identity(),
        outbox,
        SimClock(time.time(), speed=144.0),
    )
    async with running(delivery):
        await until(lambda: delivery.publishing, 10, "gate open")
        first = delivery.counters.wakes
        t0 = time.monotonic()
        await until(lambda: delivery.counters.wakes >= first + 4, 10, "four looks")
        # At least three of them unprompted (one may be a late message's): was 4 in ~2 ms.
        assert time.monotonic() - t0 >= 3 * floor * 0.9
        outbox.append([reading(i) for i in range(5)])
        delivery.wake()
        await wait_receiver(receiver, lambda r: r.stored_readings >= 5, 10)
    every_value_once(receiver, 5)
    outbox.close()


async def test_appends_wake_the_pump_only_for_new_pending_or_a_full_batch(
    mosquitto: Broker, receiver: Receiver, site_keys: Keys, tmp_path: Path
) -> None:
    """While pending readings wait to come of age, more appends do not wake the pump (their
    deadline is the oldest one's); the first append does, and so does a full batch."""
    outbox = Outbox(tmp_path / "agent.db", limits=UNBOUNDED)
    policy = replace(FAST, batch_max_age_s=3.0, batch_max_readings=100)
    delivery = Delivery(settings(mosquitto, policy), site_keys.identity(), outbox, SystemClock())
    now_ms = int(time.time() * 1000)

    def fresh(i: int) -> Reading:  # taken now: due by age only 3 s from now
        return Reading(now_ms + i, f"d{i % 4}", "p", i, Quality.GOOD)

    async with running(delivery):
        await until(lambda: delivery.publishing, 10, "gate open")
        outbox.append([fresh(0)])
        before = delivery.counters.wakes
        delivery.appended(1)  # the first pending reading: a new age deadline
        await until(lambda: delivery.counters.wakes > before, 5, "woken by the first")
        woken = delivery.counters.wakes
        for i in range(1, 50):  # polls meanwhile: no wake each
            outbox.append([fresh(i)])
            delivery.appended(1)
            await asyncio.sleep(0)
        assert delivery.counters.wakes - woken <= 2  # (an idle tick may fall in)
        assert delivery.counters.batches_formed == 0
        outbox.append([fresh(i) for i in range(50, 100)])
        delivery.appended(50)  # a full batch: formed now, not at the age deadline
        t0 = time.monotonic()
        await wait_receiver(receiver, lambda r: r.stored_readings >= 100, 10)
        assert time.monotonic() - t0 < policy.batch_max_age_s
    every_value_once(receiver, 100)
    outbox.close()
