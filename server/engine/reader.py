"""Reading requests off a connection's input: the llhttp parser and the state around it.

One Reader per connection runs the parser over what the connection is given (parsing.ParserSink
holds the callbacks, shared by a server's connections) and handles what llhttp leaves to us
across reads: the head size limit, chunk framing overhead, methods llhttp does not know (the
request re-fed under a known one), and refusals, which become an exchange's error. What is
parsed lands in the connection's exchanges: ``parsing`` is the one being filled in.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import httptools
from tornado.log import app_log

from .. import rules
from . import parsing
from .exchange import Exchange
from .parsing import Reject, new_parser

if TYPE_CHECKING:
    from .connection import Connection
    from .parsing import ParserSink


class Reader:
    """The parser of one connection, what it is filling in, and what it counts across reads.

    It keeps no reference to its connection (which owns it): each call is given it, so closing
    a connection leaves no reference cycle for the garbage collector.
    """

    __slots__ = ("sink", "parser", "parsing", "completed", "heads", "head_fed",
                 "head_slack", "method_override", "pending")

    parser: httptools.HttpRequestParser  # set by start(), gone after stop()

    def __init__(self, sink: ParserSink) -> None:
        self.sink = sink
        self.parsing: Exchange | None = None  # the request the parser is filling in
        self.completed = 0  # messages parsed to their end
        self.heads = 0  # request heads parsed
        self.head_fed = 0  # bytes of the current, incomplete head read so far (at least)
        self.head_slack = 0  # ... plus at most this many
        # a method llhttp does not know, for the request re-fed under a known one
        self.method_override: str | None = None
        self.pending: bytes | None = None  # input to parse before the next read's

    def start(self) -> None:
        """The connection is open: a parser for its first request."""
        self.parser = new_parser(self.sink)

    def stop(self, conn: Connection) -> None:
        """Parse nothing more: the connection closed, or a stream took it over."""
        if hasattr(self, "parser"):
            del self.parser  # freed now, not when the handlers let go of the connection
        self.parsing = None
        self.sink.release(conn)

    def parse(self, conn: Connection, data: bytes | bytearray | memoryview) -> None:
        """Run the parser over data; its callbacks fill in this connection's exchanges."""
        pending = self.pending
        if pending is not None:
            self.pending = None
            data = pending + bytes(data)
        again = self.parse_once(conn, data)
        while again is not None:
            again = self.parse_once(conn, again)

    def parse_once(self, conn: Connection, data: bytes | bytearray | memoryview) -> bytes | None:
        """Feed data once; returns input to feed again (a request under a method llhttp knows)."""
        sink = self.sink
        sink.conn = conn  # left set afterwards: cleared when the connection goes
        sink.reader = self
        sink.small_read = self.head_fed + self.head_slack + len(data) <= sink.max_header_size
        parser = self.parser
        completed, heads = self.completed, self.heads
        first = self.parsing  # a message that began in an earlier read (None: data begins one)
        if first is not None:
            sink.ex = first  # the callbacks go on filling it in
            parsed = first.parsed
        else:
            parsed = 0
        again = None
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            conn.pipeline.start_tail(data[exc.args[0]:])
            conn.flow.pause_reading()
        except httptools.HttpParserInvalidMethodError as exc:
            try:
                again = self.unknown_method(conn, data, first, parsed, self.completed - completed)
            except Reject as refusal:
                self.refuse_parsing(conn, refusal.status, refusal.detail)
            else:
                if again is None and self.pending is None:
                    self.parse_error(conn, exc, data)
        except httptools.HttpParserError as exc:
            self.parse_error(conn, exc, data)
        if first is not None and first.chunked and first is self.parsing:
            # a chunked body all through this read: its framing must stay near its data's size
            first.overhead += len(data) - (first.parsed - parsed)
            if parsing.chunk_overhead_exceeded(first) and first.error is None:
                first.error = (400, "chunked body framing far larger than its data "
                                    "(chunk extensions?)")
                conn.discard_input()
        ex = self.parsing
        if ex is not None and not ex.head_done and ex.error is None:
            if ex.url is None and again is None:
                self.keep_method_start(data, first, parsed, self.completed - completed)
            conn.timers.head_started(conn)  # header_timeout runs from a head's first read
            # llhttp has no size limit of its own: count the reads spent inside one head
            if completed == self.completed and heads == self.heads:
                self.head_fed += len(data)  # all of it belongs to the head (bar blank lines)
                limit = sink.max_header_size
                if self.head_fed > limit:
                    violation = rules.head_too_large(limit)
                    ex.error = (violation.status, violation.detail)
                    conn.discard_input()
            else:
                # the head began somewhere in this read: up to all of it may be the head's
                self.head_fed = 0
                self.head_slack = len(data)
        elif self.head_fed or self.head_slack:
            self.head_fed = self.head_slack = 0
        return again

    def unknown_method(self, conn: Connection, data: bytes | bytearray | memoryview, first: Exchange | None,
                       parsed: int, done: int) -> bytes | None:
        """A method llhttp does not know: the request again under one it does, keeping its own.

        RFC 9110 9.1 makes any token a method (Tornado answers an unimplemented one with 405).
        The input from the failed message on is returned to be fed to a fresh parser with its
        method replaced by GET, and the real method is put back into the start line. Finding where
        that message starts needs input that begins at a message boundary: data does, or does
        once the start of its first message (a method split across reads, kept; or the rest of a
        Content-Length body) is accounted for. None when it cannot be found (refused as before)
        or the method is not complete yet (kept as pending input).
        """
        ex = self.parsing
        if ex is None or ex.url is not None:
            return None  # not a method problem (llhttp uses this error for "GET\r\n" too)
        found = self.aligned(data, first, parsed, done)
        if found is None:
            return None
        aligned, done = found
        start = parsing.message_start(aligned, done)
        split = parsing.split_method(aligned, start)
        self.drop_exchange(conn, ex)
        self.parser = new_parser(self.sink)
        if split is None:
            self.pending = bytes(aligned[start:])  # the method continues in the next read
            return None
        method, rest = split
        self.method_override = method.decode("ascii")
        return parsing.KNOWN_METHOD + bytes(aligned[rest:])

    @staticmethod
    def aligned(data: bytes | bytearray | memoryview, first: Exchange | None, parsed: int,
                done: int) -> tuple[bytes | bytearray | memoryview, int] | None:
        """data from a message boundary on and the messages complete in it; None if unknown.

        ``first`` was being parsed when data arrived (``parsed`` of its body bytes by then) and
        ``done`` messages completed in data: a split method's start is prepended, the rest of a
        Content-Length body skipped. The end of a head or of a chunked body cannot be found.
        """
        if first is None:
            return data, done
        if first.url is None:
            if first.method_prefix is None:
                return None
            return first.method_prefix + bytes(data), done
        if first.head_done and first.length is not None and not first.chunked and done:
            return data[first.length - parsed:], done - 1
        return None

    def keep_method_start(self, data: bytes | bytearray | memoryview, first: Exchange | None,
                          parsed: int, done: int) -> None:
        """A read ended inside a request's method: keep its start, should llhttp not know it."""
        ex = self.parsing
        assert ex is not None  # the read ended inside this request's head
        if ex is first:
            if ex.method_prefix is not None:
                ex.method_prefix += bytes(data)
            return
        found = self.aligned(data, first, parsed, done)
        if found is not None:
            start = parsing.message_start(*found)
            ex.method_prefix = bytes(found[0][start:start + parsing.MAX_METHOD_LENGTH + 1])

    def drop_exchange(self, conn: Connection, ex: Exchange) -> None:
        """Forget an exchange whose message will be parsed again."""
        conn.pipeline.drop(ex)
        if self.parsing is ex:
            self.parsing = None

    def parse_error(self, conn: Connection, exc: httptools.HttpParserError,
                    data: bytes | bytearray | memoryview = b"") -> None:
        """The parser refused the input: the request it was reading gets an error response."""
        context = exc.__context__
        if isinstance(context, Reject):
            self.refuse_parsing(conn, context.status, context.detail)
        elif isinstance(exc, httptools.HttpParserCallbackError) and context is not None:
            app_log.error("HTTP parser callback failed",
                          exc_info=(type(context), context, context.__traceback__))
            self.refuse_parsing(conn, 500, "internal error")
        else:
            self.refuse_parsing(conn, 400, parsing.describe(exc, data))

    def refuse_parsing(self, conn: Connection, status: int, detail: str) -> None:
        """The request being parsed is refused with this status; nothing more is parsed."""
        self.method_override = None
        self.pending = None
        ex = self.parsing
        if ex is None:
            ex = Exchange(conn)
            conn.pipeline.enqueue(ex)
        ex.error = (status, detail)
        self.parsing = None
        conn.discard_input()

