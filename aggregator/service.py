"""The running aggregator: ingest + HTTP API + periodic retention, until told to stop.

`build_services(config)` wires the parts; `run(config)` starts them, serves until SIGTERM/SIGINT
(or the `stop` event), then shuts down in order: HTTP first, then ingest (which publishes the
retained offline state and disconnects cleanly), then the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Iterator

import uvicorn

from aggregator.alarm_monitor import AlarmMonitor
from aggregator.commands import Commands
from aggregator.config import AggregatorConfig
from aggregator.control.loop import ControlLoop
from aggregator.control.settings import settings_from_config
from aggregator.errors import StorageError
from aggregator.identity import load_signer
from aggregator.ingest import Ingest
from aggregator.metrics import AggregatorMetrics
from aggregator.services import Services
from aggregator.sites import SiteRegistry
from aggregator.storage import open_configured
from protocols.clock import Clock, SystemClock, now_ms
from protocols.topics import Topics

log = logging.getLogger("sitewatt.aggregator")


def tune_gc() -> None:
    """Garbage-collector settings for the long-running aggregator process (`serve` calls it
    first; bench_ingest too, to measure the same process).

    Ingest makes a few container objects per message that live until its hooks have run, tens
    of milliseconds, so many reach the oldest generation; with CPython's default thresholds a
    full collection then ran about once a second at 100,000 readings/s, each scanning the
    whole heap (rollup accumulators, caches): 0.07 s of CPU per 100,000 readings. What startup
    built is frozen (never scanned again), and a full collection waits for 1,000 young-generation
    collections instead of 10: reference cycles are still collected, only later.
    """
    gc.freeze()
    gen0, gen1, _ = gc.get_threshold()
    gc.set_threshold(gen0, gen1, 1000)


def build_services(config: AggregatorConfig, *, clock: Clock | None = None) -> Services:
    """Open storage (PostgreSQL when `database.url` is set, else SQLite), load the signing key,
    and wire ingest, commands and the registry."""
    clock = clock or SystemClock()
    signer = load_signer(config.keys.key_file)
    storage = open_configured(config.database, config.retention)
    metrics = AggregatorMetrics()
    registry = SiteRegistry(storage, clock)
    ingest = Ingest(config, storage, registry, signer, clock=clock, metrics=metrics)
    commands = Commands(
        storage,
        signer,
        ingest,
        topics=Topics(config.broker.prefix),
        clock=clock,
        metrics=metrics,
        expires_s=config.commands.expires_s,
    )
    ingest.on_ack.append(commands.handle_ack)
    alarms = AlarmMonitor(storage, config=config.alarms, metrics=metrics, clock=clock)
    ingest.on_stored.append(alarms.on_stored)
    ingest.on_presence.append(lambda state: alarms.on_stored(state.site, (), state))
    ingest.on_loss.append(alarms.on_loss)
    return Services(storage, config, metrics, commands, ingest, clock, registry, alarms)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: `run` owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _http_server(services: Services) -> _Server:
    from aggregator.api import create_app  # the API package is optional at import time

    app = create_app(services)
    cfg = uvicorn.Config(
        app,
        host=services.config.http.host,
        port=services.config.http.port,
        log_level="warning",
        access_log=False,
        lifespan="on",
    )
    return _Server(cfg)


async def _retention_loop(services: Services) -> None:
    interval = services.config.retention.interval_s
    while True:
        try:
            deleted = await asyncio.to_thread(
                services.storage.apply_retention, now_ms(services.clock)
            )
            if any(deleted.values()):
                log.info("retention deleted %s", deleted)
        except StorageError as exc:
            log.error("retention failed: %s", exc)
        await asyncio.sleep(interval)


async def run(
    config: AggregatorConfig,
    *,
    stop: asyncio.Event | None = None,
    clock: Clock | None = None,
    http: bool = True,
    control: bool = True,
) -> None:
    """Run until `stop` is set or the process gets SIGTERM/SIGINT; shut down cleanly.

    `control=False` keeps the control loop off whatever the config says: with several ingest
    workers, one of them runs it."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    services = build_services(config, clock=clock)
    assert services.ingest is not None
    server: _Server | None = None
    tasks: list[asyncio.Task[None]] = []
    try:
        services.ingest.start()
        if http:
            server = _http_server(services)
            tasks.append(asyncio.create_task(server.serve(), name="http"))
        tasks.append(asyncio.create_task(_retention_loop(services), name="retention"))
        if services.alarms is not None:
            tasks.append(asyncio.create_task(services.alarms.run(), name="alarms"))
        if control and settings_from_config(config).enabled:  # aggregator.control
            services.control = ControlLoop(services)
            tasks.append(asyncio.create_task(services.control.run(), name="control"))
        log.info(
            "aggregator running: broker %s:%d, http %s:%d, database %s",
            config.broker.host,
            config.broker.port,
            config.http.host,
            config.http.port,
            config.database.describe(),
        )
        waiter = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for t in done:
            if t is not waiter and t.exception() is not None:
                log.error("%s stopped: %s", t.get_name(), t.exception())
        waiter.cancel()
    finally:
        if server is not None:
            server.should_exit = True
        for t in tasks:
            if t.get_name() != "http":
                t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.to_thread(services.ingest.stop)
        services.storage.close()
        for sig in installed:
            loop.remove_signal_handler(sig)
        log.info("aggregator stopped")


__all__ = ["build_services", "run", "tune_gc"]
