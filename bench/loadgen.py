"""A telemetry load generator for bench_ingest: many sites' pre-signed batches through MQTT.

Run as a subprocess, driven line by line on stdin, answering each command with one JSON line:

    ready                       (printed once: every batch is signed, the client is connected)
    warm                        one batch per site (creates their series); waits for receipts
    burst                       the next burst set, published as fast as paho goes
    rate <batches/s> <seconds>  the next paced set, at a steady rate
    quit

Signing happens before `ready`, so what is measured is the aggregator, not the generator. Each
publish's time is noted and each receipt's arrival, so the lag reported is what an agent sees:
publish → verified, stored, committed, receipted (the receipt's signature is not checked here).

    python -m bench.loadgen --port P --keys keys.json [--per-batch 100] ...
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import cbor2
import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion

from bench.common import percentile, site_readings
from protocols import messages
from protocols.envelope import Signer
from protocols.topics import DEFAULT_PREFIX, TopicKind, Topics

Key = tuple[str, int]


class Gen:
    def __init__(self, a: argparse.Namespace) -> None:
        keys = json.loads(Path(a.keys).read_text())
        self.topics = Topics(a.prefix)
        self.signers = {
            s: Signer(Ed25519PrivateKey.from_private_bytes(bytes.fromhex(h)))
            for s, h in keys.items()
        }
        self.sites = sorted(self.signers)
        self.per_batch = a.per_batch
        self.template = site_readings(a.per_batch)
        self.seq_base = a.seq_base
        self.seq = dict.fromkeys(self.sites, a.seq_base)
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.published: dict[Key, float] = {}
        self.receipted: dict[Key, float] = {}
        # Readings start `start_ago_s` back; a site's batches follow each other by the span of one
        # batch (so no two share a point and time, which storage would keep only once).
        self.sent = int(time.time() * 1000)
        t0 = self.sent - int(a.start_ago_s * 1000)
        self.step_ms = self.template[-1].t - self.template[0].t + 5000
        self.warm = self._sign(len(self.sites), t0)
        self.bursts = [
            self._sign(a.burst_batches, t0, dup_share=a.dup_share) for _ in range(a.bursts)
        ]
        self.rates = [self._sign(n, t0) for n in a.rate_batches]
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"bench-loadgen-{a.port}", protocol=mqtt.MQTTv311
        )
        c.max_inflight_messages_set(a.inflight)
        c.max_queued_messages_set(0)
        c.on_message = self._on_receipt
        c.connect("127.0.0.1", a.port, 60)
        c.subscribe(self.topics.all_sites(TopicKind.RECEIPT), qos=1)
        c.loop_start()
        self.client = c

    def _sign(
        self, n: int, t0: int, *, dup_share: float = 0.0
    ) -> list[tuple[Key, str, bytes, bool]]:
        """`n` sealed batches round-robin over the sites (+ `dup_share` of them sent twice)."""
        out: list[tuple[Key, str, bytes, bool]] = []
        base = self.template
        for i in range(n):
            site = self.sites[i % len(self.sites)]
            self.seq[site] += 1
            seq = self.seq[site]
            t = t0 + (seq - self.seq_base) * self.step_ms
            rs = tuple(r._replace(t=t + (r.t - base[0].t)) for r in base)
            batch = messages.TelemetryBatch(site, "loadgen", seq, self.sent, rs)
            topic = self.topics.telemetry(site)
            body = self.signers[site].seal_bytes(messages.encode(batch), topic)
            out.append(((site, seq), topic, body, False))
        if dup_share > 0:
            step = max(1, round(1 / dup_share))
            dups = [(k, tp, b, True) for k, tp, b, _ in out[::step]]
            # each copy follows its original a little later, as a redelivery would
            merged: list[tuple[Key, str, bytes, bool]] = []
            di = 0
            for j, item in enumerate(out):
                merged.append(item)
                if j % step == step - 1 and di < len(dups):
                    merged.append(dups[di])
                    di += 1
            out = merged + dups[di:]
        return out

    def _on_receipt(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.perf_counter()
        try:
            payload = cbor2.loads(cbor2.loads(msg.payload).value[2])
            site, seqs = payload["site"], payload["seqs"]
        except Exception:
            return
        with self.cond:
            for s in seqs:
                self.receipted.setdefault((site, s), now)
            self.cond.notify_all()

    def _wait(self, keys: set[Key], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not keys.issubset(self.receipted):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(min(left, 0.2))
        return True

    def send(self, items: list[tuple[Key, str, bytes, bool]], rate: float | None) -> dict[str, Any]:
        keys = {k for k, _, _, _ in items}
        t0 = time.perf_counter()
        for i, (k, topic, body, dup) in enumerate(items):
            if rate is not None:
                due = t0 + i / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            now = time.perf_counter()
            if not dup:
                self.published[k] = now
            self.client.publish(topic, body, qos=1)
        t_pub = time.perf_counter() - t0
        ok = self._wait(keys, timeout=max(120.0, 10 * t_pub))
        t_all = time.perf_counter() - t0
        with self.lock:
            lags = [
                (self.receipted[k] - self.published[k]) * 1000
                for k in keys
                if k in self.receipted and k in self.published
            ]
        n_dup = sum(1 for it in items if it[3])
        return {
            "messages": len(items),
            "batches": len(keys),
            "duplicates_sent": n_dup,
            "readings": len(keys) * self.per_batch,
            "publish_s": t_pub,
            "receipted_s": t_all,
            "all_receipted": ok,
            "lag_p50_ms": percentile(lags, 50),
            "lag_p99_ms": percentile(lags, 99),
            "lag_max_ms": max(lags) if lags else float("nan"),
        }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--keys", type=Path, required=True, help="JSON {site: private key hex}")
    p.add_argument("--prefix", default=DEFAULT_PREFIX)
    p.add_argument("--per-batch", type=int, default=100)
    p.add_argument("--burst-batches", type=int, default=10_000)
    p.add_argument("--bursts", type=int, default=3)
    p.add_argument("--dup-share", type=float, default=0.05)
    p.add_argument("--rate-batches", type=int, nargs="*", default=[])
    p.add_argument("--inflight", type=int, default=1000)
    p.add_argument("--start-ago-s", type=float, default=0.0, help="readings start this far back")
    p.add_argument(
        "--seq-base", type=int, default=0, help="first seq - 1 (a second generator on one database)"
    )
    a = p.parse_args()
    gen = Gen(a)
    print("ready", flush=True)
    bursts = iter(gen.bursts)
    rates = iter(gen.rates)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "warm":
            out = gen.send(gen.warm, None)
        elif cmd[0] == "burst":
            out = gen.send(next(bursts), None)
        elif cmd[0] == "rate":
            out = gen.send(next(rates), float(cmd[1]))
        elif cmd[0] == "quit":
            break
        else:
            out = {"error": f"unknown command {cmd[0]!r}"}
        print(json.dumps(out), flush=True)
    gen.client.disconnect()
    gen.client.loop_stop()


if __name__ == "__main__":
    main()
