"""An in-process aggregator (ingest + commands, no HTTP) on a test's mosquitto."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aggregator.config import AggregatorConfig, config_from_dict
from aggregator.identity import init_key, load_signer
from aggregator.service import build_services
from aggregator.services import Services
from simulators.broker import Broker
from tests.support.site_publisher import SitePublisher


def make_config(tmp: Path, broker: Broker, **sections: dict[str, Any]) -> AggregatorConfig:
    data: dict[str, Any] = {
        "broker": {"host": broker.host, "port": broker.port, "client_id": f"agg-{tmp.name}"},
        "database": {"path": str(tmp / "agg.db")},
        "keys": {"key_file": str(tmp / "agg.key")},
        "ingest": {"log_interval_s": 60},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    key = Path(data["keys"]["key_file"])
    if not key.exists():
        init_key(key)
    return config_from_dict(data)


def poll(pred: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return pred()


@contextmanager
def running(config: AggregatorConfig) -> Iterator[Services]:
    services = build_services(config)
    assert services.ingest is not None
    services.ingest.start()
    try:
        assert services.ingest.wait_connected(10), "ingest did not connect"
        yield services
    finally:
        services.ingest.stop()
        services.storage.close()


def publisher(
    services: Services, broker: Broker, site: str, *, enrol: bool = True, **kw: Any
) -> SitePublisher:
    agg_key = load_signer(services.config.keys.key_file).public_key
    pub = SitePublisher(
        site,
        host=broker.host,
        port=broker.port,
        aggregator_key=agg_key,
        prefix=services.config.broker.prefix,
        **kw,
    )
    if enrol:
        services.registry.enrol(site, pub.public_key_hex)
    return pub.connect()
