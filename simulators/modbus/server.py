"""Real pymodbus servers (TCP and RTU) in front of simulated devices, with fault injection.

The only module that touches pymodbus's server side. One server answers many unit ids (one per
device, or per site-device), and any number of servers share one asyncio loop, so hundreds of
sites fit in one process. Requests go through two hooks of our own:

- a context (`_UnitContext`) in place of pymodbus's datastore: each read brings the device's site
  up to the simulated present and answers from the register image; each write is validated
  against the profile and applied to the physics, or refused with the Modbus exception a real
  device would send;
- a request handler (`_FaultyHandler`) that consults the fault board before answering: late,
  not at all, with an exception, or by dropping the connection.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Protocol, cast

from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from pymodbus.pdu import ExceptionResponse
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler
from pymodbus.simulator import DataType, SimData, SimDevice

from protocols.profiles import Profile, Table
from protocols.types import DeviceKind
from simulators.devices import DeviceView, view
from simulators.errors import (
    InvalidValueError,
    ReadOnlyPointError,
    RefusedError,
    UnknownPointError,
    WriteError,
)
from simulators.modbus.faults import Fault, FaultBoard, FaultKind
from simulators.modbus.image import FC_TABLE, ReadRefused, RegisterImage

log = logging.getLogger(__name__)


class SiteClock(Protocol):
    """What a served device needs from the site it belongs to."""

    def sync(self) -> None:
        """Bring the physics up to the simulated present."""
        ...

    @property
    def now(self) -> float: ...

    @property
    def version(self) -> int:
        """Changes whenever the physics moved or was written to."""
        ...

    def touch(self) -> None:
        """Note a change made outside `sync` (a write)."""
        ...


class ServedDevice:
    """One simulated device as Modbus sees it: its profile's register image over the physics."""

    def __init__(
        self, name: str, site: SiteClock, model: Any, kind: DeviceKind, profile: Profile
    ) -> None:
        if profile.device.kind is not kind:
            raise ValueError(f"{name}: profile {profile.name} is a {profile.device.kind.value}")
        self.name = name
        self.kind = kind
        self.site = site
        self.model = model
        self.profile = profile
        self.view: DeviceView = view(kind)
        self.image = RegisterImage(profile)
        self._version = -1
        self.reads = 0
        self.writes = 0

    def refresh(self) -> None:
        """Re-encode the image if the physics changed since the last refresh."""
        v = self.site.version
        if v != self._version:
            self.image.refresh(self.view.read(self.model))
            self._version = v

    def read(self, table: Table, address: int, count: int) -> list[int] | list[bool]:
        self.site.sync()
        self.refresh()
        self.reads += 1
        return self.image.read(table, address, count)

    def write(self, table: Table, address: int, values: Sequence[int | bool]) -> None:
        self.site.sync()
        decoded = self.image.decode_write(table, address, values)
        physics = {k: v for k, v in decoded.items() if k in self.view.writers}
        extras = {k: v for k, v in decoded.items() if k not in self.view.writers}
        self.view.write(self.model, physics)
        self.image.extras.update(extras)
        self.writes += 1
        self.site.touch()
        self.refresh()

    def write_points(self, values: Mapping[str, Any]) -> None:
        """Apply {point: value} as if written over Modbus (for tests and the control API)."""
        self.site.sync()
        self.view.write(self.model, values)
        self.site.touch()
        self.refresh()


def _exc_code(exc: WriteError) -> ExcCodes:
    if isinstance(exc, UnknownPointError | ReadOnlyPointError):
        return ExcCodes.ILLEGAL_ADDRESS
    if isinstance(exc, InvalidValueError):
        return ExcCodes.ILLEGAL_VALUE
    if isinstance(exc, RefusedError):
        return ExcCodes.DEVICE_FAILURE
    return ExcCodes.DEVICE_FAILURE


class _UnitContext:
    """Stands in for pymodbus's datastore: unit id -> served device."""

    def __init__(self, units: Mapping[int, ServedDevice], faults: FaultBoard) -> None:
        self.units = dict(units)
        self.faults = faults

    def device_ids(self) -> list[int]:
        return list(self.units)

    def fault_for(self, unit: int) -> Fault | None:
        dev = self.units.get(unit)
        if dev is None or dev.name not in self.faults.faults:
            return None
        dev.site.sync()  # scenario faults run on simulated time: bring it up to date first
        return self.faults.active(dev.name, time.monotonic(), dev.site.now)

    async def async_getValues(
        self, device_id: int, func_code: int, address: int, count: int = 1
    ) -> list[int] | list[bool] | ExcCodes:
        dev = self.units.get(device_id)
        table = FC_TABLE.get(func_code)
        if dev is None:
            return ExcCodes.GATEWAY_NO_RESPONSE
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        try:
            values = dev.read(table, address, count)
        except ReadRefused as exc:
            log.debug("%s: read refused: %s", dev.name, exc)
            return ExcCodes(exc.code)
        fault = self.fault_for(device_id)
        if fault is not None and fault.kind is FaultKind.GARBAGE:
            if table.is_bits:
                return [random.random() < 0.5 for _ in values]
            return [random.randrange(0x10000) for _ in values]
        return values

    async def async_setValues(
        self, device_id: int, func_code: int, address: int, values: Sequence[int] | Sequence[bool]
    ) -> ExcCodes | None:
        dev = self.units.get(device_id)
        table = FC_TABLE.get(func_code)
        if dev is None:
            return ExcCodes.GATEWAY_NO_RESPONSE
        if table is None or table in (Table.INPUT, Table.DISCRETE):
            return ExcCodes.ILLEGAL_FUNCTION
        try:
            dev.write(table, address, list(values))
        except WriteError as exc:
            log.info("%s: write refused: %s", dev.name, exc)
            return _exc_code(exc)
        return None


