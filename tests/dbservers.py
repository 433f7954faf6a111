"""Real PostgreSQL and Redis servers for tests: private data directories, loopback ports, stoppable."""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
from pathlib import Path

from bench.ports import free_port, wait_port


def postgres_bin_dir() -> Path | None:
    """Where Debian's PostgreSQL server binaries are (newest version), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                   key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).parent if pg_ctl else None


class PostgresServer:
    """A throw-away PostgreSQL cluster (initdb, pg_ctl) on a free loopback port.

    PostgreSQL refuses to run as root, so when the tests run as root the cluster belongs to the
    'postgres' system user that Debian's package creates.
    """

    def __init__(self, base: Path) -> None:
        bin_dir = postgres_bin_dir()
        if bin_dir is None:
            raise FileNotFoundError("PostgreSQL server binaries (apt-get install postgresql)")
        self.bin = bin_dir
        self.base = base
        self.data = base / "pgdata"
        self.port = free_port()
        self.user = None
        if os.geteuid() == 0:
            self.user = pwd.getpwnam("postgres")
        base.mkdir(parents=True, exist_ok=True)
        if self.user:
            os.chown(base, self.user.pw_uid, self.user.pw_gid)
        self._run([str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
                   "--auth=trust", "--no-sync", "-E", "UTF8"], timeout=120)

    def _run(self, argv: list[str], timeout: float = 60) -> None:
        if self.user:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        subprocess.run(argv, check=True, capture_output=True, timeout=timeout, cwd=self.base)

    @property
    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def start(self) -> None:
        """Start (or restart) the server on its port; returns when it accepts connections."""
        options = (f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 "
                   f"-c fsync=on -c max_connections=200")
        self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options,
                   "-l", str(self.base / "server.log"), "-w", "-t", "60", "start"], timeout=90)
        wait_port(self.port, 30)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (fast: disconnect clients, clean shutdown)."""
        if self.running:
            self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"])

    def create_database(self, name: str) -> str:
        """Create a database and return its SQLAlchemy asyncpg URL."""
        self._run([str(self.bin / "psql") if (self.bin / "psql").exists() else "psql",
                   "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", "postgres",
                   "-c", f'CREATE DATABASE "{name}"'])
        return self.url(name)

    def url(self, name: str) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{name}"


class RedisServer:
    """A redis-server process on a free loopback port, no persistence."""

    def __init__(self, base: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server (apt-get install redis-server)")
        self.binary = binary
        self.base = base
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        base.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        """Start (or restart) Redis on its port; returns when it accepts connections."""
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.base), "--protected-mode", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, 20)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def flush(self) -> None:
        """Empty every database (between tests)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(b"FLUSHALL\r\n")
            assert sock.recv(64).startswith(b"+OK")

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def clients(self) -> int:
        """Connections open to this Redis (INFO clients), not counting the one asking."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(b"INFO clients\r\n")
            data = b""
            while b"connected_clients:" not in data or not data.endswith(b"\r\n"):
                data += sock.recv(65536)
        line = next(line for line in data.decode().splitlines()
                    if line.startswith("connected_clients:"))
        return int(line.split(":")[1]) - 1
