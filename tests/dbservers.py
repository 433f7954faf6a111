"""Real PostgreSQL and Redis servers for tests: private data directories, loopback ports, stoppable."""
from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

from bench.pgserver import PostgresServer, postgres_bin_dir  # noqa: F401  (the tests' import path)
from bench.ports import free_port, wait_port


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
