"""Browser-test fixtures: a real aggregator HTTP server on loopback and Debian's chromium.

The aggregator here is the real app (`aggregator.api.create_app`, dashboard mounted) on a real
uvicorn bound to a free 127.0.0.1 port, over a real SQLite database filled through
`Storage.store_batches` with sealed-batch records of a small fleet. Playwright's sync API drives
chromium; tests are plain functions (no event loop runs in their thread).
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from aggregator.api import ApiContext, create_app
from aggregator.api.server import ApiServer
from aggregator.commands import Commands
from aggregator.storage import (
    SiteInfo,
    SiteState,
    SqliteStorage,
    VerifiedBatch,
    open_storage,
)
from protocols.clock import ManualClock
from protocols.envelope import Signer
from protocols.keys import generate_key, kid_hex, public_key_hex
from protocols.types import Quality, Reading
from simulators.broker import Broker, mosquitto_available
from tests.browser.live_fleet import LiveFleet
from tests.support.aggregator_data import add_applied_peak_shave, add_role_tokens, api_get

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
MIN = 60_000
HOUR = 60 * MIN
HISTORY_MIN = 180  # three hours of one-minute polls per site


def _require_chromium() -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (make test does, as root)")


@dataclass
class SiteSpec:
    site: str
    name: str
    region: str
    online: bool
    load_a: float  # DC load current
    grid_w: float
    soc0: float
    comm_error_breaker: bool = False


FLEET = (
    SiteSpec("north-01", "Hilltop", "north", True, 70.0, 3200.0, 92.0),
    SiteSpec("east-02", "Harbour", "east", True, 55.0, 2600.0, 81.0, comm_error_breaker=True),
    SiteSpec("west-03", "Quarry", "west", False, 40.0, 1900.0, 64.0),
)


def site_readings(spec: SiteSpec, now_ms: int) -> list[VerifiedBatch]:
    """Three hours of one site, one batch of one poll per minute, with daily-ish variation."""
    batches = []
    start = now_ms - HISTORY_MIN * MIN
    for i in range(HISTORY_MIN):
        t = start + i * MIN
        wave = math.sin(i / 20)
        discharging = 60 <= i < 120  # an hour of peak shaving in the middle
        bat_a = -25.0 if discharging else (8.0 if i >= 120 else 0.5)
        rs = [
            Reading(t, "meter", "mains_present", True),
            Reading(t, "meter", "import_power", round(spec.grid_w + 300 * wave, 1)),
            Reading(t, "meter", "voltage", 229.5),
            Reading(t, "rect", "load_current", round(spec.load_a + 5 * wave, 2)),
            Reading(t, "rect", "dc_voltage", 53.5 if i % 7 else 53.4),
            Reading(t, "bat", "soc", round(spec.soc0 - (0.3 * (i - 60) if discharging else 0), 2)),
            Reading(t, "bat", "voltage", 52.1),
            Reading(t, "bat", "current", bat_a),
            Reading(t, "ac", "room_temp", round(25.5 + 0.5 * wave, 2)),
        ]
        bad = spec.comm_error_breaker and i >= HISTORY_MIN - 10
        q = Quality.COMM_ERROR if bad else Quality.GOOD
        rs.append(Reading(t, "brk", "ch1_current", None if bad else 12.5, q))
        batches.append(VerifiedBatch(spec.site, i + 1, "boot-1", t, t + 40, False, rs))
    return batches


def fill_fleet(storage: SqliteStorage, now_ms: int) -> None:
    """Enrol the fleet, store its batches, presence, an alarm or two and a past command."""
    for spec in FLEET:
        storage.add_site(
            SiteInfo(
                spec.site,
                spec.name,
                spec.region,
                "Asia/Shanghai",
                "shanghai-two-part",
                now_ms - 30 * 86_400_000,
            )
        )
        key = generate_key()
        storage.add_key(spec.site, public_key_hex(key), kid_hex(key), now_ms - 30 * 86_400_000)
        result = storage.store_batches(site_readings(spec, now_ms))
        assert len(result.stored) == HISTORY_MIN
        devices = {
            "meter": "meter",
            "rect": "rectifier",
            "bat": "battery",
            "ac": "aircon",
            "brk": "breaker",
        }
        last = now_ms - MIN if spec.online else now_ms - 40 * MIN
        storage.put_site_state(
            SiteState(
                spec.site,
                spec.online,
                "boot-1",
                "0.1.0",
                devices,
                last,
                now_ms - HISTORY_MIN * MIN,
                None if spec.online else last,
            )
        )
    silent = "breaker brk does not answer"
    storage.add_alarm("east-02", "comm_loss", "major", silent, now_ms - 9 * MIN, device="brk")
    storage.add_alarm("west-03", "site_offline", "critical", "site went offline", now_ms - 40 * MIN)
    old = storage.add_alarm(
        "north-01", "mains_failure", "critical", "mains lost", now_ms - 150 * MIN, device="meter"
    )
    storage.clear_alarm(old.id, now_ms - 140 * MIN)
    add_applied_peak_shave(
        storage,
        command_id="6f1c1f9e-6c0b-4d5c-9a53-0a4a0c6b9e01",
        site="north-01",
        limit_w=1500.0,
        issued_ms=now_ms - 120 * MIN,
        lease_s=3600,
        rtt_ms=30,
    )


class HeldPublisher:
    """Keeps what `Commands` publishes (no broker in this fixture, so no agent acks)."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        self.published.append((topic, payload))


