"""What only the fast engine promises: exact refusals, flow control both ways, its server API."""
import asyncio
import gzip
import socket

import pytest
import tornado.web
from tornado.iostream import StreamClosedError
from tornado.netutil import bind_sockets

from helpers import RawClient, get, wait_for_no_connections
from server.engine import FastHTTPServer
from server.engine.connection import MAX_PIPELINED
from server.engine.listeners import listen_backlog

pytestmark = pytest.mark.gen_test(timeout=60)


@pytest.fixture
def engine():
    """These tests are about the fast engine only."""
    return "fast"


class FloodHandler(tornado.web.RequestHandler):
    """Writes ?mb= megabytes in 64 KB pieces, awaiting each flush; records how far it got."""

    def initialize(self, written):
        """written: {key: bytes written so far}, shared with the test."""
        self.written = written

    async def get(self):
        """Write and flush until done or the client is gone."""
        key = self.get_query_argument("key")
        piece = b"z" * 65536
        self.written[key] = 0
        try:
            for _ in range(int(self.get_query_argument("mb")) * 16):
                self.write(piece)
                await self.flush()
                self.written[key] += len(piece)
        except StreamClosedError:
            return


@pytest.fixture
def written():
    """How far each FloodHandler request got, by its ?key=."""
    return {}


@pytest.fixture
def flood_port(http_server, port, written):
    """The port, with the flood handler added."""
    http_server.http.request_callback.add_handlers(
        r".*", [(r"/engine-test/flood", FloodHandler, {"written": written})])
    return port


def server_connections(http_server):
    """The server's open connection objects."""
    return list(http_server.http._connections)


@pytest.mark.server_settings(max_header_size=4096)
@pytest.mark.parametrize("where", ["one-header", "many-headers", "target", "slow-trickle"])
async def test_oversized_head_is_431(connect, where):
    client = await connect()
    if where == "one-header":
        client.send(get("/api/hello", "X-Big: " + "b" * 8000))
    elif where == "many-headers":
        client.send(get("/api/hello", *[f"X-H{i}: {'v' * 50}" for i in range(200)]))
    elif where == "target":
        client.send(get("/api/hello?q=" + "q" * 8000))
    else:
        client.send(b"GET /api/hello HTTP/1.1\r\nHost: t\r\nX-Long: ")
        for _ in range(20):  # a header value that never ends, in small reads
            client.send(b"v" * 400)
            await client.writer.drain()
            await asyncio.sleep(0.01)
    response = await client.response()
    assert response.status == 431
    assert await client.closed()


@pytest.mark.server_settings(body_timeout=0.3)
async def test_body_timeout_is_408(connect, http_server):
    client = await connect()
    client.send(b"POST /api/echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100\r\n\r\n[1,")
    response = await client.response(timeout=3)
    assert response.status == 408
    assert response.json()["error"]["status"] == 408
    assert await client.closed()
    assert await wait_for_no_connections(http_server) == 0


async def test_chunk_extensions_are_accepted(connect):
    client = await connect()
    client.send(b"POST /api/echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
                b"2;name=value\r\n[1\r\n1\r\n]\r\n0\r\nX-Trailer: 1\r\n\r\n")
    assert (await client.response()).json() == [1]
    client.send(get("/api/hello/after"))
    assert (await client.response()).status == 200


async def test_writes_wait_while_the_client_does_not_read(connect, flood_port, written):
    client = await connect()
    # shrink our receive buffer so the kernel cannot absorb the whole response
    client.writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    client.send(get("/engine-test/flood?mb=64&key=a"))
    await asyncio.sleep(0.5)
    stalled = written["a"]
    await asyncio.sleep(0.3)
    assert written["a"] == stalled, "the handler kept writing into a full transport"
    assert stalled < 16 * 1024 * 1024
    response = await client.response(timeout=30)
    assert len(response.body) == 64 * 1024 * 1024
    assert written["a"] == 64 * 1024 * 1024


async def test_handler_blocked_on_a_full_transport_hears_the_client_leave(connect, flood_port,
                                                                           http_server, written):
    client = await connect()
    client.writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    client.send(get("/engine-test/flood?mb=64&key=b"))
    await asyncio.sleep(0.3)
    client.close()
    assert await wait_for_no_connections(http_server) == 0
    await asyncio.sleep(0.1)
    assert written["b"] < 64 * 1024 * 1024


