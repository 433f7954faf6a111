"""Listening sockets bound before the event loop runs, served once it does (HTTP and TCP share it).

Kept free of httptools, so the TCP greeting service can use it without the fast engine.
"""
from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import Awaitable, Callable

log = logging.getLogger("server.http")

# serve(sock, backlog) -> an asyncio server on that socket, not necessarily serving yet
Serve = Callable[[socket.socket, int], Awaitable[asyncio.AbstractServer]]


def listen_backlog(sock: socket.socket) -> int:
    """The backlog a listening socket was given, so that asyncio's listen() call keeps it.

    Linux reports it as tcpi_sacked in TCP_INFO of a listening socket; elsewhere SOMAXCONN.
    """
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
        backlog: int = struct.unpack_from("I", info, 28)[0]
        if backlog > 0:
            return backlog
    except (OSError, AttributeError, struct.error):
        pass
    return socket.SOMAXCONN


class Listeners:
    """The listening side of one server: start serving sockets, and stop() to refuse new clients.

    Serving a socket needs the running loop, so add() starts a task per socket; stop() may come
    before that task ran (the socket is then closed unserved) or after (its server is closed).
    """

    def __init__(self) -> None:
        self.stopped = False
        self._pending: set[socket.socket] = set()
        self._servers: list[asyncio.AbstractServer] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def add(self, sockets: list[socket.socket], serve: Serve,
            loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Serve every socket with serve(sock, backlog), keeping the backlog it was bound with."""
        loop = loop or asyncio.get_running_loop()
        for sock in sockets:
            self._pending.add(sock)
            task = loop.create_task(self._listen(sock, serve))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _listen(self, sock: socket.socket, serve: Serve) -> None:
        if sock not in self._pending:
            return  # stop() came first and closed it
        self._pending.discard(sock)
        try:
            server = await serve(sock, listen_backlog(sock))
        except Exception:
            log.exception("cannot serve on %s", sock)
            sock.close()
            return
        self._servers.append(server)
        if self.stopped:
            server.close()
            return
        await server.start_serving()

    def stop(self) -> None:
        """Stop accepting: close the listening sockets, so new connections are refused."""
        self.stopped = True
        for sock in self._pending:
            sock.close()
        self._pending.clear()
        for server in self._servers:
            server.close()
        self._servers.clear()
