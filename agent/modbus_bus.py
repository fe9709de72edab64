"""The Modbus adapter: the only module that imports pymodbus.

One `ModbusBus` per physical bus — a TCP endpoint (host:port, possibly a gateway with several
unit ids behind it) or a serial line (several RS-485 devices on one port). Each holds one
pymodbus client and one `asyncio.Lock`: a request and its answer (and, on RTU, the silent
interval after it) happen under the lock, so two devices on one line are never talked to at once,
whoever asks (the poller, a command, `check`).

pymodbus' own reconnect loop is switched off (`reconnect_delay=0`): the supervising poller
decides when to try again, with its backoff. Timeouts and retries are per request (devices on
one bus may differ), set on the client's transaction manager while the lock is held. pymodbus'
errors are mapped to ours at this boundary: `DeviceTimeout`, `DeviceDisconnected`,
`DeviceException` (with the Modbus exception code); never a `None` meaning failure.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from agent.config import DeviceConfig
from agent.errors import DeviceDisconnected, DeviceError, DeviceException, DeviceTimeout
from agent.polling import frame_gap_s
from protocols.profiles import Table

EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    10: "gateway path unavailable",
    11: "gateway target failed to respond",
}


@dataclass(frozen=True, slots=True)
class SerialSettings:
    port: str
    baud: int = 9600
    parity: str = "N"
    stopbits: int = 1
    bytesize: int = 8


@dataclass
class BusStats:
    """Counters for benchmarks and `status`: requests, registers moved, failures."""

    requests: int = 0
    registers: int = 0
    failures: int = 0
    connects: int = 0
    busy_s: float = 0.0


class ModbusBus:
    """One physical bus: a client, a lock, the RTU inter-frame gap."""

    def __init__(
        self,
        name: str,
        *,
        host: str | None = None,
        port: int = 502,
        serial: SerialSettings | None = None,
        frame_gap: float | None = None,
        connect_timeout: float = 2.0,
    ) -> None:
        if (host is None) == (serial is None):
            raise ValueError("a bus is either TCP (host) or serial")
        self.name = name
        self.lock = asyncio.Lock()
        self.stats = BusStats()
        self._connect_timeout = connect_timeout
        self._client: AsyncModbusTcpClient | AsyncModbusSerialClient
        if serial is not None:
            self.is_serial = True
            self._gap = (
                frame_gap
                if frame_gap is not None
                else frame_gap_s(
                    serial.baud,
                    bytesize=serial.bytesize,
                    parity=serial.parity,
                    stopbits=serial.stopbits,
                )
            )
            self._client = AsyncModbusSerialClient(
                serial.port,
                baudrate=serial.baud,
                parity=serial.parity,
                stopbits=serial.stopbits,
                bytesize=serial.bytesize,
                timeout=connect_timeout,
                retries=0,
                reconnect_delay=0,
            )
        else:
            assert host is not None
            self.is_serial = False
            self._gap = frame_gap or 0.0
            self._client = AsyncModbusTcpClient(
                host, port=port, timeout=connect_timeout, retries=0, reconnect_delay=0
            )
        # Give up on a connection only through our own logic (close on disconnect errors).
        self._client.set_max_no_responses(1_000_000)

    @classmethod
    def for_device(cls, dev: DeviceConfig, *, frame_gap_ms: float | None = None) -> ModbusBus:
        """The bus a configured device hangs on (callers share it among the bus's devices)."""
        gap = None if frame_gap_ms is None else frame_gap_ms / 1000.0
        if dev.serial is not None:
            settings = SerialSettings(
                str(dev.serial), dev.baud, dev.parity, dev.stopbits, dev.bytesize
            )
            return cls(dev.bus, serial=settings, frame_gap=gap)
        return cls(dev.bus, host=dev.host, port=dev.port, frame_gap=gap)

    @property
    def connected(self) -> bool:
        return bool(self._client.connected)

    async def close(self) -> None:
        """Close the connection now; a request in flight fails (we are shutting down)."""
        self._client.close()

    async def __aenter__(self) -> ModbusBus:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- requests ----------------------------------------------------------------------------

    async def read(
        self,
        unit: int,
        table: Table,
        start: int,
        count: int,
        *,
        timeout: float = 1.0,
        retries: int = 0,
    ) -> list[int] | list[bool]:
        """Read `count` registers (or bits) of `table` from `start` on device `unit`."""
        c = self._client
        fn: Any
        if table is Table.HOLDING:
            fn = c.read_holding_registers
        elif table is Table.INPUT:
            fn = c.read_input_registers
        elif table is Table.COIL:
            fn = c.read_coils
        else:
            fn = c.read_discrete_inputs
        rr = await self._call(
            lambda: fn(start, count=count, device_id=unit), unit, start, timeout, retries
        )
        self.stats.registers += count
        if table.is_bits:
            bits = list(rr.bits[:count])
            if len(bits) < count:
                raise DeviceError(f"{self.name} unit {unit}: short answer ({len(bits)}/{count})")
            return [bool(b) for b in bits]
        regs = list(rr.registers)
        if len(regs) < count:
            raise DeviceError(f"{self.name} unit {unit}: short answer ({len(regs)}/{count})")
        return regs[:count]

    async def write_registers(
        self,
        unit: int,
        address: int,
        words: Sequence[int],
        *,
        timeout: float = 1.0,
        retries: int = 0,
    ) -> None:
        """Write holding registers (function 16; function 6 for a single register)."""
        c = self._client
        if len(words) == 1:
            word = int(words[0])
            await self._call(
                lambda: c.write_register(address, word, device_id=unit),
                unit,
                address,
                timeout,
                retries,
            )
        else:
            values = [int(w) for w in words]
            await self._call(
                lambda: c.write_registers(address, values, device_id=unit),
                unit,
                address,
                timeout,
                retries,
            )
        self.stats.registers += len(words)

    async def write_coil(
        self, unit: int, address: int, value: bool, *, timeout: float = 1.0, retries: int = 0
    ) -> None:
        c, bit = self._client, bool(value)
        await self._call(
            lambda: c.write_coil(address, bit, device_id=unit), unit, address, timeout, retries
        )
        self.stats.registers += 1

    async def _connect(self) -> None:
        self.stats.connects += 1
        self._client.ctx.comm_params.timeout_connect = self._connect_timeout
        try:
            ok = await self._client.connect()
        except (OSError, ModbusException) as exc:
            raise DeviceDisconnected(f"{self.name}: cannot connect: {exc}") from exc
        if not ok:
            raise DeviceDisconnected(f"{self.name}: cannot connect")

    async def _call(
        self,
        request: Callable[[], Awaitable[Any]],
        unit: int,
        address: int,
        timeout: float,
        retries: int,
    ) -> Any:
        async with self.lock:
            started = time.perf_counter()
            try:
                if not self._client.connected:
                    await self._connect()
                self._client.ctx.comm_params.timeout_connect = timeout
                self._client.ctx.retries = retries
                self.stats.requests += 1
                rr = await request()
            except DeviceError:
                self.stats.failures += 1
                raise
            except ModbusIOException as exc:
                self.stats.failures += 1
                if not self._client.connected:
                    raise DeviceDisconnected(f"{self.name} unit {unit}: connection lost") from exc
                raise DeviceTimeout(
                    f"{self.name} unit {unit}: no answer within {timeout:g} s"
                ) from exc
            except ConnectionException as exc:
                self.stats.failures += 1
                self._client.close()
                raise DeviceDisconnected(f"{self.name} unit {unit}: {exc}") from exc
            except TimeoutError as exc:
                self.stats.failures += 1
                raise DeviceTimeout(f"{self.name} unit {unit}: timeout") from exc
            except (OSError, ModbusException) as exc:
                self.stats.failures += 1
                self._client.close()
                raise DeviceDisconnected(f"{self.name} unit {unit}: {exc}") from exc
            finally:
                self.stats.busy_s += time.perf_counter() - started
                if self._gap:
                    # The RTU silent interval: the next frame on this line waits for it.
                    await asyncio.sleep(self._gap)
            if rr.isError():
                self.stats.failures += 1
                code = getattr(rr, "exception_code", None)
                name = EXCEPTION_NAMES.get(code or 0, "exception")
                raise DeviceException(
                    f"{self.name} unit {unit}: {name} (code {code}) at {address}", code=code
                )
            return rr


async def probe_units(
    bus: ModbusBus,
    units: Sequence[int],
    *,
    timeout: float = 0.3,
    table: Table = Table.HOLDING,
    address: int = 0,
) -> dict[int, str]:
    """Which unit ids answer: unit → "ok" or "exception N" (a device that refused is present).

    Units that time out are left out. Used by `sitewatt-agent scan`.
    """
    found: dict[int, str] = {}
    for unit in units:
        try:
            await bus.read(unit, table, address, 1, timeout=timeout, retries=0)
            found[unit] = "ok"
        except DeviceException as exc:
            found[unit] = f"exception {exc.code}"
        except DeviceTimeout:
            continue
    return found


__all__ = ["EXCEPTION_NAMES", "BusStats", "ModbusBus", "SerialSettings", "probe_units"]
