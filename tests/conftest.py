"""Shared fixtures: real brokers and Modbus servers on loopback, cleaned up after each test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from simulators.broker import Broker, mosquitto_available

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"

pytest_plugins = ["tests.support.modbus_fixtures", "tests.support.delivery_fixtures"]

requires_mosquitto = pytest.mark.skipif(
    not mosquitto_available(), reason="mosquitto is not installed"
)


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Broker]:
    """A real mosquitto on a free loopback port with persistence in the test's tmp dir."""
    if not mosquitto_available():
        pytest.skip("mosquitto is not installed (make test installs it as root)")
    broker = Broker(kind="mosquitto", workdir=tmp_path / "mosquitto")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the browser tests last: Playwright's sync API keeps an event loop running on the main
    thread for as long as its session-wide browser lives, which asyncio tests cannot share."""
    items.sort(key=lambda item: "tests/browser/" in item.nodeid.replace("\\", "/"))
