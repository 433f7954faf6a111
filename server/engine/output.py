"""What a connection writes: straight to the transport, or held while pipelined requests queue."""
from __future__ import annotations

import asyncio

HOLD_MAX = 32  # whole pipelined responses held for one write at the most
HOLD_BYTES = 16384  # ... each of at most this size


class Output:
    """The connection's writes, and the whole responses held back to go out in one write.

    Pipelined requests answered in a row (TFB's plaintext: 16 at a time) go out in one write,
    not one system call each. Held output goes out with the next write that is not held, when
    the connection closes or detaches (flush), when HOLD_MAX responses are held, and when a
    queued request's handler does not answer in its first step (Connection.release_held).
    """

    __slots__ = ("transport", "held")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.held: list[bytes | memoryview] | None = None  # whole responses not written yet

    def send(self, data: bytes | memoryview, hold: bool = False) -> None:
        """Write to the transport, or hold ``data`` (a whole response) while requests are queued."""
        held = self.held
        if hold:
            if held is None:
                self.held = [data]
                return
            if len(held) < HOLD_MAX:
                held.append(data)
                return
        if held is not None:
            self.held = None
            held.append(data)
            data = b"".join(held)
        transport = self.transport
        if transport is not None:  # callers write only while open; kept cheap and safe
            transport.write(data)

    def flush(self) -> None:
        """Write the held responses now."""
        held = self.held
        if held is not None:
            self.held = None
            if self.transport is not None:
                self.transport.write(b"".join(held))