class _FaultyHandler(ServerRequestHandler):
    """pymodbus's per-connection handler, with the device's faults applied first."""

    _running: ClassVar[set[asyncio.Task[None]]] = set()  # held until each task is done

    def handle_later(self) -> None:
        # pymodbus hands each request to the loop with run_coroutine_threadsafe (a concurrent
        # Future, a Condition and an RLock per request: 7 % of a fleet simulator's CPU); this is
        # called on the loop already, so a plain task does.
        task = self.loop.create_task(self.handle_request())
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def handle_request(self) -> None:
        pdu = self.last_pdu
        if not pdu:
            return
        ctx = cast(_UnitContext, self.server.context)
        fault = ctx.fault_for(pdu.dev_id)
        if fault is not None and fault.probability < 1.0 and random.random() >= fault.probability:
            fault = None
        if fault is not None:
            kind = fault.kind
            if kind is FaultKind.LATENCY:
                await asyncio.sleep(fault.latency_s)
            elif kind is FaultKind.TIMEOUT:
                return
            elif kind in (FaultKind.DISCONNECT, FaultKind.GONE):
                self.close()
                return
            elif kind is FaultKind.EXCEPTION:
                self._send(ExceptionResponse(pdu.function_code, fault.exception_code), pdu)
                return
        response: Any
        try:
            response = await pdu.datastore_update(cast(Any, ctx), pdu.dev_id)
        except Exception:  # a bug of ours must not kill the connection: answer like a device
            log.exception("request %s to unit %s failed", pdu, pdu.dev_id)
            response = ExceptionResponse(pdu.function_code, ExcCodes.DEVICE_FAILURE)
        self._send(response, pdu)

    def _send(self, response: Any, pdu: Any) -> None:
        if self.transport is None:
            return
        response.transaction_id = pdu.transaction_id
        response.dev_id = pdu.dev_id
        send: Any = self.server_send
        send(response, self.last_addr)


def _placeholder() -> SimDevice:
    return SimDevice(0, simdata=[SimData(0, values=0, datatype=DataType.REGISTERS)])


class SimTcpServer(ModbusTcpServer):
    """A TCP server whose units are simulated devices."""

    def __init__(
        self, units: Mapping[int, ServedDevice], faults: FaultBoard, *, host: str, port: int
    ) -> None:
        super().__init__(_placeholder(), address=(host, port))
        self.unit_context = _UnitContext(units, faults)
        self.context = cast(Any, self.unit_context)
        self.host = host
        self.port = port

    def callback_new_connection(self) -> ServerRequestHandler:
        handler: Any = _FaultyHandler
        return cast(
            ServerRequestHandler,
            handler(self, self.trace_packet, self.trace_pdu, self.trace_connect),
        )

    @property
    def units(self) -> dict[int, ServedDevice]:
        return self.unit_context.units

    async def start(self) -> None:
        await self.serve_forever(background=True)
        listener = self.transport
        if isinstance(listener, asyncio.Server) and listener.sockets:
            self.port = int(listener.sockets[0].getsockname()[1])

    def drop_connections(self) -> None:
        for conn in list(self.active_connections.values()):
            conn.close()

    async def go_away(self) -> None:
        """Stop listening and drop every connection: the device has disappeared."""
        self.close()  # closes the listener and its connections

    async def come_back(self) -> None:
        """Listen again on the same port."""
        self.is_closing = False
        listener = await self.loop.create_server(
            self.handle_new_connection, self.host, self.port, reuse_address=True
        )
        self.transport = cast(Any, listener)

    async def stop(self) -> None:
        self.drop_connections()
        await self.shutdown()  # type: ignore[no-untyped-call]


class SimRtuServer(ModbusSerialServer):
    """An RTU server on a serial port path (a real port, or one end of a socat pty pair)."""

    def __init__(
        self, units: Mapping[int, ServedDevice], faults: FaultBoard, *, port: str, baudrate: int
    ) -> None:
        super().__init__(_placeholder(), framer=FramerType.RTU, port=port, baudrate=baudrate)
        self.unit_context = _UnitContext(units, faults)
        self.context = cast(Any, self.unit_context)
        self.path = port

    def callback_new_connection(self) -> ServerRequestHandler:
        handler: Any = _FaultyHandler
        return cast(
            ServerRequestHandler,
            handler(self, self.trace_packet, self.trace_pdu, self.trace_connect),
        )

    async def start(self) -> None:
        await self.serve_forever(background=True)

    async def stop(self) -> None:
        await self.shutdown()  # type: ignore[no-untyped-call]


async def serve_tcp(
    units: Mapping[int, ServedDevice],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    faults: FaultBoard | None = None,
) -> SimTcpServer:
    """Start a TCP server for `units` (unit id -> device) on the running loop; port 0: any."""
    server = SimTcpServer(units, faults or FaultBoard(), host=host, port=port)
    await server.start()
    return server


async def serve_rtu(
    port_path: str,
    devices_by_unit: Mapping[int, ServedDevice],
    *,
    baudrate: int = 19200,
    faults: FaultBoard | None = None,
) -> SimRtuServer:
    """Start a Modbus RTU server on the serial port at `port_path` for the given units."""
    server = SimRtuServer(
        devices_by_unit, faults or FaultBoard(), port=port_path, baudrate=baudrate
    )
    await server.start()
    return server


__all__ = [
    "ServedDevice",
    "SimRtuServer",
    "SimTcpServer",
    "SiteClock",
    "serve_rtu",
    "serve_tcp",
]
