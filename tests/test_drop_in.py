"""Any Tornado application on either engine, built as Tornado's HTTPServer(app, **options) is.

Regression tests for what Tornado's own suite found (issue 14), each on both engines: a body limit
raised in prepare(), response framing headers checked, Tornado's HTTPServer options (xheaders,
trusted_downstream, chunk_size, no_keep_alive, decompress_request, ssl_options as a dict), raw
writes to request.connection.stream, the rules both engines share (Content-Length lists, HTTP/1.x
minor versions, absolute-form targets, unknown methods, chunk framing overhead) and refusals
reaching the access log.
"""
import asyncio
import gzip
import io
import json
import re
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
import tornado
import tornado.web
from tornado import httputil
from tornado.httputil import HTTPHeaders, ResponseStartLine

from helpers import get
from server.accesslog import RequestObserver
from server.metrics import Metrics
from server.refusals import RefusalHandler

pytestmark = pytest.mark.gen_test(timeout=60)

TORNADO_TEST_DIR = Path(tornado.__file__).parent / "test"  # Tornado's own test certificate


@tornado.web.stream_request_body
class StreamingUpload(tornado.web.RequestHandler):
    """Counts a streamed body; ?size= raises the body limit for this request in prepare()."""

    def prepare(self):
        self.received = 0
        self.pieces = []
        if "size" in self.request.arguments:
            self.request.connection.set_max_body_size(int(self.get_argument("size")))

    def data_received(self, chunk):
        self.received += len(chunk)
        self.pieces.append(len(chunk))

    def put(self):
        self.write({"bytes": self.received, "pieces": self.pieces})

    post = put


class Echo(tornado.web.RequestHandler):
    """Echoes the (decompressed) body and what the request says about the client."""

    def post(self):
        self.write({"body": self.request.body.decode("latin-1"), "remote_ip": self.request.remote_ip,
                    "protocol": self.request.protocol, "host": self.request.host,
                    "version": self.request.version,
                    "consumed": self.request.headers.get("X-Consumed-Content-Encoding")})

    get = post


class Other(tornado.web.RequestHandler):
    """A handler that supports one method llhttp does not know."""

    SUPPORTED_METHODS = tornado.web.RequestHandler.SUPPORTED_METHODS + ("PURGEALL",)

    def purgeall(self):
        self.write("purged")

    def get(self):
        self.write("got")


def app(**settings):
    """The application every test here serves."""
    return tornado.web.Application([(r"/upload", StreamingUpload), (r"/echo", Echo),
                                    (r"/other", Other)], **settings)


@pytest.fixture
def exchange(raw_clients):
    """``await exchange(port, data)``: send raw bytes on a new connection; the response."""
    async def send(port, data, method="GET"):
        client = await raw_clients(port)
        client.send(data)
        return await client.response(method)
    return send


def put(path, size, *extra):
    """A PUT head with a Content-Length body of `size` bytes."""
    return get(path, f"Content-Length: {size}", *extra, method="PUT") + b"a" * size


# --- the body limit, decided after headers_received ---

async def test_prepare_raises_the_limit_for_a_content_length_body(tornado_http_server, raw_clients, exchange):
    port = await tornado_http_server(app(), max_body_size=4096)
    client = await raw_clients(port)
    client.send(put("/upload?size=10240", 10240))
    response = await client.response()
    assert (response.status, response.json()["bytes"]) == (200, 10240)
    # the override was this request's: the next one on the connection has the server's limit
    client.send(put("/upload", 10240))
    assert (await client.response()).status == 413
    # a handler that does not override: 413 from the head, the body never read
    response = await exchange(port, get("/upload", "Content-Length: 10240", method="PUT"))
    assert response.status == 413
    assert "larger than the limit of 4096 bytes" in response.body.decode()


async def test_a_too_large_expected_body_gets_413_before_100_continue(tornado_http_server, raw_clients):
    port = await tornado_http_server(app(), max_body_size=4096)
    client = await raw_clients(port)
    client.send(get("/upload", "Content-Length: 10240", "Expect: 100-continue", method="PUT"))
    assert (await client.response()).status == 413  # not 100 (Continue) first
    assert await client.closed()