async def test_a_pipelined_flood_is_parsed_only_as_fast_as_it_is_answered(connect, http_server):
    client = await connect()
    count = 3000
    client.send(get("/api/hello/p") * count)
    await client.writer.drain()
    await asyncio.sleep(0.05)
    for conn in server_connections(http_server):
        # parsed requests waiting (queue) stay bounded; the rest of the input stays raw
        queue = conn.pipeline.queue
        assert queue is None or len(queue) <= MAX_PIPELINED + 700
    for _ in range(count):
        response = await client.response()
        assert response.json() == {"message": "Hello, p"}


async def test_busy_tracks_requests_in_flight(connect, http_server):
    client = await connect()
    assert len(http_server.http.busy) == 0
    client.send(get("/engine-test/slow?s=0.3"))
    await asyncio.sleep(0.1)
    assert len(http_server.http.busy) == 1
    assert (await client.response()).body == b"done"
    assert len(http_server.http.busy) == 0


async def test_http_1_0_stream_without_length_is_ended_by_closing(connect):
    client = await connect()
    client.send(b"GET /engine-test/streamed?n=3 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    response = await client.response()
    assert response.header("transfer-encoding") is None and response.header("content-length") is None
    assert response.body == b"part0;part1;part2;"  # read until the server closed


async def test_pipelined_request_after_connection_close_is_not_served(connect):
    client = await connect()
    client.send(get("/api/hello/one", "Connection: close") + get("/api/hello/two"))
    assert (await client.response()).json() == {"message": "Hello, one"}
    assert b"two" not in await client.rest()


async def test_listen_backlog_is_kept():
    sock = bind_sockets(0, "127.0.0.1", family=socket.AF_INET, backlog=1234)[0]
    try:
        assert listen_backlog(sock) == 1234
    finally:
        sock.close()


class _Echo(tornado.web.RequestHandler):
    def post(self):
        """Echo the (decompressed) body."""
        self.write(self.request.body)


async def test_stop_before_serving_refuses_and_decompression_works():
    app = tornado.web.Application([(r"/", _Echo)])
    refused = bind_sockets(0, "127.0.0.1", family=socket.AF_INET)[0]
    refused_port = refused.getsockname()[1]
    server = FastHTTPServer(app, decompress_request=True)
    server.add_sockets([refused])
    server.stop()  # before the listener task ran
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", refused_port)

    sock = bind_sockets(0, "127.0.0.1", family=socket.AF_INET)[0]
    server = FastHTTPServer(app, decompress_request=True)
    server.add_sockets([sock])
    client = await RawClient.connect(sock.getsockname()[1])
    body = gzip.compress(b"squeezed")
    client.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s"
                % (len(body), body))
    assert (await client.response()).body == b"squeezed"
    client.close()
    assert await server.drain(2, 0) is True


@pytest.mark.server_settings(max_header_size=4096)
async def test_head_near_the_limit_in_small_pieces(connect):
    head = get("/api/hello/near", *[f"X-Pad{i}: {'p' * 80}" for i in range(42)])
    assert 3800 < len(head) < 4096
    client = await connect()
    for i in range(0, len(head), 100):
        client.send(head[i:i + 100])
        await client.writer.drain()
        await asyncio.sleep(0.002)
    assert (await client.response()).json() == {"message": "Hello, near"}
    # the same head pipelined right behind a body, split so it starts mid-read
    body = b'{"n": 1}'
    post = (b"POST /api/echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    client.send(post + head[:1000])
    await client.writer.drain()
    await asyncio.sleep(0.05)
    client.send(head[1000:])
    assert (await client.response()).json() == {"n": 1}
    assert (await client.response()).json() == {"message": "Hello, near"}


@pytest.mark.server_settings(max_header_size=4096)
async def test_head_over_the_limit_in_small_pieces_is_431(connect):
    head = get("/api/hello/far", *[f"X-Pad{i}: {'p' * 80}" for i in range(45)])
    assert len(head) > 4096
    client = await connect()
    for i in range(0, len(head), 100):
        client.send(head[i:i + 100])
        await asyncio.sleep(0.002)
    assert (await client.response()).status == 431


async def test_upgrade_with_a_body_is_refused(connect):
    client = await connect()
    client.send(b"POST /api/echo HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n"
                b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n[]")
    assert (await client.response()).status == 400
    assert await client.closed()
