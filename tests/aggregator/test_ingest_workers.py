"""Two ingest workers on one broker and one PostgreSQL (`serve --worker`): a shared subscription
splits the batches between them, each is stored once and receipted, and a worker that stops
does not leave the aggregator marked offline while the other still runs."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from aggregator.config import AggregatorConfig, config_from_dict
from aggregator.errors import ConfigError
from aggregator.identity import load_signer
from simulators.broker import Broker
from tests.aggregator.ingest_harness import make_config, publisher, running
from tests.support.site_publisher import SitePublisher, make_readings
from tests.support.storage_fixtures import PostgresBackend


def shared(cfg: AggregatorConfig, **database: str) -> AggregatorConfig:
    """`cfg` with the broker's share group set (and `database` keys changed)."""
    data = cfg.model_dump(mode="json", exclude_none=True)
    data["broker"]["share_group"] = "ingest"
    data["database"].update(database)
    return config_from_dict(data)


def test_worker_needs_a_share_group(tmp_path: Path, mosquitto: Broker) -> None:
    cfg = make_config(tmp_path, mosquitto)
    with pytest.raises(ConfigError, match="share_group"):
        cfg.for_worker("2")
    shared_cfg = shared(cfg)
    with pytest.raises(ConfigError, match="--worker"):
        shared_cfg.for_worker("a/b")
    assert shared_cfg.for_worker("2").broker.client_id == f"{cfg.broker.client_id}-2"


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_two_workers_share_the_ingest_and_keep_the_aggregator_online(
    tmp_path: Path, mosquitto: Broker, backend: PostgresBackend
) -> None:
    base = shared(make_config(tmp_path, mosquitto), url=backend.url)
    agg_pub = load_signer(base.keys.key_file).public_key
    watcher = SitePublisher(
        "W", host=mosquitto.host, port=mosquitto.port, aggregator_key=agg_pub
    ).connect()
    try:
        with running(base.for_worker("1")) as a:
            with running(base.for_worker("2")) as b:
                pubs = [publisher(a, mosquitto, f"S{i}") for i in range(3)]
                b.keys_changed()  # enrolled through a's registry: b reloads before its next group
                try:
                    t0 = int(time.time() * 1000) - 60_000
                    for p in pubs:
                        for seq in range(1, 41):
                            p.send_batch(p.batch(seq, make_readings(50, t0 + seq * 1000)))
                    for p in pubs:
                        assert p.wait_receipts(range(1, 41), 30), f"{p.site}: {len(p.receipts)}"
                finally:
                    for p in pubs:
                        p.close()
                assert a.storage.batch_count() == 120
                assert a.storage.reading_count() == 120 * 50
                stats = [s.ingest.stats for s in (a, b) if s.ingest is not None]
                # both took a share, and together stored each batch once
                assert all(st.batches_stored > 0 for st in stats), [st.snapshot() for st in stats]
                assert sum(st.batches_stored for st in stats) == 120
                assert sum(st.duplicates for st in stats) == 0
                assert sum(sum(st.rejected.values()) for st in stats) == 0
                seen = len(watcher.aggregator_states)
            # b published the retained offline state as it stopped; a, still running, puts it
            # back online, so agents keep sending
            assert watcher.wait_for(
                lambda: (
                    any(not s.online for s in watcher.aggregator_states[seen:])
                    and watcher.aggregator_states[-1].online
                ),
                10,
            ), watcher.aggregator_states[seen:]
    finally:
        watcher.close()
    # a stopped last: now the aggregator is offline, and says so to new subscribers
    late = SitePublisher("L", host=mosquitto.host, port=mosquitto.port, aggregator_key=agg_pub)
    late.connect()
    try:
        assert late.wait_for(lambda: bool(late.aggregator_states), 10)
        assert late.aggregator_states[-1].online is False
    finally:
        late.close()