# --- responses: framing headers as strict as requests' ---

class FramingDelegate(httputil.HTTPMessageDelegate):
    """Answers with the Content-Length (and Transfer-Encoding) the request's X-Test names."""

    def __init__(self, connection):
        self.connection = connection

    def headers_received(self, start_line, headers):
        framing = json.loads(headers["X-Test"])
        try:
            self.connection.write_headers(ResponseStartLine("HTTP/1.1", 200, "OK"),
                                          HTTPHeaders(framing))
            self.connection.write(b"1234567890")
            self.connection.finish()
        except httputil.HTTPOutputError:
            pass  # the engine refused to send it; the client sees the connection close

    def data_received(self, chunk):
        pass

    def finish(self):
        pass


class FramingApp(httputil.HTTPServerConnectionDelegate):
    def start_request(self, server_conn, request_conn):
        return FramingDelegate(request_conn)


@pytest.mark.parametrize("framing", [{"Content-Length": "+10"}, {"Content-Length": "1_0"},
                                     {"Content-Length": "\u00b9\u2070"}, {"Content-Length": " 10x"},
                                     {"Content-Length": "10", "Transfer-Encoding": "chunked"}],
                         ids=["plus", "underscore", "superscript", "garbage", "with-te"])
async def test_a_response_with_bad_framing_headers_is_not_sent(tornado_http_server, raw_clients, exchange,
                                                               framing, engine):
    port = await tornado_http_server(FramingApp())
    good = await exchange(port, get("/", 'X-Test: {"Content-Length": "10"}'))
    assert (good.status, good.body) == (200, b"1234567890")
    client = await raw_clients(port)
    client.send(get("/", "X-Test: " + json.dumps(framing)))
    assert b"1234567890" not in await client.rest(timeout=3)


# --- Tornado's HTTPServer options ---

async def test_xheaders_and_trusted_downstream(tornado_http_server, raw_clients):
    port = await tornado_http_server(app(), xheaders=True, trusted_downstream=["5.5.5.5"])
    client = await raw_clients(port)
    client.send(get("/echo", "X-Real-IP: 4.4.4.4", "X-Scheme: https"))
    seen = (await client.response()).json()
    assert (seen["remote_ip"], seen["protocol"]) == ("4.4.4.4", "https")
    client.send(get("/echo", "X-Forwarded-For: 1.1.1.1, 4.4.4.4, 5.5.5.5",
                    "X-Forwarded-Proto: http, https"))
    seen = (await client.response()).json()
    assert (seen["remote_ip"], seen["protocol"]) == ("4.4.4.4", "https")
    client.send(get("/echo", "X-Real-IP: not-an-ip", "X-Scheme: gopher"))
    seen = (await client.response()).json()  # per request: nothing carries over
    assert (seen["remote_ip"], seen["protocol"]) == ("127.0.0.1", "http")


async def test_without_xheaders_the_proxy_headers_are_ignored(tornado_http_server, exchange):
    port = await tornado_http_server(app())
    seen = (await exchange(port, get("/echo", "X-Real-IP: 4.4.4.4", "X-Scheme: https"))).json()
    assert (seen["remote_ip"], seen["protocol"]) == ("127.0.0.1", "http")


async def test_chunk_size_bounds_the_pieces_data_received_gets(tornado_http_server, exchange):
    port = await tornado_http_server(app(), chunk_size=16)
    pieces = (await exchange(port, put("/upload", 100))).json()["pieces"]
    assert sum(pieces) == 100 and max(pieces) <= 16
    chunked = (get("/upload", "Transfer-Encoding: chunked", method="PUT")
               + b"28\r\n" + b"b" * 40 + b"\r\n0\r\n\r\n")
    pieces = (await exchange(port, chunked)).json()["pieces"]
    assert sum(pieces) == 40 and max(pieces) <= 16


async def test_the_default_chunk_size_is_64_kib(tornado_http_server, exchange):
    port = await tornado_http_server(app(), max_body_size=2 * 1024 * 1024)
    pieces = (await exchange(port, put("/upload", 1024 * 1024))).json()["pieces"]
    assert sum(pieces) == 1024 * 1024 and max(pieces) <= 65536


