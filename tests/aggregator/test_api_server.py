"""End to end through a real uvicorn server on a free loopback port."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from aggregator.api.server import ApiServer
from protocols.messages import AckStatus
from simulators.broker import free_port
from tests.aggregator.api_fixtures import Fleet, bearer, close_fleet, make_fleet


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Fleet, str]]:
    fleet = make_fleet(tmp_path / "agg.db")
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(fleet.app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive(), "uvicorn exited before it started"
            assert time.monotonic() < deadline, "uvicorn did not start within 10 s"
            time.sleep(0.01)
        yield fleet, f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        close_fleet(fleet)
    assert not thread.is_alive()


def test_real_server_round_trip(served: tuple[Fleet, str]) -> None:
    fleet, url = served
    with httpx.Client(base_url=url, timeout=5) as c:
        assert c.get("/api/health").json()["status"] == "ok"
        assert c.get("/api/sites").status_code == 401
        viewer, operator = bearer(fleet.tokens["viewer"]), bearer(fleet.tokens["operator"])
        sites = c.get("/api/sites", headers=viewer).json()
        assert [s["site"] for s in sites] == ["s1", "s2"]
        body = {"action": "rectifier.eco", "params": {"enabled": True}, "lease_s": 60}
        assert c.post("/api/sites/s1/commands", json=body, headers=viewer).status_code == 403
        fleet.agent.ack = AckStatus.APPLIED
        r = c.post("/api/sites/s1/commands?wait=5", json=body, headers=operator)
        assert r.status_code == 201, r.text
        assert r.json()["status"] == "applied" and r.json()["issued_by"] == "operator-token"
        log = c.get("/api/sites/s1/commands", headers=viewer).json()["commands"]
        assert log[0]["id"] == r.json()["id"] and log[0]["rtt_ms"] == 40.0
        spec = c.get("/api/openapi.json").json()
        assert "/api/sites/{site}/readings" in spec["paths"]
        metrics = c.get("/metrics")
        assert metrics.status_code == 200 and "sitewatt_aggregator_alarms_active" in metrics.text


async def test_api_server_task_in_the_service_loop(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path / "agg.db")
    server = ApiServer(fleet.app, host="127.0.0.1", port=0)
    task = asyncio.create_task(server.serve())
    try:
        await server.wait_started()
        port = server.port
        assert port != 0
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as c:
            r = await c.get("/api/sites/s1", headers=bearer(fleet.tokens["viewer"]))
            assert r.status_code == 200 and r.json()["site"] == "s1"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        close_fleet(fleet)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