class ServerThread:
    """The aggregator's own `ApiServer` (uvicorn) in a thread with its own event loop."""

    def __init__(self, server: ApiServer) -> None:
        self.server = server
        self.thread = threading.Thread(target=self._run, name="aggregator-http", daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            asyncio.run(self.server.serve())
        except BaseException as exc:  # reported by start()/stop()
            self.error = exc

    def start(self, timeout: float = 10.0) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if self.error is not None or not self.thread.is_alive():
                raise RuntimeError(f"aggregator HTTP server did not start: {self.error!r}")
            if time.monotonic() > deadline:
                raise TimeoutError("aggregator HTTP server did not start in time")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.stop()
        self.thread.join(10)
        assert not self.thread.is_alive(), "aggregator HTTP server did not stop"


@dataclass
class Aggregator:
    """A running aggregator: its URL, tokens by role, storage and clock."""

    url: str
    tokens: dict[str, str]
    storage: SqliteStorage
    clock: ManualClock
    now_ms: int
    sites: tuple[str, ...] = field(default_factory=tuple)

    def api(self, path: str, role: str = "viewer", **params: Any) -> Any:
        """GET an API path with the role's token (`from_` stands for the `from` parameter)."""
        return api_get(self.url, self.tokens[role], path, **params)


@pytest.fixture(scope="module")
def aggregator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Aggregator]:
    db = tmp_path_factory.mktemp("aggregator") / "aggregator.db"
    storage = open_storage(db)
    now_ms = (int(time.time() * 1000) // MIN) * MIN
    clock = ManualClock(now_ms / 1000)
    fill_fleet(storage, now_ms)
    tokens = add_role_tokens(storage, now_ms, suffix="-noc")
    commands = Commands(storage, Signer(generate_key()), HeldPublisher(), clock=clock)
    ctx = ApiContext(storage=storage, clock=clock, commands=commands)
    server = ServerThread(ApiServer(create_app(ctx), host="127.0.0.1", port=0))
    server.start()
    try:
        yield Aggregator(
            f"http://127.0.0.1:{server.server.port}",
            tokens,
            storage,
            clock,
            now_ms,
            tuple(s.site for s in FLEET),
        )
    finally:
        server.stop()
        storage.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveFleet]:
    """Three simulated sites with real agents through a real mosquitto into the real aggregator
    service; yielded once every site is online and has readings stored."""
    _require_chromium()
    if not mosquitto_available():
        pytest.skip("mosquitto is not installed (make test installs it as root)")
    work = tmp_path_factory.mktemp("live")
    broker = Broker(kind="mosquitto", workdir=work / "mosquitto")
    broker.start()
    fleet: LiveFleet | None = None
    try:
        fleet = LiveFleet(work, broker.port).start()
        ready = fleet

        def all_reporting() -> bool:
            sites = ready.api("/api/sites")
            return len(sites) == len(ready.specs) and all(
                s["online"] and s["key_points"]["soc"] is not None for s in sites
            )

        fleet.wait(all_reporting, "every live site online with readings", timeout=60)
        yield fleet
    finally:
        try:
            if fleet is not None:
                fleet.stop()
        finally:
            broker.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    _require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any, tmp_path: Path) -> Iterator[Any]:
    """A fresh browser context (no stored token) at a desktop size; traces kept on failure."""
    # bypass_csp: Playwright evaluates wait conditions with eval, which the pages' CSP forbids.
    context = browser.new_context(
        viewport={"width": 1366, "height": 900}, accept_downloads=True, bypass_csp=True
    )
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.set_default_timeout(15_000)
    try:
        yield pg
    finally:
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def shot(page: Any, tmp_path: Path, name: str) -> Path:
    """A full-page screenshot into the test's output directory."""
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