async def test_no_keep_alive_closes_after_each_response(tornado_http_server, raw_clients):
    port = await tornado_http_server(app(), no_keep_alive=True)
    client = await raw_clients(port)
    client.send(get("/echo"))
    response = await client.response()
    assert response.status == 200 and response.header("Connection") == "close"
    assert await client.closed()


async def test_decompress_request(tornado_http_server, exchange):
    port = await tornado_http_server(app(), decompress_request=True, max_body_size=1000)
    body = gzip.compress(b"squeezed")
    request = get("/echo", "Content-Encoding: gzip", f"Content-Length: {len(body)}",
                  method="POST") + body
    seen = (await exchange(port, request)).json()
    assert (seen["body"], seen["consumed"]) == ("squeezed", "gzip")
    bomb = gzip.compress(b"\0" * 100_000)  # far more than max_body_size once decompressed
    response = await exchange(port, get("/echo", "Content-Encoding: gzip",
                                        f"Content-Length: {len(bomb)}", method="POST") + bomb)
    assert response.status == 400
    broken = body[:-1]
    response = await exchange(port, get("/echo", "Content-Encoding: gzip",
                                        f"Content-Length: {len(broken)}", method="POST") + broken)
    assert response.status == 400


async def test_ssl_options_as_a_dict(tornado_http_server):
    port = await tornado_http_server(app(), ssl_options={
        "certfile": str(TORNADO_TEST_DIR / "test.crt"), "keyfile": str(TORNADO_TEST_DIR / "test.key")})
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    writer.write(get("/echo"))
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200")
    body = await asyncio.wait_for(reader.read(1000), 5)
    assert json.loads(body)["protocol"] == "https"
    writer.close()


def raw_responder(request):
    """A plain callable application answering through request.connection.stream, as Tornado's
    HTTP100ContinueTestCase does."""
    stream = request.connection.stream
    future = stream.write(b"HTTP/1.1 100 CONTINUE\r\n\r\n")

    def then(_):
        stream.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nraw").add_done_callback(
            lambda _: stream.close())
    future.add_done_callback(then)


async def test_raw_writes_to_request_connection_stream(tornado_http_server, raw_clients):
    port = await tornado_http_server(raw_responder)
    client = await raw_clients(port)
    client.send(get("/"))
    assert (await client.response()).status == 100
    response = await client.response()
    assert (response.status, response.body) == (200, b"raw")
    assert await client.closed()


# --- rules both engines share ---

@pytest.mark.parametrize("lengths", ["5, 5", "5,5", "5,6", "5\r\nContent-Length: 5"])
async def test_content_length_lists_are_refused(tornado_http_server, exchange, lengths):
    port = await tornado_http_server(app())
    response = await exchange(port, get("/echo", f"Content-Length: {lengths}", method="POST")
                              + b"hello")
    assert response.status == 400


@pytest.mark.parametrize("length", ["\u00b2", "\u0663", "+5", "1_0"])
async def test_content_length_must_be_ascii_digits(tornado_http_server, exchange, length):
    port = await tornado_http_server(app())
    data = get("/echo", "Content-Length: " + length, method="POST").decode() + "hello"
    response = await exchange(port, data.encode("utf-8"))
    assert response.status == 400


async def test_http_1_x_minor_versions_are_served_as_http_1_1(tornado_http_server, exchange):
    port = await tornado_http_server(app())
    response = await exchange(port, get("/echo", version="1.2"))
    assert response.status == 200
    assert response.json()["version"] in ("HTTP/1.1", "HTTP/1.2")


async def test_absolute_form_targets_are_accepted(tornado_http_server, exchange):
    port = await tornado_http_server(app())
    response = await exchange(port, get("http://example.test:8080/echo?x=1"))
    assert response.status == 200
    assert response.json()["host"] == "example.test:8080"  # the target's, not the Host header's
    response = await exchange(port, get("http://user@example.test/echo"))
    assert response.status == 400


