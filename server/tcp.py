"""The TCP greeting service (seed 000): each line a client sends gets back 'Hello, <line>'."""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from tornado import iostream
from tornado.tcpserver import TCPServer

from .services import Invalid
from .services.greeting import GreetingService

log = logging.getLogger("server.tcp")


class GreetingTCPServer(TCPServer):
    """A line protocol over TCP with a line-length limit, an idle timeout and a clean shutdown."""

    def __init__(self, greeting: GreetingService, max_line: int, idle_timeout: float) -> None:
        super().__init__(max_buffer_size=max(max_line * 4, 65536))
        self.greeting = greeting
        self.max_line = max_line
        self.idle_timeout = idle_timeout
        self.streams: set[iostream.IOStream] = set()
        self.closing = False

    @property
    def connection_count(self) -> int:
        """Open TCP client connections."""
        return len(self.streams)

    async def handle_stream(self, stream: iostream.IOStream, address: Any) -> None:
        """Serve one client until it closes, goes idle, or sends a line that is too long."""
        self.streams.add(stream)
        buffer = bytearray()
        try:
            while not self.closing:
                try:
                    chunk = await asyncio.wait_for(stream.read_bytes(65536, partial=True),
                                                   self.idle_timeout)
                except asyncio.TimeoutError:
                    await stream.write(b"Bye: idle for too long\n")
                    return
                buffer += chunk
                while True:
                    end = buffer.find(b"\n")
                    if end < 0:
                        break
                    line = bytes(buffer[:end]).rstrip(b"\r")
                    del buffer[: end + 1]
                    if len(line) > self.max_line:
                        await self._refuse_long_line(stream)
                        return
                    await stream.write(self._answer(line))
                if len(buffer) > self.max_line:
                    await self._refuse_long_line(stream)
                    return
        except iostream.StreamClosedError:
            pass
        finally:
            self.streams.discard(stream)
            stream.close()

    async def _refuse_long_line(self, stream: iostream.IOStream) -> None:
        await stream.write(f"Error: line longer than {self.max_line} bytes\n".encode())

    def _answer(self, line: bytes) -> bytes:
        text = line.decode("utf-8", errors="replace")
        try:
            return (self.greeting.greet(text) + "\n").encode()
        except Invalid as exc:
            return f"Error: {exc.message}\n".encode()

    async def shutdown(self, timeout: float) -> None:
        """Stop accepting, let pending answers flush, then close every client connection."""
        self.closing = True
        self.stop()
        deadline = time.monotonic() + timeout
        for stream in list(self.streams):
            while stream.writing() and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            stream.close()
