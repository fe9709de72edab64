"""A small control endpoint for a running simulator: faults, mains, writes, status.

JSON lines over TCP on 127.0.0.1: one request object per line, one answer per line. Requests:

    {"op": "status"}
    {"op": "fault", "device": "battery", "kind": "timeout", "for_s": 30}
        (optional: "latency_ms", "code" (exception code), "probability")
    {"op": "clear", "device": "battery"}              (no device: clear every fault)
    {"op": "mains", "site": "site-1", "present": false}   (null: back to the scenario's events)
    {"op": "lock", "site": "site-1", "locked": true}  (the breaker's front-panel switch)
    {"op": "write", "device": "aircon", "points": {"setpoint": 28}}

Answers are {"ok": true, ...} or {"ok": false, "error": "..."}. `request()` is the client the
`sitewatt-sim fault` command uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from typing import Any

from simulators.errors import ControlError, SimulatorError
from simulators.host import SimHost

log = logging.getLogger(__name__)


def handle(host: SimHost, req: dict[str, Any]) -> dict[str, Any]:
    """Carry out one request against `host`; pure dispatch, no I/O."""
    op = req.get("op")
    if op == "status":
        return {"ok": True, **host.status()}
    if op == "fault":
        fault = host.inject(
            str(req.get("device", "")),
            str(req.get("kind", "")),
            for_s=float(req.get("for_s", 30.0)),
            latency_ms=float(req.get("latency_ms", 500.0)),
            code=int(req.get("code", 4)),
            probability=float(req.get("probability", 1.0)),
        )
        return {"ok": True, "fault": fault.describe(), "device": host.device(req["device"]).name}
    if op == "clear":
        dev = req.get("device")
        host.clear(None if dev is None else str(dev))
        return {"ok": True}
    if op == "mains":
        present = req.get("present")
        site = host.site(req.get("site"))
        site.model.overrides.mains = None if present is None else bool(present)
        return {"ok": True, "site": site.id, "mains": present}
    if op == "lock":
        site = host.site(req.get("site"))
        site.model.breaker.locked = bool(req.get("locked", True))
        site.touch()
        return {"ok": True, "site": site.id, "locked": site.model.breaker.locked}
    if op == "write":
        dev = host.device(str(req.get("device", "")))
        points = req.get("points")
        if not isinstance(points, dict):
            raise ControlError("write needs 'points': {name: value}")
        dev.write_points(points)
        return {"ok": True, "device": dev.name}
    raise ControlError(f"unknown op {op!r}")


class ControlServer:
    def __init__(self, host: SimHost, *, bind: str = "127.0.0.1", port: int = 0) -> None:
        self.sim = host
        self.bind = bind
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._client, self.bind, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    req = json.loads(line)
                    if not isinstance(req, dict):
                        raise ControlError("a request is a JSON object")
                    answer = handle(self.sim, req)
                except (SimulatorError, ValueError, KeyError, TypeError) as exc:
                    answer = {"ok": False, "error": str(exc)}
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


def request(address: str, payload: dict[str, Any], *, timeout: float = 5.0) -> dict[str, Any]:
    """Send one request to a control endpoint at 'HOST:PORT' and return the answer."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout) as s:
            s.sendall(json.dumps(payload).encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
    except (OSError, ValueError) as exc:
        raise ControlError(f"control endpoint {address}: {exc}") from exc
    answer = json.loads(buf)
    if not isinstance(answer, dict):
        raise ControlError(f"control endpoint {address}: unexpected answer {answer!r}")
    return answer


__all__ = ["ControlServer", "handle", "request"]
