"""Brokers for tests, demos and fleets: Debian's mosquitto when installed, else embedded amqtt.

Each broker runs as a child process we started, on a loopback port, with its own temporary
config and persistence directory; `stop()` ends exactly that process.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from simulators.procs import guarded

MOSQUITTO = "/usr/sbin/mosquitto"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_port(
    host: str, port: int, timeout: float = 10.0, *, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Return once `host:port` accepts TCP connections; raise TimeoutError otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


def mosquitto_available() -> bool:
    return Path(MOSQUITTO).exists() or shutil.which("mosquitto") is not None


@dataclass
class Broker:
    """A broker process on 127.0.0.1; restartable with the same port and persistence."""

    kind: str = "mosquitto"
    host: str = "127.0.0.1"
    port: int = 0
    workdir: Path | None = None
    extra_config: str = ""
    # How often mosquitto writes its whole in-memory state to disk (it also does on a clean
    # stop). Every second in tests (a restart must find what was queued); a fleet sets more:
    # with an ingest behind, a second-by-second rewrite of a large backlog costs a core's fifth.
    autosave_s: int = 1
    # Own session + SIGTERM when our process dies (fleet runs: Ctrl-C reaches the fleet only).
    die_with_parent: bool = False
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _owns_dir: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        if self.port == 0:
            self.port = free_port(self.host)
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix=f"sitewatt-{self.kind}-"))
            self._owns_dir = True
        self.workdir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def config_text(self) -> str:
        assert self.workdir is not None
        return (
            f"listener {self.port} {self.host}\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {self.workdir}/\n"
            f"autosave_interval {self.autosave_s}\n"
            # Offline persistent sessions must hold a whole outage's worth of QoS 1 messages.
            "max_queued_messages 1000000\n"
            "max_inflight_messages 100\n"
            # Without it Nagle's delay caps a small in-flight window (36k vs 176k readings/s).
            "set_tcp_nodelay true\n"
            "log_dest stderr\n"
            "log_type error\nlog_type warning\n"
            # Run as root, mosquitto switches to its own user: it could then not write its
            # persistence (sessions lost on restart), and the change of user clears the
            # parent-death signal. Stay the user we are.
            + f"user {pwd.getpwuid(os.getuid()).pw_name}\n"
            + f"{self.extra_config}"
        )

    def start(self, timeout: float = 10.0) -> Broker:
        assert self.workdir is not None
        log = open(self.workdir / f"{self.kind}.log", "ab")  # noqa: SIM115 - lives with the process
        if self.kind == "mosquitto":
            conf = self.workdir / "mosquitto.conf"
            conf.write_text(self.config_text())
            exe = (
                MOSQUITTO if Path(MOSQUITTO).exists() else (shutil.which("mosquitto") or MOSQUITTO)
            )
            cmd = [exe, "-c", str(conf)]
        elif self.kind == "amqtt":
            cmd = [
                sys.executable,
                "-m",
                "simulators.embedded_broker",
                "--host",
                self.host,
                "--port",
                str(self.port),
            ]
        else:
            raise ValueError(f"unknown broker kind {self.kind!r}")
        self.proc = subprocess.Popen(
            guarded(cmd) if self.die_with_parent else cmd,
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=self.die_with_parent,
        )
        log.close()
        wait_port(self.host, self.port, timeout, proc=self.proc)
        return self

    def stop(self, *, kill: bool = False, timeout: float = 10.0) -> None:
        """End the broker we started (SIGTERM, or SIGKILL with `kill=True`)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        if self._owns_dir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["Broker", "free_port", "mosquitto_available", "wait_port"]
