"""Modbus server fixtures (filled in with the profiles work)."""
