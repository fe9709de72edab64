"""Ingest against a real mosquitto: verified exactly-once storage, receipts, rejects by reason,
historical vs live, presence, the aggregator's own state, and command acks."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from aggregator.services import Services
from protocols import envelope, messages
from protocols.keys import generate_key
from protocols.types import Reading
from simulators.broker import Broker
from tests.aggregator.ingest_harness import make_config, poll, publisher, running
from tests.support.site_publisher import SitePublisher, make_readings


def _now() -> int:
    return int(time.time() * 1000)


def _stored(services: Services, site: str) -> set[tuple[int, str, str, object, int]]:
    out: set[tuple[int, str, str, object, int]] = set()
    storage = services.storage
    for device, point in storage.series(site):
        for r in storage.readings(site, device, point, 0, 2**62, limit=1_000_000):
            out.add((r.t, r.device, r.point, r.value, int(r.quality)))
    return out


def test_batches_stored_exactly_once_with_receipts(tmp_path: Path, mosquitto: Broker) -> None:
    with running(make_config(tmp_path, mosquitto)) as svc:
        pubs = [publisher(svc, mosquitto, f"S{i}") for i in range(2)]
        try:
            t0 = _now() - 60_000
            sent: dict[str, list[Reading]] = {p.site: [] for p in pubs}
            for p in pubs:
                for seq in range(1, 21):
                    rs = make_readings(100, t0 + seq * 1000 + hash(p.site) % 7)
                    sent[p.site] += rs
                    p.send_batch(p.batch(seq, rs))
            for p in pubs:
                assert p.wait_receipts(range(1, 21), 15), f"{p.site} receipts {len(p.receipts)}"
                assert p.bad_receipts == 0
                want = {(r.t, r.device, r.point, r.value, int(r.quality)) for r in sent[p.site]}
                got = _stored(svc, p.site)
                assert got == want
                # bools come back as bools, not 1.0/0.0
                assert any(type(v) is bool for _, _, _, v, _ in got)
            assert svc.storage.reading_count() == 4000
            ingest = svc.ingest
            assert ingest is not None
            assert ingest.stats.batches_stored == 40 and ingest.stats.duplicates == 0

            # the publishers lose every receipt and re-send everything: receipted again,
            # stored once
            for p in pubs:
                p.receipts.clear()
            for p in pubs:
                for seq in range(1, 21):
                    p.send_batch(p.batch(seq, make_readings(5, t0)))  # same seq, other content
                assert p.wait_receipts(range(1, 21), 15)
            assert poll(lambda: ingest.stats.duplicates == 40)
            assert svc.storage.reading_count() == 4000
            assert svc.storage.batch_count() == 40
            # Our own retained aggregator state comes back on `+/state`: never a reject.
            assert sum(ingest.stats.rejected.values()) == 0, ingest.stats.rejected
        finally:
            for p in pubs:
                p.close()


def test_bad_messages_rejected_by_reason_and_never_stored(
    tmp_path: Path, mosquitto: Broker
) -> None:
    with running(make_config(tmp_path, mosquitto)) as svc:
        a = publisher(svc, mosquitto, "A")
        b = publisher(svc, mosquitto, "B")
        stranger = SitePublisher("A", host=mosquitto.host, port=mosquitto.port).connect(
            subscribe=False
        )
        revoked_key = generate_key()
        svc.registry.add_key("A", envelope.Signer(revoked_key).public_key.public_bytes_raw().hex())
        kid = envelope.Signer(revoked_key).kid.hex()
        svc.registry.revoke("A", kid)
        svc.keys_changed()
        ingest = svc.ingest
        assert ingest is not None
        try:
            t = _now()
            rs = make_readings(10, t - 5000)
            # a good one first, so a replay of it is a duplicate
            a.publish_message(a.batch(1, rs))
            assert a.wait_receipts([1])
            topic_a, topic_b = a.topics.telemetry("A"), a.topics.telemetry("B")

            good = a.seal(a.batch(2, rs), topic_a)
            tampered = bytearray(good)
            tampered[len(tampered) // 2] ^= 0x01
            a.publish_raw(topic_a, bytes(tampered))  # bad_signature (or malformed)
            a.publish_raw(topic_a, good[:-64] + bytes(64))  # signature zeroed: bad_signature
            a.publish_raw(topic_b, a.seal(a.batch(3, rs), topic_a))  # moved: bad_signature
            # A's key signing (correctly) for B's topic and payload: wrong_topic
            a.publish_raw(topic_b, a.seal(a.batch(4, rs, site="B"), topic_b))
            # B's own topic, payload claiming to be A: wrong_topic
            b.publish_raw(topic_b, b.seal(b.batch(5, rs, site="A"), topic_b))
            stranger.publish_message(stranger.batch(6, rs))  # unknown_kid
            revoked = SitePublisher("A", host=mosquitto.host, port=mosquitto.port, key=revoked_key)
            revoked.connect(subscribe=False)
            revoked.publish_message(revoked.batch(7, rs))  # revoked
            revoked.close()
            a.publish_raw(topic_a, b"\x00garbage")  # malformed
            a.publish_message(a.batch(8, rs, sent=t - 40 * 86_400_000))  # stale (too old)
            a.publish_message(a.batch(9, rs, sent=t + 3_600_000))  # stale (future)
            a.publish_message(messages.Receipt("A", (1,), t))  # wrong_topic (a receipt)
            a.publish_raw(topic_a, a.seal(a.batch(1, rs), topic_a))  # replay: duplicate
            expected_in = 1 + 12
            assert poll(lambda: ingest.stats.messages_in >= expected_in, 10)
            rej = ingest.stats.rejected
            assert rej["bad_signature"] + rej["malformed"] == 4
            assert rej["bad_signature"] >= 2
            assert rej["wrong_topic"] == 3
            assert rej["unknown_kid"] == 1
            assert rej["revoked"] == 1
            assert rej["stale"] == 2
            assert ingest.stats.duplicates == 1
            assert svc.storage.batch_seqs("A") == [1]
            assert svc.storage.batch_seqs("B") == []
            assert svc.storage.reading_count() == 10
            metrics = svc.metrics.exposition().decode()
            assert 'messages_rejected_total{reason="revoked"} 1.0' in metrics
        finally:
            for p in (a, b, stranger):
                p.close()


def test_historical_batches_do_not_overwrite_live_state(tmp_path: Path, mosquitto: Broker) -> None:
    with running(make_config(tmp_path, mosquitto)) as svc:
        p = publisher(svc, mosquitto, "S1")
        try:
            t = _now()
            p.publish_message(p.batch(10, [Reading(t - 1000, "bat", "soc", 80.0)]))
            p.publish_message(p.batch(3, [Reading(t - 90_000, "bat", "soc", 99.0)], hist=True))
            assert p.wait_receipts([3, 10])
            latest = svc.storage.latest("S1")[("bat", "soc")]
            assert (latest.t, latest.value) == (t - 1000, 80.0)
            assert len(svc.storage.readings("S1", "bat", "soc", 0, 2**62)) == 2
            p.publish_message(p.batch(11, [Reading(t, "bat", "soc", 79.5)]))
            assert p.wait_receipts([11])
            assert svc.storage.latest("S1")[("bat", "soc")].value == 79.5
            # a data-loss report is stored and receipted like a batch
            p.publish_message(messages.DataLoss("S1", "boot-1", 12, t, 500, t - 9000, t - 8000))
            assert p.wait_receipts([12])
            assert [loss.count for loss in svc.storage.losses("S1")] == [500]
        finally:
            p.close()


def test_presence_and_aggregator_state(tmp_path: Path, mosquitto: Broker) -> None:
    cfg = make_config(tmp_path, mosquitto)
    agg_pub = envelope.Signer(
        __import__("aggregator.identity", fromlist=["x"]).load_signer(cfg.keys.key_file).key
    ).public_key
    watcher = SitePublisher(
        "W", host=mosquitto.host, port=mosquitto.port, aggregator_key=agg_pub
    ).connect()
    try:
        with running(cfg) as svc:
            assert watcher.wait_for(lambda: any(s.online for s in watcher.aggregator_states), 10), (
                "no signed online state"
            )
            p = publisher(svc, mosquitto, "S1")
            try:
                p.birth(devices={"bat": "battery_x"})
                assert poll(lambda: svc.storage.site_state("S1").online)
                assert svc.storage.site_state("S1").devices == {"bat": "battery_x"}
                # a death of another boot is ignored; this boot's death takes the site offline
                other = messages.SiteState("S1", False, "old-boot", "test", _now(), {})
                p.publish_message(other, p.topics.state("S1"))
                time.sleep(0)  # (ordering below is by poll, not by sleep)
                p.birth(online=False, devices={})
                assert poll(lambda: not svc.storage.site_state("S1").online)
                ingest = svc.ingest
                assert ingest is not None
                assert ingest.stats.states == 3
            finally:
                p.close()
        # clean shutdown published the retained, signed offline state
        assert watcher.wait_for(lambda: not watcher.aggregator_states[-1].online, 10)
    finally:
        watcher.close()
    late = SitePublisher("L", host=mosquitto.host, port=mosquitto.port, aggregator_key=agg_pub)
    late.connect()
    try:
        assert late.wait_for(lambda: bool(late.aggregator_states), 10)
        assert late.aggregator_states[-1].online is False  # retained
    finally:
        late.close()


async def test_command_sent_signed_and_ack_recorded(tmp_path: Path, mosquitto: Broker) -> None:
    with running(make_config(tmp_path, mosquitto, commands={"expires_s": 90})) as svc:
        p = publisher(svc, mosquitto, "S1", auto_ack=True)
        try:
            assert svc.commands is not None
            rec = svc.commands.send_command(
                "S1", "ac.setpoint", {"setpoint_c": 27.0}, 600, "op@test"
            )
            assert rec.seq == 1 and rec.status == "sent" and rec.sent_ms is not None
            done = await svc.commands.wait_ack(rec.id, 10)
            assert done.status == "applied"
            assert done.readback == {"x.setpoint_c": 27.0}
            assert done.rtt_ms is not None and 0 <= done.rtt_ms < 5000
            (cmd,) = p.commands
            assert (cmd.seq, cmd.action, cmd.lease_s) == (1, messages.Action.AC_SETPOINT, 600)
            assert cmd.expires - cmd.issued == 90_000  # [commands] expires_s
            second = svc.commands.send_command("S1", "site.wake", {}, 60, "op@test")
            assert second.seq == 2
            await svc.commands.wait_ack(second.id, 10)
            with pytest.raises(Exception, match="unknown action"):
                svc.commands.send_command("S1", "site.explode", {}, 60, "op")
            with pytest.raises(Exception, match="no site"):
                svc.commands.send_command("S9", "site.wake", {}, 60, "op")
            hist = svc.storage.command_history("S1")
            assert [c.seq for c in hist] == [2, 1] and all(c.status == "applied" for c in hist)
        finally:
            p.close()


def test_batch_and_its_copy_in_one_group_count_once(tmp_path: Path, mosquitto: Broker) -> None:
    # A long group window puts a batch and its redelivered copy in the same transaction.
    with running(make_config(tmp_path, mosquitto, ingest={"group_ms": 2000})) as svc:
        ingest = svc.ingest
        assert ingest is not None
        with publisher(svc, mosquitto, "S1") as p:
            batch = p.batch(1, make_readings(10, _now() - 1000))
            p.send_batch(batch)
            p.send_batch(batch)
            assert p.wait_receipts([1], 15)
            assert poll(lambda: ingest.stats.batches_stored + ingest.stats.duplicates == 2)
            assert ingest.stats.groups == 1
            assert (ingest.stats.batches_stored, ingest.stats.duplicates) == (1, 1)
            assert ingest.stats.readings_stored == 10 == svc.storage.reading_count()
