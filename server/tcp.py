"""The TCP greeting service (seed 000): each line a client sends gets back 'Hello, <line>'."""
from __future__ import annotations

import asyncio
import logging
import socket
import time

from .engine.listeners import Listeners
from .services import Invalid
from .services.greeting import GreetingService

log = logging.getLogger("server.tcp")


class GreetingTCPServer:
    """A line protocol over TCP with a line-length limit, an idle timeout and a clean shutdown.

    Built on asyncio streams rather than Tornado's IOStream: an IOStream closes the whole
    connection when the client half-closes, so lines sent together with the client's FIN went
    unanswered. Here end of input only ends reading; what was sent before it is still answered
    (a last line without a newline included), then the connection closes.
    """

    def __init__(self, greeting: GreetingService, max_line: int, idle_timeout: float) -> None:
        self.greeting = greeting
        self.max_line = max_line
        self.idle_timeout = idle_timeout
        self.closing = False
        self.writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.listeners = Listeners()

    @property
    def connection_count(self) -> int:
        """Open TCP client connections."""
        return len(self.writers)

    def add_sockets(self, sockets: list[socket.socket]) -> None:
        """Serve on already-bound listening sockets (their listen backlog is kept)."""
        self.listeners.add(sockets, self._listen)

    async def _listen(self, sock: socket.socket, backlog: int) -> asyncio.AbstractServer:
        return await asyncio.start_server(self._serve, sock=sock, backlog=backlog, start_serving=False,
                                          limit=max(self.max_line * 2, 65536))

    def stop(self) -> None:
        """Stop accepting: close the listening sockets, so new connections are refused."""
        self.listeners.stop()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one client until it closes, goes idle, or sends a line that is too long."""
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self.writers.add(writer)
        try:
            await self._converse(reader, writer)
        except (TimeoutError, ConnectionError, OSError):
            pass  # reset by the client, or it stopped reading our answers for idle_timeout
        finally:
            self.writers.discard(writer)
            writer.close()
            if task is not None:
                self._tasks.discard(task)

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buffer = bytearray()
        while not self.closing:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), self.idle_timeout)
            except TimeoutError:
                await self._send(writer, [b"Bye: idle for too long\n"])
                return
            if self.closing:  # shutdown() began during the read: answer nothing more
                # mypy keeps self.closing narrowed to False (the loop's condition) across the await
                return  # type: ignore[unreachable]
            eof = not chunk
            buffer += chunk
            answers = []
            while True:
                end = buffer.find(b"\n")
                if end < 0:
                    if eof and buffer:  # a last line without a newline, ended by the client's FIN
                        end = len(buffer)
                    else:
                        break
                line = bytes(buffer[:end]).rstrip(b"\r")
                del buffer[: end + 1]
                if len(line) > self.max_line:
                    answers.append(self._too_long())
                    await self._send(writer, answers)
                    return
                answers.append(self._answer(line))
            if len(buffer) > self.max_line:
                answers.append(self._too_long())
                await self._send(writer, answers)
                return
            if answers:
                await self._send(writer, answers)
            if eof:
                return  # the client half-closed: everything it sent is answered, now we close

    async def _send(self, writer: asyncio.StreamWriter, answers: list[bytes]) -> None:
        writer.write(b"".join(answers))
        try:
            await asyncio.wait_for(writer.drain(), self.idle_timeout)
        except TimeoutError:
            # a client that never reads must not hold the connection (and our buffer) for
            # ever; close() would wait for the buffer to flush, so drop it
            writer.transport.abort()
            raise

    def _too_long(self) -> bytes:
        return f"Error: line longer than {self.max_line} bytes\n".encode()

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
        for writer in list(self.writers):
            transport = writer.transport
            while (not transport.is_closing() and transport.get_write_buffer_size()
                   and time.monotonic() < deadline):
                await asyncio.sleep(0.01)
            transport.close()
        tasks = list(self._tasks)
        if tasks:
            # closing the transports ends their reads at once; a stuck one is cancelled
            _, stuck = await asyncio.wait(tasks, timeout=1.0)
            for task in stuck:
                task.cancel()
            if stuck:
                await asyncio.wait(stuck, timeout=1.0)
