"""Serving the API inside the aggregator's own event loop.

`ApiServer` runs uvicorn as one task of `aggregator.service` beside ingest and the alarm check:
the service owns signals and shutdown, so uvicorn's signal capture is switched off, and
cancelling (or `stop()`) ends the server gracefully.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Generator

import uvicorn
from fastapi import FastAPI


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # the service handles SIGINT/SIGTERM and stops us


class ApiServer:
    """uvicorn bound to `host:port` (port 0: a free one, see `port` once `started`)."""

    def __init__(
        self, app: FastAPI, *, host: str = "127.0.0.1", port: int = 8080, log_level: str = "warning"
    ) -> None:
        config = uvicorn.Config(
            app, host=host, port=port, log_level=log_level, lifespan="off", access_log=False
        )
        self._server = _QuietServer(config)
        self.host = host
        self._port = port

    @property
    def started(self) -> bool:
        return bool(self._server.started)

    @property
    def port(self) -> int:
        """The bound port (the real one when 0 was asked, once started)."""
        for server in getattr(self._server, "servers", []):
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return self._port

    async def serve(self) -> None:
        """Serve until `stop()` or cancellation."""
        task = asyncio.ensure_future(self._server.serve())
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            # Let uvicorn close its sockets and finish open requests before we go.
            self._server.should_exit = True
            await task
            raise

    async def wait_started(self, timeout: float = 10.0) -> None:
        """Return once listening; TimeoutError otherwise."""
        async with asyncio.timeout(timeout):
            while not self._server.started:
                await asyncio.sleep(0.01)

    def stop(self) -> None:
        self._server.should_exit = True


__all__ = ["ApiServer"]
