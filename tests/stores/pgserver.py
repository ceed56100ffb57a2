"""A throwaway PostgreSQL server for tests and benchmarks: initdb in a temp dir, a Unix socket.

Nothing is mocked: it is the real server 15 from ``/usr/lib/postgresql``. initdb
refuses to run as root, so as root the cluster belongs to ``postgres`` (``runuser``).
The server listens on no TCP port, only on a socket in its own directory, with
``trust`` authentication for local connections: tests connect as whichever role
they want to act as, and the server's privileges decide what that role may do.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg

SUPERUSER = "postgres"
# After a crash the server syncs its data directory before recovery: syncfs does it with
# one call instead of one fsync per file (durability is the same; only faster to start).
_FAST_RECOVERY = "-c recovery_init_sync_method=syncfs"


@dataclass(frozen=True)
class Server:
    """A running server: its data directory and socket directory."""

    data: Path
    socket_dir: Path
    port: int = 5432

    def url(self, user: str = SUPERUSER, dbname: str = "postgres") -> str:
        """A libpq URL for ``user`` over the Unix socket (no password: trust)."""
        return f"postgresql://{user}@/{dbname}?host={self.socket_dir}&port={self.port}"

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``immediate`` is a crash: no checkpoint, clients cut)."""
        _as_owner([_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"], check=False)

    def start(self) -> None:
        """Start (or restart after a stop) the server and wait until it accepts connections.

        Polled here every 20 ms: ``pg_ctl -w`` checks far less often, which would make the
        crash-and-restart tests spend most of their time waiting.
        """
        options = f"-k {self.socket_dir} -c listen_addresses='' -p {self.port} {_FAST_RECOVERY}"
        log = str(self.data / "server.log")
        _as_owner([_bin("pg_ctl"), "-D", str(self.data), "-o", options, "-W", "-l", log, "start"])
        deadline = time.monotonic() + 60
        while True:
            try:
                psycopg.connect(self.url(), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)


def available() -> bool:
    """Whether PostgreSQL's server programs are installed."""
    return bool(_bindirs())


@contextlib.contextmanager
def throwaway_server() -> Iterator[Server]:
    """A fresh cluster, started; stopped and deleted on exit."""
    root = Path(tempfile.mkdtemp(prefix="custodian-pg-"))
    try:
        os.chmod(root, 0o755)
        data, sockets = root / "data", root / "sockets"
        sockets.mkdir()
        if os.geteuid() == 0:
            shutil.chown(root, SUPERUSER)
            shutil.chown(sockets, SUPERUSER)
        _as_owner(
            [
                _bin("initdb"),
                "-D",
                str(data),
                "-U",
                SUPERUSER,
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ]
        )
        server = Server(data, sockets)
        server.start()
        try:
            yield server
        finally:
            server.stop("immediate")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _bindirs() -> list[str]:
    return sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)


def _bin(name: str) -> str:
    for directory in _bindirs():
        path = os.path.join(directory, name)
        if os.access(path, os.X_OK):
            return path
    raise FileNotFoundError(f"PostgreSQL's {name} is not installed (make postgres)")


def _as_owner(argv: list[str], *, check: bool = True) -> None:
    if os.geteuid() == 0:
        argv = ["runuser", "-u", SUPERUSER, "--", *argv]
    subprocess.run(argv, check=check, capture_output=True, timeout=120)
