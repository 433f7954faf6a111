"""Request parsing with llhttp: the callbacks that fill in exchanges, and the rules llhttp leaves to us.

llhttp (through httptools) validates request lines, header syntax and body framing. What it does
not decide is here: HTTP/1.x minor versions above 1 (RFC 9112 2.3: treated as 1.1), absolute-form
targets (RFC 9112 3.2.2: accepted, the Host header replaced by the target's authority), methods it
does not know (RFC 9110 9.1: any token is a method; the request is re-fed under a known method
and keeps its own), Transfer-Encoding rules as strict as Tornado's, the head size limit, chunk
framing overhead, and the words a refusal is logged with (Tornado's, where Tornado has a word for
it, so logs read the same on both engines).
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

import httptools
from tornado import httputil

from .. import rules
from ..compat import make_headers
from ..rules import Violation

if TYPE_CHECKING:
    from .connection import Connection
    from .exchange import Exchange
    from .reader import Reader
    from .server import FastHTTPServer

# Header-name spellings remembered per server (bounded: names are client-chosen).
NAME_CACHE_SIZE = 512
# Body bytes parsed but not yet taken by the delegate above this pause reading from the socket.
BODY_PAUSE_BYTES = 256 * 1024
# An unknown method longer than this is not waited for across reads (Tornado's request line
# limit is the head's; no registered method is longer than 17 characters).
MAX_METHOD_LENGTH = 64
# Chunked bodies: framing bytes (sizes, extensions, line ends) beyond the data they carry are
# bounded as Go's net/http bounds them since CVE-2023-39326: 16 bytes per chunk plus twice the
# data, with this much slack; beyond it the request is refused.
CHUNK_OVERHEAD_SLACK = 16 * 1024
MAX_LINE = 8192  # how far into a refused request its first line end is looked for

VERSIONS = {"1.1": "HTTP/1.1", "1.0": "HTTP/1.0"}
RequestStartLine = httputil.RequestStartLine
_new_tuple = tuple.__new__
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
KNOWN_METHOD = b"GET"  # what an unknown method is re-fed as: llhttp frames it like any other
_CONTENT_LENGTH = re.compile(rb"(?im)^content-length[ \t]*:[ \t]*([^\r\n]*)")
_TRANSFER_ENCODING = re.compile(rb"(?im)^transfer-encoding[ \t]*:[ \t]*([^\r\n]*)")


def new_parser(sink: ParserSink) -> httptools.HttpRequestParser:
    """An llhttp request parser for one connection (minor versions checked by us, not llhttp)."""
    parser = httptools.HttpRequestParser(sink)
    parser.set_dangerous_leniencies(lenient_version=True)
    return parser


# raised inside a parser callback to stop parsing a request the server refuses
Reject = Violation


class ParserSink:
    """llhttp's callbacks for whichever connection is being fed; one per server.

    httptools keeps the callables it finds on its protocol object. Handing every parser the same
    pre-bound methods (instead of a connection's own) saves eight bound-method objects per
    connection; `conn` and `reader` say which connection (and its Reader) the current
    feed_data call belongs to (set before each call; callbacks run only inside one, on a
    message it began).
    What a callback learns goes into the connection's exchanges; of the server it reads only
    max_header_size, once.
    """

    __slots__ = ("conn", "reader", "ex", "exchange", "small_read", "max_header_size", "names", "methods",
                 "on_message_begin", "on_url",
                 "on_header", "on_headers_complete", "on_body", "on_message_complete",
                 "on_chunk_header")

    conn: Connection
    reader: Reader
    ex: Exchange  # the exchange being filled in: the reader's `parsing`, without its None

    def __init__(self, server: FastHTTPServer, exchange: type[Exchange]) -> None:
        self.exchange = exchange
        # True while the bytes fed so far to the current head cannot exceed max_header_size
        self.small_read = True
        self.max_header_size: int = server.max_header_size
        self.names: dict[bytes, str] = {}
        self.methods: dict[bytes, str] = {}
        self.on_message_begin = self._begin
        self.on_url = self._url
        self.on_header = self._header
        self.on_headers_complete = self._headers_complete
        self.on_body = self._body
        self.on_message_complete = self._message_complete
        self.on_chunk_header = self._chunk_header

    def release(self, conn: Connection) -> None:
        """The connection is gone: the sink keeps no reference to it."""
        if getattr(self, "conn", None) is conn:
            del self.conn, self.reader
        ex = getattr(self, "ex", None)
        if ex is not None and ex.conn is conn:  # (it may outlive its feed: a read without a message)
            del self.ex

    def _begin(self) -> None:
        # a new message: its exchange exists from its first byte, so a method split across
        # reads (or one llhttp refuses) belongs to a known request
        conn = self.conn
        ex = self.ex = self.reader.parsing = self.exchange(conn)
        if conn.pipeline.enqueue(ex):
            # pipelined: it waits until the responses before it are out
            conn.flow.pause_reading()

    def _url(self, url: bytes) -> None:
        ex = self.ex
        if ex.url is None:
            ex.url = url
        else:
            ex.url += url  # the rest of a target split across reads

    def _header(self, name: bytes, value: bytes) -> None:
        ex = self.ex
        if ex.head_done:
            return  # a trailer after a chunked body: nothing in Tornado reads them
        normal = self.names.get(name)
        if normal is None:
            normal = "-".join([word.capitalize() for word in name.decode("latin-1").split("-")])
            if len(self.names) < NAME_CACHE_SIZE:
                self.names[name] = normal
        if value and value[-1] in (32, 9):
            value = value.rstrip(b" \t")  # llhttp keeps trailing whitespace; HTTP says it isn't part
        values = ex.headers.get(normal)
        if values is None:
            ex.headers[normal] = [value.decode("latin-1")]
        else:
            values.append(value.decode("latin-1"))

    def _headers_complete(self) -> None:
        reader = self.reader
        ex = self.ex
        parser = reader.parser
        reader.heads += 1
        method = reader.method_override
        if method is not None:
            reader.method_override = None
        else:
            raw_method = parser.get_method()
            method = self.methods.get(raw_method)
            if method is None:
                method = raw_method.decode("ascii")
                self.methods[raw_method] = method  # llhttp knows a fixed set of methods: bounded
        version = VERSIONS.get(parser.get_http_version())
        if version is None:
            version = rules.http_version(parser.get_http_version())
        url = ex.url
        if url is None:
            raise Reject(400, "missing request target")
        as_list = ex.headers
        if not self.small_read:
            # this head may be larger than the limit: measure it (close enough: line ends and
            # separators counted as 4 bytes a line)
            limit = self.max_header_size
            size = len(url) + len(method) + 12 + sum(
                len(name) + len(value) + 4 for name, values in as_list.items() for value in values)
            if size > limit:
                raise rules.head_too_large(limit)
        if "Transfer-Encoding" in as_list:
            # llhttp has refused it with a Content-Length, and chunked anywhere but last
            ex.chunked = rules.request_transfer_encoding(as_list["Transfer-Encoding"], version,
                                                         False)
        else:
            length = as_list.get("Content-Length")
            if length is not None:
                ex.length = int(length[0])  # llhttp allows digits only, and one value
        target = url.decode("latin-1")
        if target[:1] != "/" and target != "*":
            target = rules.origin_form(target, as_list)
        ex.start_line = _new_tuple(RequestStartLine, (method, target, version))
        ex.headers = make_headers(as_list)
        ex.head_done = True
        if ("Upgrade" in as_list or method == "CONNECT") and parser.should_upgrade():
            if ex.length or "Transfer-Encoding" in as_list:
                # llhttp hands whatever follows an upgrade head over as the new protocol's
                # bytes, so the body would never reach the handler
                raise Reject(400, "a request body with Upgrade is not supported")
            ex.upgrade = True
        connection = as_list.get("Connection")
        if connection is None:
            ex.keep_alive = version == "HTTP/1.1"
        else:
            tokens = [token.strip().lower() for value in connection for token in value.split(",")]
            if version == "HTTP/1.1":
                ex.keep_alive = "close" not in tokens
            else:
                ex.keep_alive = "keep-alive" in tokens

    def _body(self, data: bytes) -> None:
        ex = self.ex
        if ex.body is None:
            ex.body = [data]
        else:
            ex.body.append(data)
        ex.body_bytes += len(data)
        ex.parsed += len(data)
        if ex.body_bytes > BODY_PAUSE_BYTES:
            self.conn.flow.pause_reading()

    def _chunk_header(self) -> None:
        ex = self.ex
        ex.chunks += 1

    def _message_complete(self) -> None:
        self.ex.complete = True
        reader = self.reader
        reader.parsing = None
        reader.completed += 1


def message_start(data: bytes | bytearray | memoryview, messages: int) -> int:
    """Where in data the message after the first ``messages`` complete ones starts.

    ``data`` must begin at a message boundary. A fresh parser counts completions over
    prefixes (a binary search: llhttp reports no offsets), so this runs only on the rare path
    of a method llhttp does not know, never per request.
    """
    if messages == 0:
        low = 0
    else:
        low, high = 0, len(data)
        while low < high:  # smallest prefix holding `messages` complete messages
            middle = (low + high) // 2
            if _completions(data[:middle]) >= messages:
                high = middle
            else:
                low = middle + 1
    while low < len(data) and data[low] in (13, 10):
        low += 1  # blank lines between messages are allowed (RFC 9112 2.2)
    return low


class _Counter:
    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = 0

    def on_message_complete(self) -> None:
        self.done += 1


def _completions(data: bytes | bytearray | memoryview) -> int:
    counter = _Counter()
    parser = httptools.HttpRequestParser(counter)
    parser.set_dangerous_leniencies(lenient_version=True)
    try:
        parser.feed_data(data)
    except httptools.HttpParserError:
        pass
    return counter.done


def split_method(data: bytes | bytearray | memoryview, start: int) -> tuple[bytes, int] | None:
    """The method token at start and where the rest of the request line begins.

    None when the token is not complete in data yet (more input may finish it); Reject when
    what is there cannot be a method.
    """
    end = bytes(data[start:start + MAX_METHOD_LENGTH + 1]).find(b" ")
    if end < 0:
        partial = bytes(data[start:start + MAX_METHOD_LENGTH + 1])
        if len(partial) > MAX_METHOD_LENGTH or (partial and not _TOKEN.fullmatch(partial)):
            raise Reject(400, "Malformed HTTP request line")
        return None
    method = bytes(data[start:start + end])
    if not _TOKEN.fullmatch(method):
        raise Reject(400, "Malformed HTTP request line")
    return method, start + end


# llhttp's reasons for errors in the request line (and the URL or version in it)
_REQUEST_LINE = ("method", "url", "version", "HTTP/", "after start line", "space after",
                 "Expected CRLF after version", "Invalid char in url", "Pause on PRI")


def describe(exc: httptools.HttpParserError, data: bytes | bytearray | memoryview) -> str:
    """What was wrong with a request llhttp refused, in Tornado's words where it has them.

    ``data`` is the input being parsed; the offending header is looked up in it to name the
    value (best effort: a head split across reads may not be all there).
    """
    reason = str(exc) or "malformed request"
    if isinstance(exc, (httptools.HttpParserInvalidMethodError, httptools.HttpParserInvalidURLError)):
        return "Malformed HTTP request line"
    if "Content-Length" in reason:
        if "Transfer-Encoding" in reason:
            return "Message with both Transfer-Encoding and Content-Length"
        values = [v.strip().decode("latin-1") for v in _CONTENT_LENGTH.findall(bytes(data))]
        try:
            rules.request_content_length(values or ["?"])
        except Violation as violation:
            return violation.detail
        return reason
    if "Transfer-Encoding" in reason:
        values = [v.strip().decode("latin-1") for v in _TRANSFER_ENCODING.findall(bytes(data))]
        return f"Unsupported Transfer-Encoding {','.join(values) or '?'}"
    if "chunk size" in reason:
        return "invalid chunk size"
    if "after chunk data" in reason:
        return "improperly terminated chunked request"
    if reason == "Invalid header token":
        return _header_problem(data) or reason
    if any(part in reason for part in _REQUEST_LINE):
        line_end = bytes(data[:MAX_LINE]).find(b"\n")
        if line_end >= 0 and data[line_end - 1:line_end] != b"\r":
            return "Malformed HTTP request line: it ends in a bare LF (CRLF expected)"
        return "Malformed HTTP request line"
    return reason


def _header_problem(data: bytes | bytearray | memoryview) -> str | None:
    head = bytes(data).split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]
    for line in head:
        if not line or line[:1] in (b" ", b"\t"):
            continue
        name, colon, _ = line.partition(b":")
        if not colon:
            return "no colon in header line"
        if not _TOKEN.fullmatch(name):
            return f"Invalid header name {name.decode('latin-1')!r}"
    return None


def chunk_overhead_exceeded(ex: Exchange) -> bool:
    """True when a chunked body's framing has grown past what its data justifies."""
    return ex.overhead > CHUNK_OVERHEAD_SLACK + 16 * ex.chunks + 2 * ex.parsed
