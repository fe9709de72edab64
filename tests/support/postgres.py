"""A private PostgreSQL cluster for tests and benches: initdb in a temp dir, one `postgres`
process on 127.0.0.1 and a free port, stopped by its pid and removed afterwards.

initdb and postgres refuse to run as root, so when we are root the cluster belongs to the
`postgres` user (else `nobody`): its data directory is chowned to that user and the server is
started with `Popen(user=…)` — no `su`/`runuser` in between, so the pid we hold is the server's.

    python -m tests.support.postgres      # start one and print its URL until Ctrl-C
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from simulators.broker import free_port, wait_port

SUPERUSER = "sitewatt"
TEST_SETTINGS = {
    # Tests never cut the power: durability on disk only costs them time. Benches keep the
    # defaults (fsync, synchronous_commit on), which the ingest contract relies on.
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}


def pg_bindir() -> Path | None:
    """The newest installed PostgreSQL's bin directory (Debian's layout), if any."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1].parent
    exe = shutil.which("postgres")
    return Path(exe).parent if exe else None


def pg_available() -> bool:
    bindir = pg_bindir()
    return bindir is not None and (bindir / "initdb").exists()


def _run_as() -> pwd.struct_passwd | None:
    """The user to own the cluster: None (ourselves) unless we are root."""
    if os.getuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("running as root and no 'postgres' or 'nobody' user to own the cluster")


def _workdir() -> Path:
    """A temp dir the cluster's owner can reach: under /tmp when we are root (a TMPDIR under
    /root would not be)."""
    return Path(tempfile.mkdtemp(prefix="sitewatt-pg-", dir="/tmp" if os.getuid() == 0 else None))


@dataclass
class PgCluster:
    """One postgres server we started; `close()` stops exactly it and removes its files."""

    settings: dict[str, str] = field(default_factory=dict)
    port: int = 0
    host: str = "127.0.0.1"
    workdir: Path = field(default_factory=lambda: _workdir())
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def data(self) -> Path:
        return self.workdir / "data"

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{dbname}"

    def _user_kw(self) -> dict[str, object]:
        user = _run_as()
        if user is None:
            return {}
        return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}

    def start(self, timeout: float = 60.0) -> PgCluster:
        bindir = pg_bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
        user = _run_as()
        self.workdir.chmod(0o755)  # the cluster's owner must reach its data directory
        self.data.mkdir(mode=0o700)
        if user is not None:
            os.chown(self.data, user.pw_uid, user.pw_gid)
        log_path = self.workdir / "postgres.log"
        with open(log_path, "ab") as log:
            subprocess.run(
                [str(bindir / "initdb"), "-D", str(self.data), "-U", SUPERUSER, "--auth=trust",
                 "-E", "UTF8", "--locale=C", "--no-sync"],
                check=True, stdout=log, stderr=log, stdin=subprocess.DEVNULL, timeout=timeout,
                **self._user_kw(),  # type: ignore[arg-type]
            )  # fmt: skip
        if self.port == 0:
            self.port = free_port(self.host)
        argv = [str(bindir / "postgres"), "-D", str(self.data), "-p", str(self.port),
                "-c", f"listen_addresses={self.host}",
                "-c", "unix_socket_directories="]  # fmt: skip
        for key, value in self.settings.items():
            argv += ["-c", f"{key}={value}"]
        log = open(log_path, "ab")  # noqa: SIM115 - lives with the process
        self.proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            **self._user_kw(),  # type: ignore[arg-type]
        )
        log.close()
        try:
            wait_port(self.host, self.port, timeout, proc=self.proc)
            self._wait_accepting(timeout)
        except BaseException:
            self.close()
            raise
        return self

    def _wait_accepting(self, timeout: float) -> None:
        """The port opens before recovery ends; wait until a connection is accepted."""
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg.connect(self.url(), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def create_database(self, name: str) -> str:
        """A new empty database; its URL."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, ending any session still connected to it."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown (SIGINT) of the server we started; SIGKILL if it hangs."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> PgCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _stop_on(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    # SIGTERM too (a background job ignores SIGINT): the cluster is stopped and removed either way
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _stop_on)
    with PgCluster() as cluster:
        print(cluster.url(), flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()


__all__ = ["TEST_SETTINGS", "PgCluster", "pg_available", "pg_bindir"]
