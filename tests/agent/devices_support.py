"""Helpers for agent-devices tests: site configs pointing at loopback servers, a silent server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.config import SiteConfig, parse_config
from protocols.keys import generate_key, public_key_hex
from protocols.profiles import shipped_profiles_dir
from protocols.types import Reading

AGG_PRIVATE = generate_key()
AGG_KEY = public_key_hex(AGG_PRIVATE)


def site_config(
    tmp_path: Path,
    devices: dict[str, dict[str, Any]],
    *,
    site_id: str = "site-t1",
    extra: dict[str, Any] | None = None,
) -> SiteConfig:
    data: dict[str, Any] = {
        "site": {"id": site_id, "key_file": "site.key", "aggregator_keys": [AGG_KEY]},
        "outbox": {"path": "agent.db"},
        "polling": {"jitter": 0.0},
        "profiles_dir": str(shipped_profiles_dir()),
        "interlocks": {"battery_capacity_wh": 19_200},
        "devices": devices,
    }
    for key, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return parse_config(data, base=tmp_path)


class Collector:
    """A sink that keeps every reading it is given."""

    def __init__(self) -> None:
        self.readings: list[Reading] = []

    def __call__(self, readings: Any) -> None:
        self.readings.extend(readings)

    def of(self, device: str, point: str) -> list[Reading]:
        return [r for r in self.readings if r.device == device and r.point == point]


async def wait_for(cond: Callable[[], bool], timeout: float = 10.0, step: float = 0.02) -> None:
    """Poll `cond` until true; AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(step)


class SilentServer:
    """A TCP listener on loopback that accepts connections and never answers (a hung device)."""

    host = "127.0.0.1"

    def __init__(self) -> None:
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        try:
            while await reader.read(1024):
                pass
        except ConnectionError:
            pass

    async def __aenter__(self) -> SilentServer:
        self._server = await asyncio.start_server(self._on_client, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for w in self._writers:
            w.close()
        await self._server.wait_closed()
