"""A throw-away PostgreSQL cluster on a loopback port (initdb, pg_ctl): for the tests (the
postgres_server fixture in tests/conftest.py) and the TechEmpower benchmark (bench/suite_techempower.py)."""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
from pathlib import Path

from .ports import free_port, wait_port


def postgres_bin_dir() -> Path | None:
    """Where Debian's PostgreSQL server binaries are (newest version), or None."""
    def version(pg_ctl: str) -> int:
        name = Path(pg_ctl).parent.parent.name
        return int(name) if name.isdigit() else 0
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=version)
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

    def pin(self, cpus: set[int]) -> None:
        """Pin the postmaster and its processes to ``cpus`` (backends forked later inherit it)."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        todo = [postmaster]
        while todo:
            pid = todo.pop()
            try:
                os.sched_setaffinity(pid, cpus)
                todo += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
            except OSError:  # a process that just ended
                pass
