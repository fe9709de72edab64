"""`kill -9` the agent at random moments while it appends and publishes: nothing lost or doubled.

The agent side is `tests.support.delivery_driver` in a subprocess; reading i is a function of i,
and i comes from the outbox's persisted append counter, so "every reading taken" is exactly
reading(0 … appended_total-1), whatever moment the kills hit.
"""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from agent.outbox import read_stats
from protocols import envelope, messages
from protocols.topics import Topics
from simulators.broker import Broker
from tests.conftest import REPO
from tests.support.delivery_fixtures import SITE, Keys, Sniffer
from tests.support.receiver import Receiver

KILLS = 9


def start_driver(
    mosquitto: Broker, site_keys: Keys, db: Path, *extra: str
) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable,
        "-m",
        "tests.support.delivery_driver",
        "--db",
        str(db),
        "--key",
        str(site_keys.key_file),
        "--site",
        site_keys.site,
        "--aggregator-pub",
        site_keys.aggregator_pub_hex,
        "--port",
        str(mosquitto.port),
        *extra,
    ]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_ready(proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """The driver prints `ready` once its signal handlers are in place."""
    assert proc.stdout is not None
    readable, _, _ = select.select([proc.stdout], [], [], timeout)
    assert readable and proc.stdout.readline().strip() == b"ready", "driver never became ready"


def wait_until(cond: object, timeout: float, what: str) -> None:
    assert callable(cond)
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached in {timeout}s")
        time.sleep(0.02)


def test_kill9_loop_loses_and_duplicates_nothing(
    mosquitto: Broker, receiver: Receiver, site_keys: Keys, tmp_path: Path
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    db = tmp_path / "agent.db"
    state_topic = Topics().state(SITE)
    ring = envelope.Keyring([site_keys.site_key.public_key()])
    in_flight_at_kill = 0
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with Sniffer(mosquitto, [state_topic]) as sniff:
            for k in range(KILLS):
                proc = start_driver(mosquitto, site_keys, db)
                procs.append(proc)
                if k == 0:
                    # The first run must get going (birth seen), so the will can be checked.
                    wait_until(lambda: len(sniff.on(state_topic)) >= 1, 20, "birth")
                # A random moment: during start-up, mid-append, mid-batch, mid-receipt…
                time.sleep(rng.uniform(0.05, 1.2))
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
                if db.exists():
                    s = read_stats(db)
                    in_flight_at_kill += s.batches > 0
                if k == 0:
                    # kill -9 leaves no time for goodbyes: the broker publishes the signed will.
                    wait_until(lambda: len(sniff.on(state_topic)) >= 2, 10, "will")
                    payload, _ = sniff.on(state_topic)[-1]
                    death = messages.decode(envelope.unseal(payload, state_topic, ring).payload)
                    assert isinstance(death, messages.SiteState) and not death.online
            taken = read_stats(db).appended_total
            assert taken > 1000, f"only {taken} readings taken (seed {seed})"
            # Last run: no new readings, drain everything, then a clean stop.
            final = start_driver(mosquitto, site_keys, db, "--no-append")
            procs.append(final)
            receiver.wait_for(lambda r: r.stored_readings >= taken, 40)
            wait_until(lambda: read_stats(db).depth == 0, 20, "outbox empty (all receipted)")
            # The outbox may have been empty already: SIGTERM only once the handlers exist.
            wait_ready(final)
            final.send_signal(signal.SIGTERM)
            assert final.wait(15) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
            if p.stderr is not None:
                p.stderr.close()
    values = receiver.values(SITE)
    assert len(values) == taken, f"stored {len(values)} of {taken} (seed {seed})"
    assert sorted(values) == list(range(taken)), f"seed {seed}"
    stats = read_stats(db)
    assert stats.dropped_total == 0 and stats.batches == 0
    assert in_flight_at_kill >= 1, "no kill hit unreceipted batches: the test proved little"
    assert receiver.rejected == {}
    print(
        f"seed {seed}: {taken} readings, {receiver.stored_batches} batches, "
        f"{receiver.duplicates} duplicate copies dropped, {in_flight_at_kill} kills mid-flight"
    )
