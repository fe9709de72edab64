"""`kill -9` of a running aggregator (`sitewatt-aggregator serve`) in the middle of ingest:
after a restart, every batch is stored exactly once — nothing lost, nothing duplicated."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from aggregator.identity import init_key, load_signer
from aggregator.sites import SiteRegistry
from aggregator.storage import open_storage
from protocols.clock import SystemClock
from protocols.types import Reading
from simulators.broker import Broker
from tests.aggregator.ingest_harness import poll
from tests.support.site_publisher import SitePublisher, make_readings

SITES = ("K1", "K2", "K3")
BATCHES = 150
PER_BATCH = 100


def _write_config(tmp: Path, broker: Broker) -> Path:
    conf = tmp / "agg.toml"
    conf.write_text(
        f"""
[broker]
host = "{broker.host}"
port = {broker.port}
client_id = "agg-kill-test"
[database]
path = "{tmp / "agg.db"}"
[keys]
key_file = "{tmp / "agg.key"}"
[ingest]
log_interval_s = 60
"""
    )
    return conf


class Aggregator:
    """`sitewatt-aggregator serve` as a child process we start and kill by pid."""

    def __init__(self, conf: Path, log: Path) -> None:
        self.conf, self.log = conf, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        exe = Path(sys.executable).parent / "sitewatt-aggregator"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [str(exe), "serve", "--config", str(self.conf), "--no-http"],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            return -9


@pytest.fixture
def aggregator(tmp_path: Path, mosquitto: Broker) -> Iterator[Aggregator]:
    conf = _write_config(tmp_path, mosquitto)
    init_key(tmp_path / "agg.key")
    agg = Aggregator(conf, tmp_path / "aggregator.log")
    try:
        yield agg
    finally:
        agg.stop()


def test_kill_9_during_ingest_loses_and_duplicates_nothing(
    tmp_path: Path, mosquitto: Broker, aggregator: Aggregator
) -> None:
    agg_key = load_signer(tmp_path / "agg.key").public_key
    pubs = [
        SitePublisher(s, host=mosquitto.host, port=mosquitto.port, aggregator_key=agg_key)
        for s in SITES
    ]
    storage = open_storage(tmp_path / "agg.db")
    registry = SiteRegistry(storage, SystemClock())
    for p in pubs:
        registry.enrol(p.site, p.public_key_hex)
    storage.close()
    for p in pubs:
        p.connect()

    aggregator.start()
    assert pubs[0].wait_for(lambda: any(s.online for s in pubs[0].aggregator_states), 20), (
        aggregator.log.read_text()
    )
    t0 = int(time.time() * 1000) - 3_600_000
    sent: dict[str, list[Reading]] = {p.site: [] for p in pubs}
    for p in pubs:
        for seq in range(1, BATCHES + 1):
            sent[p.site] += make_readings(PER_BATCH, t0 + seq * 10_000, points=200)

    def publish(p: SitePublisher) -> None:
        for seq in range(1, BATCHES + 1):
            rs = sent[p.site][(seq - 1) * PER_BATCH : seq * PER_BATCH]
            p.send_batch(p.batch(seq, rs))
            if seq % 10 == 0:
                time.sleep(0.01)  # pace like a site, so the kill lands mid-stream

    threads = [threading.Thread(target=publish, args=(p,)) for p in pubs]
    for th in threads:
        th.start()
    try:
        # kill once a part, not all, of the stream is receipted
        assert poll(lambda: sum(len(p.receipts) for p in pubs) >= BATCHES // 2, 30)
        aggregator.kill()
        killed_at = sum(len(p.receipts) for p in pubs)
    finally:
        for th in threads:
            th.join(30)
    assert killed_at < len(SITES) * BATCHES, "the kill came too late to test anything"

    aggregator.start()

    def all_receipted() -> bool:
        return all(len(p.receipts) == BATCHES for p in pubs)

    deadline = time.monotonic() + 40
    while not all_receipted() and time.monotonic() < deadline:
        # what an agent does: re-send, byte for byte, whatever was not receipted
        if poll(all_receipted, 2.0):
            break
        for p in pubs:
            p.resend_unreceipted()
    assert all_receipted(), {p.site: len(p.receipts) for p in pubs}
    assert aggregator.stop() == 0
    for p in pubs:
        p.close()

    storage = open_storage(tmp_path / "agg.db")
    try:
        for site in SITES:
            assert sorted(storage.batch_seqs(site)) == list(range(1, BATCHES + 1))
            assert storage.reading_count(site) == BATCHES * PER_BATCH
            got = {
                (r.t, r.device, r.point, r.value)
                for d, pt in storage.series(site)
                for r in storage.readings(site, d, pt, 0, 2**62, limit=10**6)
            }
            assert got == {(r.t, r.device, r.point, r.value) for r in sent[site]}
            # rollups repaired after the kill: every good numeric reading counted once
            n_rolled = sum(
                row.n
                for d, pt in storage.series(site)
                for row in storage.rollups(site, d, pt, 0, 2**62, limit=10**6)
            )
            assert n_rolled == sum(1 for r in sent[site] if r.value is not None)
    finally:
        storage.close()
