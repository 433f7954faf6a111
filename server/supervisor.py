"""--processes N: a parent that forks N servers, each on its own SO_REUSEPORT socket, and keeps them up.

The parent binds one SO_REUSEPORT listening socket per child slot before any event loop exists,
forks, and never runs an event loop itself. The kernel spreads new connections across the
slots' sockets (one shared socket let one child take nearly all of them). Because the parent
keeps each slot's socket open, a slot's connection queue survives its child: a restarted or
rolled child inherits the same socket, so connections that arrive meanwhile wait in the queue
instead of being refused.
"""
from __future__ import annotations

import logging
import os
import select
import signal
import socket
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from .config import Settings

log = logging.getLogger("server.supervisor")

READY = b"R"
CONFIG_ERROR = b"E"  # + the message: a child cannot run with these settings (a bad --app)
EXIT_CONFIG = 2  # the launcher's exit code for that
READY_TIMEOUT = 60.0
CRASH_WINDOW = 60.0


@dataclass
class Slot:
    """One child position: its listening sockets and the process serving them now."""

    index: int
    http_sockets: list[socket.socket]
    tcp_sockets: list[socket.socket] | None
    pid: int | None = None
    ready_fd: int | None = None
    restart_at: float | None = None
    retiring: set[int] = field(default_factory=set)  # old pids draining after a roll
    error: str | None = None  # what its child reported instead of being ready


