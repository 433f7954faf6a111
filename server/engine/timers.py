"""The timers a connection arms, in front of the server's single sweep."""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .connection import Connection
    from .server import FastHTTPServer


class Timers:
    """What a connection tells the server's timers (one object per server, shared).

    The server keeps every deadline in insertion-ordered dicts that one periodic sweep walks
    (server.py); a connection only says what happened. The attributes are the server's bound
    methods, taken once, so a call costs what calling the server did.
    """

    __slots__ = ("idle", "head_started", "head_arrived", "body_started", "body_ended",
                 "write_stalled", "write_flowing", "closing")

    def __init__(self, server: FastHTTPServer) -> None:
        # waiting for a request head: idle_timeout from now (header_timeout is head_started's)
        self.idle: Callable[[Connection], None] = server.idle
        # part of a head arrived / the head is complete
        self.head_started: Callable[[Connection], None] = server.head_started
        self.head_arrived: Callable[[Connection], None] = server.head_arrived
        # body_timeout runs (the timeout given) / the body is complete
        self.body_started: Callable[[Connection, float], None] = server.body_started
        self.body_ended: Callable[[Connection], None] = server.body_ended
        # output piling up in the transport must move within send_timeout / it drained
        self.write_stalled: Callable[[Connection], None] = server.write_stalled
        self.write_flowing: Callable[[Connection], None] = server.write_flowing
        # the connection is closing: no timer of it runs any more
        self.closing: Callable[[Connection], None] = server.closing
