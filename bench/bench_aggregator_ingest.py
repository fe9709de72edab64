"""Aggregator ingest throughput: verified, deduplicated, stored readings per second.

A backlog of signed telemetry batches from many sites is queued by a real mosquitto in the
aggregator's persistent session while it is offline; then ingest starts and drains it: verify
(COSE Ed25519, kid, topic, timestamps), decode, store (SQLite, one transaction per group), MQTT
ack after commit, one signed receipt per site per group. The figure is readings stored / wall
time from ingest start to the last commit. A second pass re-sends every batch: all duplicates,
receipted, none stored.

    .venv/bin/python -m bench.bench_aggregator_ingest [--sites 200] [--batches 3000] [--per 100]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from aggregator.config import config_from_dict
from aggregator.identity import init_key
from aggregator.service import build_services
from protocols import envelope, messages
from protocols.keys import generate_key, public_key_hex
from protocols.topics import Topics
from protocols.types import Reading
from simulators.broker import Broker


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sites", type=int, default=200)
    ap.add_argument("--batches", type=int, default=3000)
    ap.add_argument("--per", type=int, default=100, help="readings per batch")
    ap.add_argument("--no-alarms", action="store_true", help="without the alarm hook")
    args = ap.parse_args()
    topics = Topics()
    with tempfile.TemporaryDirectory() as tmp_s, Broker(workdir=Path(tmp_s) / "mq") as broker:
        tmp = Path(tmp_s)
        init_key(tmp / "agg.key")
        cfg = config_from_dict(
            {
                "broker": {"host": broker.host, "port": broker.port, "client_id": "bench-agg"},
                "database": {"path": str(tmp / "agg.db")},
                "keys": {"key_file": str(tmp / "agg.key")},
                "ingest": {"log_interval_s": 60},
            }
        )
        services = build_services(cfg)
        assert services.ingest is not None
        keys = {f"site{i:04d}": generate_key() for i in range(args.sites)}
        for site, key in keys.items():
            services.registry.enrol(site, public_key_hex(key))
        # create the aggregator's persistent session, then leave it offline
        services.ingest.start()
        assert services.ingest.wait_connected(10)
        services.ingest.stop()
        services.storage.close()

        now = int(time.time() * 1000)
        names = [(f"dev{p % 5}", f"point{p}") for p in range(150)]
        payloads: list[tuple[str, bytes]] = []
        signers = {site: envelope.Signer(k) for site, k in keys.items()}
        sites = list(keys)
        for i in range(args.batches):
            site = sites[i % len(sites)]
            seq = i // len(sites) + 1
            t = now - 600_000 + seq * 5000
            point_keys = [names[(seq * args.per + j) % len(names)] for j in range(args.per)]
            rs = tuple(Reading(t + j, d, p, float(j)) for j, (d, p) in enumerate(point_keys))
            batch = messages.TelemetryBatch(site, "b", seq, t, rs)
            topic = topics.telemetry(site)
            payloads.append((topic, signers[site].seal_bytes(messages.encode(batch), topic)))
        pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-pub")
        pub.max_inflight_messages_set(1000)
        pub.max_queued_messages_set(0)
        pub.connect(broker.host, broker.port)
        pub.loop_start()
        infos = [pub.publish(t, p, qos=1) for t, p in payloads]
        for info in infos:
            info.wait_for_publish(60)

        def drain(label: str, want_stored: int, want_dups: int) -> None:
            svc = build_services(cfg)
            ingest = svc.ingest
            assert ingest is not None
            if args.no_alarms:
                ingest.on_stored.clear()
            ingest.start()
            ingest.wait_connected(10)
            start = time.perf_counter()  # from the connection: startup is not ingest
            deadline = time.monotonic() + 300
            while (
                ingest.stats.batches_stored < want_stored or ingest.stats.duplicates < want_dups
            ) and time.monotonic() < deadline:
                time.sleep(0.005)
            elapsed = time.perf_counter() - start
            st = ingest.stats
            ingest.stop()
            n = svc.storage.reading_count()
            svc.storage.close()
            rate = (st.readings_stored or st.duplicates * args.per) / elapsed
            print(
                f"{label}: {st.batches_stored:,} batches stored, {st.duplicates:,} duplicates, "
                f"{st.readings_stored:,} readings stored ({n:,} in the database) in "
                f"{elapsed:.2f} s over {st.groups} groups: {rate:,.0f} readings/s, "
                f"{(st.batches_stored + st.duplicates) / elapsed:,.0f} messages/s, "
                f"{st.receipts_sent:,} receipts"
            )

        drain("backlog", args.batches, 0)
        infos = [pub.publish(t, p, qos=1) for t, p in payloads]
        for info in infos:
            info.wait_for_publish(60)
        drain("re-sent (all duplicates)", 0, args.batches)
        pub.disconnect()
        pub.loop_stop()
    print(
        f"({args.sites} sites, {args.batches} batches of {args.per} readings; "
        "one process, SQLite WAL, mosquitto on loopback)"
    )


if __name__ == "__main__":
    main()
