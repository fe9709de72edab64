"""The peer workload's devices: N Modbus TCP devices of 100 holding registers each.

DESIGN.md compares the agent with ThingsBoard IoT Gateway on "10 devices x 100 holding registers
polled every second, every value published". Here every register's value changes every 250 ms
(a counter offset by its address), so whatever the agent's report-by-exception rules, every
value it polls is new and is sent. Each device listens on its own port (its own bus), unit 1.
Run in its own process:

    python -m bench.peer_server --port-base P [--devices 10] [--registers 100]

It prints `ready` once every port listens, and runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from collections.abc import Sequence
from typing import Any, cast

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

HOLDING_READ = 3


class _Changing:
    """Stands in for pymodbus's datastore: every holding register changes every 250 ms."""

    def __init__(self, registers: int) -> None:
        self.registers = registers

    def device_ids(self) -> list[int]:
        return [1]

    async def async_getValues(
        self, device_id: int, func_code: int, address: int, count: int = 1
    ) -> list[int] | ExcCodes:
        if device_id != 1:
            return ExcCodes.GATEWAY_NO_RESPONSE
        if func_code != HOLDING_READ:
            return ExcCodes.ILLEGAL_FUNCTION
        if address + count > self.registers:
            return ExcCodes.ILLEGAL_ADDRESS
        tick = int(time.monotonic() * 4)
        return [(tick + a) & 0x7FFF for a in range(address, address + count)]

    async def async_setValues(
        self, device_id: int, func_code: int, address: int, values: Sequence[int]
    ) -> ExcCodes | None:
        return ExcCodes.ILLEGAL_FUNCTION


class PeerServer(ModbusTcpServer):
    def __init__(self, port: int, registers: int) -> None:
        placeholder = SimDevice(0, simdata=[SimData(0, values=0, datatype=DataType.REGISTERS)])
        super().__init__(placeholder, address=("127.0.0.1", port))
        self.context = cast(Any, _Changing(registers))


def profile_toml(registers: int = 100) -> str:
    """The device profile: `registers` u16 holding registers, no deadband, one 100-word block.

    The kind is `meter` (profiles are checked against a kind's canonical points), so the first
    eight carry the meter's canonical names; the rest are `r008` … `r099`.
    """
    canon = [("mains_present", ""), ("voltage", "V"), ("current", "A"), ("frequency", "Hz"),
             ("power_factor", ""), ("import_power", "W"), ("import_energy", "kWh"),
             ("export_energy", "kWh")]  # fmt: skip
    out = [
        "# The peer workload's device (bench/peer_server.py): 100 u16 holding registers.",
        "[device]",
        'vendor = "Bench"',
        'model = "HR100"',
        'kind = "meter"',
        "max_block = 125",
        "max_gap = 0",
        "",
    ]
    for i in range(registers):
        name, unit = canon[i] if i < len(canon) else (f"r{i:03d}", "")
        out += ["[[points]]", f'name = "{name}"', f'unit = "{unit}"', f"address = {i}",
                'table = "holding"', 'type = "u16"', ""]  # fmt: skip
    return "\n".join(out)


async def serve(port_base: int, devices: int, registers: int) -> None:
    servers = [PeerServer(port_base + i, registers) for i in range(devices)]
    for s in servers:
        await s.serve_forever(background=True)
    print("ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    for s in servers:
        await s.shutdown()  # type: ignore[no-untyped-call]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port-base", type=int, required=True)
    p.add_argument("--devices", type=int, default=10)
    p.add_argument("--registers", type=int, default=100)
    a = p.parse_args()
    asyncio.run(serve(a.port_base, a.devices, a.registers))


if __name__ == "__main__":
    main()
