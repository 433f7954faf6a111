"""Servers under test for ``make bench``: start one pinned to a CPU, wait for its ready line, read
its CPU time, memory and open files from /proc, stop it."""
from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
READY = re.compile(r"Serving on (http://\S+?)/?(?:\s|$)")
TICKS = os.sysconf("SC_CLK_TCK")


def _preexec(cpus: set[int] | None):
    """preexec_fn: pin to ``cpus`` and raise the soft open-file limit to the hard one.

    The servers raise nothing themselves, and the hold scenario gives them 10,000 connections.
    """
    def setup() -> None:
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        if cpus is not None:
            os.sched_setaffinity(0, cpus)
    return setup


class Server:
    """One server subprocess (``python ARGV``) on 127.0.0.1; ``url`` once its ready line is read."""

    def __init__(self, key: str, argv: list[str], log_path: Path, cpus: set[int] | None,
                 cwd: Path = ROOT, wrap: list[str] | None = None) -> None:
        self.key, self.argv, self.log_path, self.url = key, argv, log_path, ""
        self._reader: threading.Thread | None = None
        self.log = open(log_path, "wb")  # stderr: the access log and any traceback
        # `python -m` imports from cwd first: another checkout's cwd serves that checkout's code;
        # ``wrap`` runs python under another program in the same process (valgrind)
        self.proc = subprocess.Popen([*(wrap or ()), sys.executable, *argv], cwd=cwd,
                                     stdout=subprocess.PIPE, stderr=self.log,
                                     stdin=subprocess.DEVNULL, text=True,
                                     preexec_fn=_preexec(cpus))

    @property
    def pid(self) -> int:
        """The process id of the server (the supervisor with --processes N)."""
        return self.proc.pid

    def wait_ready(self, timeout: float = 60.0) -> str:
        """Block until the ready line names the URL; RuntimeError (with the log's tail) if not."""
        deadline = time.monotonic() + timeout
        found: list[str] = []

        def read() -> None:
            for line in self.proc.stdout:  # type: ignore[union-attr]
                match = READY.search(line)
                if match and not found:
                    found.append(match.group(1))
        # the reader keeps draining stdout after the ready line, so the server never blocks on it
        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()
        while not found and self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        if not found:
            self.stop()
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{self.key}: `python {' '.join(self.argv)}` did not become ready:"
                               f"\n{tail}")
        self.url = found[0]
        return self.url

    def pids(self) -> list[int]:
        """This process and all its descendants (the workers of --processes N, compute pools)."""
        out, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            out.append(pid)
            try:
                todo += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
            except OSError:
                pass
        return out

    def cpu_seconds(self) -> float:
        """User + system CPU time used so far by the server's process tree."""
        total = 0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime
            except (OSError, IndexError, ValueError):
                pass
        return total / TICKS

    def rss_kb(self) -> int:
        """VmRSS of the server process in KiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def open_files(self) -> int:
        """File descriptors the server process has open (each connection is one)."""
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 15 s; close the log."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self._reader is not None:
            self._reader.join(5)  # it ends at EOF; closing the pipe under it would raise
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.log.close()


def start_all(specs: dict[str, list[str]], logdir: Path, cpus: set[int] | None,
              cwds: dict[str, Path] | None = None) -> dict[str, Server]:
    """Start every server at once, then wait for each; on failure stop those already started.

    ``cwds`` runs some of them from another directory (a checkout of another commit).
    """
    servers: dict[str, Server] = {}
    try:
        for key, argv in specs.items():
            servers[key] = Server(key, argv, logdir / f"{key}.log", cpus,
                                  (cwds or {}).get(key, ROOT))
        for server in servers.values():
            server.wait_ready()
    except BaseException:
        stop_all(servers)
        raise
    return servers


def stop_all(servers: dict[str, Server]) -> None:
    """Stop every server (in parallel: each may take a moment to drain)."""
    threads = [threading.Thread(target=s.stop) for s in servers.values()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
