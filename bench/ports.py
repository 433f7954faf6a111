"""Loopback ports for servers that benchmarks and tests start themselves.

A port taken from the kernel with bind(0) comes from the ephemeral range, which is also where every
outgoing connection gets its local port: between picking the port and the server binding it, a
client socket (a server's connection to PostgreSQL, a load generator's) can take it, and the server
fails with "address already in use". Ports below the ephemeral range are never handed out that way.
"""
from __future__ import annotations

import random
import socket
import time

FALLBACK_EPHEMERAL_LOW = 32768  # Linux's default net.ipv4.ip_local_port_range starts here
LOWEST = 10000


def ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as ranges:
            return int(ranges.read().split()[0])
    except (OSError, ValueError, IndexError):
        return FALLBACK_EPHEMERAL_LOW


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing is bound to now, outside the ephemeral range when there is room below it."""
    high = ephemeral_low()
    if high - LOWEST >= 1000:
        for _ in range(200):
            port = random.randrange(LOWEST, high)
            with socket.socket() as sock:
                try:
                    sock.bind((host, port))
                except OSError:
                    continue
                return port
    with socket.socket() as sock:  # no room below the ephemeral range: let the kernel choose
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    """Block until something accepts connections on host:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout} s")
