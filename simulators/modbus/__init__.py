"""Modbus TCP/RTU servers in front of the simulated devices, and fault injection."""

from simulators.modbus.faults import Fault, FaultBoard, FaultKind
from simulators.modbus.image import RegisterImage
from simulators.modbus.server import ServedDevice, SimRtuServer, SimTcpServer, serve_rtu, serve_tcp

__all__ = [
    "Fault",
    "FaultBoard",
    "FaultKind",
    "RegisterImage",
    "ServedDevice",
    "SimRtuServer",
    "SimTcpServer",
    "serve_rtu",
    "serve_tcp",
]
