"""Child processes of a fleet run: started by us, tracked by pid, ended by us, never orphaned.

Every child is started in its own session (so a Ctrl-C at the terminal reaches only the fleet
simulator, which then stops the children in order: agents, simulators, aggregator, broker) and,
on Linux, with PR_SET_PDEATHSIG so the kernel sends it SIGTERM if the fleet simulator dies
without cleaning up (even by SIGKILL).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

PR_SET_PDEATHSIG = 1


def guarded(argv: Sequence[str]) -> list[str]:
    """`argv` run through this module's guard: the child gets SIGTERM when we die.

    The guard is a tiny Python process that sets PR_SET_PDEATHSIG and then `exec`s the real
    command in its place (same pid; the setting survives exec), so nothing runs between fork and
    exec in our possibly threaded process.
    """
    return [sys.executable, "-m", "simulators.procs", str(os.getpid()), "--", *argv]


def _guard_main(args: Sequence[str]) -> None:
    parent, sep, *argv = args
    if sep != "--" or not argv:
        raise SystemExit("usage: python -m simulators.procs PARENT_PID -- COMMAND [ARGS…]")
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != int(parent):  # the parent died before prctl took effect
        raise SystemExit(1)
    os.execvp(argv[0], argv)


@dataclass
class Child:
    """One child process and what it is for."""

    name: str
    role: str
    argv: list[str]
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None


class Children:
    """The fleet's child processes, stopped role by role in the order given to `stop_all`."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.children: list[Child] = []

    def spawn(
        self,
        name: str,
        role: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Child:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{name}.log"
        with open(log, "ab") as fh:
            proc = subprocess.Popen(
                guarded(argv),
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                env=None if env is None else {**os.environ, **env},
                cwd=cwd,
                start_new_session=True,
            )
        child = Child(name, role, list(argv), proc, log)
        self.children.append(child)
        return child

    def adopt(self, name: str, role: str, proc: subprocess.Popen[bytes], log: Path) -> Child:
        """Track a process started elsewhere (the broker) so it is listed and checked too."""
        child = Child(
            name, role, list(map(str, proc.args)) if isinstance(proc.args, list) else [], proc, log
        )
        self.children.append(child)
        return child

    def of(self, role: str) -> list[Child]:
        return [c for c in self.children if c.role == role]

    def dead(self) -> list[Child]:
        """Children that exited on their own (a failure while the fleet runs)."""
        return [c for c in self.children if not c.alive()]

    def stop(self, children: Sequence[Child], *, timeout: float = 20.0) -> None:
        """SIGTERM the children, wait up to `timeout`, SIGKILL what is left; reap them all."""
        for c in children:
            if c.alive():
                with contextlib.suppress(ProcessLookupError):
                    c.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for c in children:
            left = max(0.0, deadline - time.monotonic())
            try:
                c.proc.wait(left)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    c.proc.kill()
                c.proc.wait(5.0)

    def stop_all(self, order: Sequence[str], *, timeout: float = 20.0) -> None:
        """Stop every child, role by role in `order` (roles not named go last)."""
        for role in order:
            self.stop(self.of(role), timeout=timeout)
        self.stop([c for c in self.children if c.role not in order], timeout=timeout)

    def pids(self) -> dict[str, int]:
        return {c.name: c.pid for c in self.children}


def pid_alive(pid: int) -> bool:
    """True if a process with this pid exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] != "Z"


__all__ = ["Child", "Children", "guarded", "pid_alive"]

if __name__ == "__main__":
    _guard_main(sys.argv[1:])