class Supervisor:
    """Starts, watches, restarts, rolls and stops the children of one server."""

    def __init__(self, settings: Settings, run_child: Callable[[Settings, Slot, int], int],
                 bind: Callable[..., list[socket.socket]]) -> None:
        self.settings = settings
        self.run_child = run_child
        self.slots: list[Slot] = []
        port, tcp_port = settings.port, settings.tcp_port
        for index in range(settings.processes):
            http = bind(settings.address, port, settings.backlog, reuse_port=True)
            port = http[0].getsockname()[1]  # with --port 0, every slot shares the first's port
            tcp = None
            if tcp_port is not None:
                tcp = bind(settings.address, tcp_port, settings.backlog, reuse_port=True)
                tcp_port = tcp[0].getsockname()[1]
            self.slots.append(Slot(index, http, tcp))
        self.port, self.tcp_port = port, tcp_port
        self.crashes: deque[float] = deque()
        self.stop_signals = 0
        self.roll_requested = False
        self.exit_codes: list[int] = []

    # --- children ---

    def spawn(self, slot: Slot) -> int:
        """Fork a child for a slot; returns its pid. The child never returns from here."""
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child
            os.close(read_fd)
            code = 1
            try:
                for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    signal.signal(signum, signal.SIG_DFL)
                for other in self.slots:  # only its own sockets; others close when their child goes
                    if other is not slot:
                        for sock in other.http_sockets + (other.tcp_sockets or []):
                            sock.close()
                code = self.run_child(self.settings, slot, write_fd)
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        os.close(write_fd)
        slot.pid, slot.ready_fd = pid, read_fd
        return pid

    def wait_ready(self, slot: Slot, timeout: float = READY_TIMEOUT) -> bool:
        """Wait until the slot's new child says it serves; False if it died or took too long."""
        deadline = time.monotonic() + timeout
        fd = slot.ready_fd
        assert fd is not None
        try:
            while time.monotonic() < deadline:
                readable, _, _ = select.select([fd], [], [], 0.1)
                if readable:
                    said = os.read(fd, 4096)
                    if said.startswith(CONFIG_ERROR):
                        slot.error = said[len(CONFIG_ERROR):].decode(errors="replace")
                    return said == READY
            return False
        finally:
            os.close(fd)
            slot.ready_fd = None

    def reap(self) -> list[tuple[int, int]]:
        """Collect every child that exited: [(pid, exit code)]."""
        exited = []
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            exited.append((pid, os.waitstatus_to_exitcode(status)))
        return exited

    def handle_exits(self, exited: list[tuple[int, int]], stopping: bool) -> bool:
        """Note exits; schedule restarts for crashes. False when children crash in a loop."""
        now = time.monotonic()
        for pid, code in exited:
            for slot in self.slots:
                if pid in slot.retiring:
                    slot.retiring.discard(pid)
                    if code != 0:
                        log.warning("retired child %d exited with %d", pid, code)
                    break
                if pid == slot.pid:
                    slot.pid = None
                    self.exit_codes.append(code)
                    if stopping:
                        break
                    log.error("child %d (slot %d) died with %d; restarting", pid, slot.index, code)
                    self.crashes.append(now)
                    while self.crashes and self.crashes[0] < now - CRASH_WINDOW:
                        self.crashes.popleft()
                    if len(self.crashes) > self.settings.max_restarts:
                        log.error("children crashed %d times within %d s: giving up",
                                  len(self.crashes), CRASH_WINDOW)
                        return False
                    slot.restart_at = now + min(5.0, 0.1 * 2 ** (len(self.crashes) - 1))
                    break
        return True

    def restart_due(self) -> None:
        """Start the children whose restart time has come."""
        now = time.monotonic()
        for slot in self.slots:
            if slot.pid is None and slot.restart_at is not None and slot.restart_at <= now:
                slot.restart_at = None
                self.spawn(slot)
                if not self.wait_ready(slot):
                    log.error("restarted child for slot %d did not become ready", slot.index)

    def roll(self) -> None:
        """SIGHUP: replace the children one at a time; each new one is serving before the old drains."""
        log.info("rolling restart of %d children", len(self.slots))
        for slot in self.slots:
            old = slot.pid
            self.spawn(slot)
            if not self.wait_ready(slot):
                log.error("new child for slot %d did not become ready; keeping the old one", slot.index)
                if slot.pid is not None:
                    os.kill(slot.pid, signal.SIGKILL)
                    slot.retiring.add(slot.pid)
                slot.pid = old
                return
            if old is not None:
                slot.retiring.add(old)
                os.kill(old, signal.SIGTERM)
                deadline = time.monotonic() + self.settings.shutdown_timeout + 5
                while old in slot.retiring and time.monotonic() < deadline:
                    if not self.handle_exits(self.reap(), stopping=False):
                        return
                    time.sleep(0.02)

    # --- the parent's loop ---

    def _on_signal(self, signum: int, _frame: object) -> None:
        if signum == signal.SIGHUP:
            self.roll_requested = True
        else:
            self.stop_signals += 1

    def run(self, announce: Callable[[str], None]) -> int:
        """Supervise until told to stop; the exit code is 0 only if every child drained cleanly."""
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._on_signal)
        for slot in self.slots:
            self.spawn(slot)
        for slot in self.slots:
            if not self.wait_ready(slot):
                self.stop_children(signal.SIGKILL)
                if slot.error is not None:  # every child would say it: said once
                    print(f"python -m server: error: {slot.error}", file=sys.stderr, flush=True)
                    return EXIT_CONFIG
                log.error("child for slot %d did not start", slot.index)
                return 1
        if self.tcp_port is not None:
            announce(f"TCP greeting service on {self.settings.address}:{self.tcp_port}")
        url = self.settings.replace(port=self.port).url
        announce(f"Serving on {url} (pid {os.getpid()}, {len(self.slots)} processes)")
        healthy = True
        while not self.stop_signals and healthy:
            healthy = self.handle_exits(self.reap(), stopping=False)
            if self.roll_requested:
                self.roll_requested = False
                self.roll()
            self.restart_due()
            time.sleep(0.05)
        return self.shutdown() if healthy else self.give_up()

    def close_listeners(self) -> None:
        """Drop the parent's copies of the listening sockets (the children then own the last ones)."""
        for slot in self.slots:
            for sock in slot.http_sockets + (slot.tcp_sockets or []):
                sock.close()

    def stop_children(self, signum: int) -> None:
        for slot in self.slots:
            for pid in [slot.pid, *slot.retiring]:
                if pid is not None:
                    try:
                        os.kill(pid, signum)
                    except ProcessLookupError:
                        pass

    def shutdown(self) -> int:
        """Forward the stop to every child and wait for their drains (a second signal forces)."""
        log.info("stopping %d children", len(self.slots))
        self.close_listeners()  # once the children close theirs, new connections are refused
        self.exit_codes = []
        self.stop_children(signal.SIGTERM)
        forced = False
        deadline = time.monotonic() + self.settings.shutdown_timeout + 10
        while any(slot.pid is not None or slot.retiring for slot in self.slots):
            self.handle_exits(self.reap(), stopping=True)
            if (self.stop_signals > 1 or time.monotonic() > deadline) and not forced:
                forced = True
                self.stop_children(signal.SIGKILL)
            time.sleep(0.02)
        return 0 if not forced and all(code == 0 for code in self.exit_codes) else 1

    def give_up(self) -> int:
        self.close_listeners()
        self.stop_children(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while any(slot.pid is not None for slot in self.slots) and time.monotonic() < deadline:
            self.handle_exits(self.reap(), stopping=True)
            time.sleep(0.05)
        self.stop_children(signal.SIGKILL)
        return 1


def run_supervised(settings: Settings, run_child: Callable[[Settings, Slot, int], int],
                   bind: Callable[..., list[socket.socket]]) -> int:
    """Entry point of --processes N (N > 1).

    ``run_child`` is all a child needs beyond its slot: the caller binds into it what it chose
    before the fork (the event loop, the runtime directory the workers share).
    """
    supervisor = Supervisor(settings, run_child, bind)

    def announce(line: str) -> None:
        print(line, flush=True)

    return supervisor.run(announce)
