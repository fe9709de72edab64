"""Ports for a fleet's servers: free on loopback now, distinct, and out of the kernel's way."""

from __future__ import annotations

import random
import socket

from simulators.broker import free_port
from simulators.errors import FleetError


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Nothing listens on `port` (a server could bind it, as servers do, with SO_REUSEADDR:
    connections in TIME_WAIT do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


class PortPool:
    """Distinct free ports below Linux's ephemeral range (32768+), so that neither a second pick
    nor the local port of some outgoing connection can take a port before its server binds it."""

    def __init__(self, lo: int = 20000, hi: int = 32000, *, seed: int | None = None) -> None:
        self.lo, self.hi = lo, hi
        self._next = random.Random(seed).randrange(lo, hi)
        self.given: set[int] = set()

    def take(self) -> int:
        for _ in range(self.hi - self.lo):
            port = self._next
            self._next = self.lo if self._next + 1 >= self.hi else self._next + 1
            if port not in self.given and port_free(port):
                self.given.add(port)
                return port
        raise FleetError(f"no free port left in {self.lo}-{self.hi}")


def pick_http_port(wanted: int, pool: PortPool | None = None) -> int:
    """`wanted` if free (0: any free port), else a free one."""
    if wanted and port_free(wanted):
        return wanted
    return pool.take() if pool is not None else free_port()


__all__ = ["PortPool", "pick_http_port", "port_free"]