async def test_methods_llhttp_does_not_know(tornado_http_server, raw_clients, exchange):
    port = await tornado_http_server(app())
    response = await exchange(port, get("/other", method="PURGEALL"))
    assert (response.status, response.body) == (200, b"purged")
    assert (await exchange(port, get("/other", method="BREW"))).status == 405
    assert (await exchange(port, get("/other", method="FOO,BAR"))).status == 400
    # pipelined behind a request with a body, and split across reads
    client = await raw_clients(port)
    client.send(get("/upload", "Content-Length: 3", method="PUT") + b"abc" + b"PURGEA")
    await client.writer.drain()
    await asyncio.sleep(0.05)
    client.send(get("/other", method="LL"))
    assert (await client.response()).json()["bytes"] == 3
    assert (await client.response()).body == b"purged"


async def test_chunk_extensions_are_bounded(tornado_http_server, raw_clients, engine):
    """An 807-byte body with megabytes of chunk extensions is refused before it is all read."""
    port = await tornado_http_server(app(), max_body_size=10 * 1024 * 1024)
    client = await raw_clients(port)
    client.send(get("/upload", "Transfer-Encoding: chunked", method="PUT"))
    extension = b";" + b"x" * 60 + b"=y"
    piece = b"".join(b"1" + extension * 100 + b"\r\na\r\n" for _ in range(807))
    sent = 0
    try:
        while sent < 52 * 1024 * 1024:
            client.send(piece)
            await asyncio.wait_for(client.writer.drain(), 5)
            sent += len(piece)
    except (TimeoutError, ConnectionError):
        pass  # the server stopped reading (and closed): what we want
    try:
        answer = await client.rest(timeout=3)
    except ConnectionError:
        answer = b""  # reset: the response (if any) was lost with the unread input
    assert sent < 52 * 1024 * 1024, "the server read 52 MB of chunk extensions"
    assert answer == b"" or answer.startswith(b"HTTP/1.1 400")


# --- refusals reach the access log ---

@pytest.mark.parametrize("request_bytes,status", [
    (get("/upload", "Content-Length: 99999", method="PUT"), 413),
    (get("/echo", "Content-Length: 5, 6", method="POST"), 400),
    (b"GET / HTTP/1.1\r\nHost: t\r\nNo-Colon\r\n\r\n", 400),
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: t\r\nX-Pad: " + b"p" * 5000 + b"\r\n\r\n", 431),
], ids=["413", "400-length-list", "400-header", "400-request-line", "431"])
async def test_refused_requests_are_in_the_access_log(tornado_http_server, exchange, engine, request_bytes,
                                                     status):
    log = io.StringIO()
    observer = RequestObserver(Metrics(enabled=False), "json", 0)
    observer.writer.stream = log
    port = await tornado_http_server(app(), max_body_size=4096, max_header_size=4096,
                                     refusals=RefusalHandler(record=observer.refused))
    response = await exchange(port, request_bytes)
    assert response.status == status
    line = json.loads(log.getvalue().splitlines()[-1])
    assert line["status"] == status and line["client"] == "127.0.0.1"
    assert line["bytes"] == len(response.body) > 0
    assert "request_id" in line


# --- a server nobody stops ---

NEVER_STOPPED = """
import asyncio, socket, sys, warnings, uvloop
import tornado.web
from server.engine import FastHTTPServer
warnings.filterwarnings("error")  # as Tornado's runner: uvloop's close() hung on an open handle
class Hello(tornado.web.RequestHandler):
    def get(self):
        self.write("hi")
async def main():
    sock = socket.socket(); sock.bind(("127.0.0.1", 0)); sock.listen(8)
    FastHTTPServer(tornado.web.Application([(r"/", Hello)])).add_sockets([sock])
    reader, writer = await asyncio.open_connection(*sock.getsockname())
    writer.write(b"GET / HTTP/1.1\\r\\nHost: t\\r\\n\\r\\n")
    await reader.readuntil(b"hi")
    writer.transport.abort()  # the client goes; the server's side stays open
(uvloop.run if sys.argv[1] == "uvloop" else asyncio.run)(main())
print("closed")
"""


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_server_never_stopped_does_not_hang_the_loop_close(loop):
    done = subprocess.run([sys.executable, "-c", NEVER_STOPPED, loop], capture_output=True,
                          text=True, timeout=30, cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0 and done.stdout.strip() == "closed", done.stderr
    assert not re.search(r"Warning|Traceback", done.stderr), done.stderr
