"""A real pymodbus TCP server on loopback holding a static register image built from a profile.

The server runs in a background thread with its own event loop, so sync tests and async tests
(whose loop is pytest-asyncio's) use it the same way: connect any Modbus client to
`server.host:server.port`. The image comes from `protocols.codec.encode_image`, so what a test
puts in is exactly what our codec says the device would hold.

    def test_x(modbus_server):
        server = modbus_server(profile, {"soc": 87.5})
        ... AsyncModbusTcpClient(server.host, port=server.port) ...

By default every address from a table's lowest to highest profile address answers (unset ones
read 0), as most devices do. `strict=True` makes only the profile's own registers answer, so a
read that spans a gap gets an exception response, as on devices that require `max_gap = 0`.
The fixture stops every server it started when the test ends.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from protocols.codec import Image, Missing, encode_image
from protocols.profiles import Profile, Table
from protocols.types import Value

PointValues = Mapping[str, Value | Mapping[str, bool] | Missing]

# SimDevice's non-shared layout: (coils, discrete inputs, holding registers, input registers)
_LAYOUT = (Table.COIL, Table.DISCRETE, Table.HOLDING, Table.INPUT)


def _runs(cells: Mapping[int, int | bool]) -> list[tuple[int, list[Any]]]:
    """Contiguous runs of addresses: (start, values)."""
    runs: list[tuple[int, list[Any]]] = []
    for addr in sorted(cells):
        if runs and runs[-1][0] + len(runs[-1][1]) == addr:
            runs[-1][1].append(cells[addr])
        else:
            runs.append((addr, [cells[addr]]))
    return runs


def build_device(
    profile: Profile, values: PointValues, *, device_id: int = 1, strict: bool = False
) -> tuple[SimDevice, Image]:
    """A pymodbus SimDevice holding `values` encoded per `profile`, and the image it holds."""
    image = encode_image(profile, values)
    blocks: list[list[SimData]] = []
    for table in _LAYOUT:
        cells: dict[int, int | bool] = {}
        points = [p for p in profile.points if p.table is table]
        if points and not strict:
            lo, hi = min(p.address for p in points), max(p.end for p in points)
            cells = dict.fromkeys(range(lo, hi), False if table.is_bits else 0)
        elif points:
            for p in points:
                for a in range(p.address, p.end):
                    cells[a] = False if table.is_bits else 0
        cells.update(image[table])
        kind = DataType.BITS if table.is_bits else DataType.REGISTERS
        data = [SimData(a, values=v, datatype=kind) for a, v in _runs(cells)]
        if not data:
            # pymodbus needs an entry per table: park one out of the way (bits cannot be invalid).
            far = SimData(0xFFF0, values=False, datatype=DataType.BITS)
            data = [far] if table.is_bits else [SimData(0, datatype=DataType.INVALID)]
        blocks.append(data)
    coils, discretes, holding, inputs = blocks
    return SimDevice(device_id, simdata=(coils, discretes, holding, inputs)), image


class ModbusTestServer:
    """pymodbus ModbusTcpServer in its own thread and event loop, bound to 127.0.0.1:free port."""

    host = "127.0.0.1"

    def __init__(self, devices: list[SimDevice]) -> None:
        self._devices = devices
        self.port = 0
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._server: ModbusTcpServer | None = None
        self._thread = threading.Thread(target=self._run, name="modbus-test-server", daemon=True)

    def start(self, timeout: float = 10.0) -> None:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("Modbus test server did not start in time")
        if self._error is not None:
            raise RuntimeError("Modbus test server failed to start") from self._error

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise RuntimeError("Modbus test server thread did not stop")

    def write(
        self, table: Table, address: int, values: list[int] | list[bool], *, device_id: int = 1
    ) -> None:
        """Change the image while serving (as the device would), from any thread."""
        fc = {Table.COIL: 5, Table.DISCRETE: 2, Table.HOLDING: 16, Table.INPUT: 4}[table]
        assert self._loop is not None and self._server is not None
        server = self._server
        future = asyncio.run_coroutine_threadsafe(
            server.async_setValues(device_id, fc, address, values), self._loop
        )
        future.result(timeout=5)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to start(); the thread must not die silently
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = ModbusTcpServer(self._devices, address=(self.host, 0))
        self._server = server
        await server.serve_forever(background=True)
        listener = server.transport
        assert isinstance(listener, asyncio.Server)
        self.port = listener.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await server.shutdown()  # type: ignore[no-untyped-call]


class ProfileServer(ModbusTestServer):
    """A test server for one device: its profile, unit id and the image it was given."""

    def __init__(
        self, profile: Profile, values: PointValues, *, device_id: int = 1, strict: bool = False
    ) -> None:
        device, image = build_device(profile, values, device_id=device_id, strict=strict)
        super().__init__([device])
        self.profile = profile
        self.device_id = device_id
        self.image = image

    def set(self, values: PointValues) -> None:
        """Encode points' new values with our codec and write them into the running server."""
        image = encode_image(self.profile, values)
        for table, cells in image.items():
            for addr, value in cells.items():
                self.write(table, addr, [value], device_id=self.device_id)


ServerFactory = Callable[..., ProfileServer]


@pytest.fixture
def modbus_server() -> Iterator[ServerFactory]:
    """Factory: `modbus_server(profile, values, *, device_id=1, strict=False)` -> started server."""
    started: list[ProfileServer] = []

    def factory(
        profile: Profile, values: PointValues, *, device_id: int = 1, strict: bool = False
    ) -> ProfileServer:
        server = ProfileServer(profile, values, device_id=device_id, strict=strict)
        server.start()
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()
