"""Per-request pieces of Tornado's HTTPServer that the fast engine offers too, on public APIs.

- ``CallableDelegate``: a plain ``callback(request)`` as the application (Tornado's legacy form).
- ``GzipDelegate``: ``decompress_request=True`` (``Content-Encoding: gzip`` bodies), bounded by the
  request's body limit and handed on in pieces of at most ``chunk_size``.
- ``ProxyContext``: ``xheaders=True``: the client address and scheme a proxy reports.
"""
from __future__ import annotations

import zlib
from collections.abc import Awaitable, Callable, Collection
from typing import TYPE_CHECKING, Any

from tornado import httputil, netutil
from tornado.util import GzipDecompressor

if TYPE_CHECKING:
    from .connection import Connection
    from .exchange import Exchange


class CallableDelegate(httputil.HTTPMessageDelegate):
    """Collects a whole request and calls ``callback(request)`` with it (body parsed)."""

    __slots__ = ("connection", "callback", "request", "chunks")

    def __init__(self, callback: Callable[[httputil.HTTPServerRequest], Any],
                 connection: httputil.HTTPConnection) -> None:
        self.connection = connection
        self.callback = callback
        self.request: httputil.HTTPServerRequest | None = None
        self.chunks: list[bytes] = []

    @classmethod
    def starter(cls, callback: Callable[[httputil.HTTPServerRequest], Any]) -> Callable[..., Any]:
        """A start_request(server_conn, request_conn) that serves every request with callback."""
        def start(server_conn: object, request_conn: httputil.HTTPConnection) -> CallableDelegate:
            return cls(callback, request_conn)
        return start

    def headers_received(self, start_line: Any, headers: httputil.HTTPHeaders) -> None:
        self.request = httputil.HTTPServerRequest(connection=self.connection, start_line=start_line,
                                                  headers=headers)

    def data_received(self, chunk: bytes) -> None:
        self.chunks.append(chunk)

    def finish(self) -> None:
        request = self.request
        assert request is not None
        request.body = b"".join(self.chunks)
        httputil.parse_body_arguments(request.headers.get("Content-Type", ""), request.body,
                                      request.body_arguments, request.files, request.headers)
        for name, values in request.body_arguments.items():
            request.arguments.setdefault(name, []).extend(values)
        self.callback(request)

    def on_connection_close(self) -> None:
        self.chunks = []


class GzipDelegate(httputil.HTTPMessageDelegate):
    """Decompresses a ``Content-Encoding: gzip`` request body for the delegate it wraps.

    As Tornado's: the header becomes ``X-Consumed-Content-Encoding``, bad data is a 400 ("invalid
    gzip data"), and a body that decompresses past the request's body limit is refused ("decompressed
    body too large") without decompressing the rest: output is produced at most ``chunk_size`` at
    a time, so a small bomb cannot fill memory.
    """

    __slots__ = ("delegate", "exchange", "decompressor", "size")

    def __init__(self, delegate: httputil.HTTPMessageDelegate, exchange: Exchange) -> None:
        self.delegate = delegate
        self.exchange = exchange
        self.decompressor: GzipDecompressor | None = None
        self.size = 0

    def headers_received(self, start_line: Any, headers: httputil.HTTPHeaders) -> Any:
        encoding = headers.get("Content-Encoding", "")
        if encoding.lower() == "gzip":
            self.decompressor = GzipDecompressor()
            # delegates downstream see only the decompressed body
            headers.add("X-Consumed-Content-Encoding", encoding)
            del headers["Content-Encoding"]
        return self.delegate.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        if self.decompressor is None:
            return self.delegate.data_received(chunk)
        return self._decompress(chunk)

    async def _decompress(self, data: bytes) -> None:
        decompressor = self.decompressor
        assert decompressor is not None
        chunk_size = self.exchange.conn.server.chunk_size
        limit = self.exchange.body_limit()
        while data:
            try:
                out = decompressor.decompress(data, chunk_size)
            except zlib.error as exc:
                raise httputil.HTTPInputError(f"invalid gzip data: {exc}") from None
            if out:
                self.size += len(out)
                if self.size > limit:
                    raise httputil.HTTPInputError("decompressed body too large")
                result = self.delegate.data_received(out)
                if result is not None:
                    await result
            tail = decompressor.unconsumed_tail
            if not out and len(tail) >= len(data):
                # a call that ends a gzip member may give no output, but must consume input
                raise httputil.HTTPInputError(
                    "encountered unconsumed gzip data without making progress")
            data = tail

    def finish(self) -> None:
        if self.decompressor is not None:
            try:
                self.decompressor.flush()  # all input was decompressed: this detects truncation
            except zlib.error as exc:
                # the delegate will not see finish(): it hears of the close instead, once
                self.delegate.on_connection_close()
                raise httputil.HTTPInputError(f"invalid gzip data: {exc}") from None
        self.delegate.finish()

    def on_connection_close(self) -> None:
        self.delegate.on_connection_close()


class ProxyContext:
    """The request context under ``xheaders``: the client and scheme a proxy in front reports.

    Tornado's rules: X-Forwarded-For read from the right, skipping ``trusted_downstream`` hosts,
    then X-Real-Ip wins; a value is used only when it is a valid IP. X-Scheme, else
    X-Forwarded-Proto (its last entry), sets the protocol when it is http or https.
    """

    __slots__ = ("conn", "remote_ip", "protocol")

    def __init__(self, conn: Connection, headers: httputil.HTTPHeaders,
                 trusted_downstream: Collection[str] | None) -> None:
        self.conn = conn
        trusted = trusted_downstream or ()
        ip = headers.get("X-Forwarded-For", conn.remote_ip)
        for hop in reversed(ip.split(",")):
            ip = hop.strip()
            if ip not in trusted:
                break
        ip = headers.get("X-Real-Ip", ip)
        self.remote_ip = ip if netutil.is_valid_ip(ip) else conn.remote_ip
        scheme = headers.get("X-Scheme", headers.get("X-Forwarded-Proto", conn.protocol))
        if scheme:
            scheme = scheme.split(",")[-1].strip()
        self.protocol = scheme if scheme in ("http", "https") else conn.protocol

    @property
    def address(self) -> Any:
        """The peer's socket address (the proxy's)."""
        return self.conn.address

    def __str__(self) -> str:
        return self.remote_ip
