"""The fast engine's protocol driven on a fake transport: no sockets, a real tornado.web.Application.

A FakeTransport records what the Connection does to it (writes, pause/resume_reading, write_eof,
close, abort) and the test plays the client and the kernel: it hands input to data_received and
calls pause_writing/resume_writing/connection_lost as a transport would. What these tests
assert is what a client would see on the wire, and when; tests/test_engine*.py check the same
engine on real sockets.
"""
import asyncio

import pytest
import tornado.web

from server.engine import FastHTTPServer
from server.engine.connection import Connection
from server.http1policy import LINGER_MAX_BYTES

pytestmark = pytest.mark.gen_test(timeout=30)

PEER = ("203.0.113.7", 50123)


class FakeTransport(asyncio.Transport):
    """An asyncio transport that keeps what it is asked to do; close/abort report connection_lost."""

    def __init__(self, protocol, loop):
        super().__init__()
        self.protocol = protocol
        self.loop = loop
        self.written = bytearray()
        self.writes = 0  # write() calls: system calls a real transport would make
        self.reading = True
        self.eof = False  # write_eof(): our side is shut (lingering close)
        self.closed = False
        self.aborted = False
        self.buffered = 0  # what get_write_buffer_size() reports
        self.lost = False

    def get_extra_info(self, name, default=None):
        return {"peername": PEER, "sockname": ("127.0.0.1", 8888)}.get(name, default)

    def write(self, data):
        assert not self.closed and not self.eof, "a write after the connection was shut"
        self.written += data
        self.writes += 1

    def pause_reading(self):
        assert self.reading, "pause_reading twice"
        self.reading = False

    def resume_reading(self):
        assert not self.reading, "resume_reading while reading"
        self.reading = True

    def is_reading(self):
        return self.reading

    def can_write_eof(self):
        return True

    def write_eof(self):
        self.eof = True

    def get_write_buffer_size(self):
        return self.buffered

    def close(self):
        self.closed = True
        self._lose()

    def abort(self):
        self.closed = self.aborted = True
        self._lose()

    def is_closing(self):
        return self.closed

    def _lose(self):
        if not self.lost:
            self.lost = True
            self.loop.call_soon(self.protocol.connection_lost, None)

    def take(self):
        """Everything written since the last take()."""
        data = bytes(self.written)
        self.written.clear()
        return data


def parse_responses(data):
    """[(status, {lower-case name: value}, body)] of the complete responses at the start of data."""
    responses = []
    while data:
        head, separator, rest = data.partition(b"\r\n\r\n")
        if not separator:
            break
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if status == 100:
            body = b""
        elif headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size_line, separator, rest = rest.partition(b"\r\n")
                if not separator:
                    return responses
                size = int(size_line, 16)
                if len(rest) < size + 2:
                    return responses
                body, rest = body + rest[:size], rest[size + 2:]
                if size == 0:
                    break
        else:
            size = int(headers.get("content-length", len(rest)))
            if len(rest) < size:
                break
            body, rest = rest[:size], rest[size:]
        responses.append((status, headers, body))
        data = rest
    return responses


async def until(condition):
    """Run the loop until condition() holds (a bounded number of turns, no clock)."""
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0)
    assert condition()


async def turns(count=50):
    """Let the loop run a while: whatever was going to happen without the test's help has."""
    for _ in range(count):
        await asyncio.sleep(0)


def request(path, *headers, method="GET", body=b""):
    """A request's bytes."""
    lines = [f"{method} {path} HTTP/1.1", "Host: example.org", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class Hello(tornado.web.RequestHandler):
    def get(self):
        self.write(f"hello {self.request.remote_ip}")


class Echo(tornado.web.RequestHandler):
    def get(self):
        self.write(self.get_query_argument("n"))

    def post(self):
        self.write(self.request.body)


class Gated(tornado.web.RequestHandler):
    """Writes a first piece, flushes, waits for the test's gate, writes the rest."""

    def initialize(self, state):
        self.state = state

    async def get(self):
        self.write("first ")
        await self.flush()
        self.state["progress"].append("first")
        await self.state["gate"].wait()
        self.write("second")
        await self.flush()
        self.state["progress"].append("second")

    def on_connection_close(self):
        self.state["closed"].append(self.request.path)


@tornado.web.stream_request_body
class Upload(tornado.web.RequestHandler):
    """Streams its body in; records what it got and whether it heard the client leave."""

    def initialize(self, state):
        self.state = state

    def prepare(self):
        self.state["uploads"].append(self.request.path)

    def data_received(self, chunk):
        self.state["received"] += len(chunk)

    def put(self):
        self.write(f"{self.state['received']} bytes")

    def on_connection_close(self):
        self.state["closed"].append(self.request.path)


@pytest.fixture
def state():
    """What the handlers record, and the gate Gated waits on."""
    return {"progress": [], "gate": asyncio.Event(), "closed": [], "uploads": [], "received": 0}


@pytest.fixture
def serve(io_loop, state):
    """``serve(**options)``: a FastHTTPServer for the test app, bound to the loop, listening nowhere."""
    servers = []

    def start(**options):
        app = tornado.web.Application([
            (r"/hello", Hello), (r"/echo", Echo), (r"/gated", Gated, {"state": state}),
            (r"/upload", Upload, {"state": state})])
        server = FastHTTPServer(app, **options)
        server.add_sockets([])
        servers.append(server)
        return server
    yield start
    for server in servers:
        server.stop()
        io_loop.run_sync(server.close_all_connections, timeout=10)


def connect(server):
    """A Connection of the server on a fresh FakeTransport, as a listener would make it."""
    conn = Connection(server)
    transport = FakeTransport(conn, asyncio.get_running_loop())
    conn.connection_made(transport)
    return conn, transport


async def test_a_get_is_answered_with_its_response_bytes(serve):
    conn, transport = connect(serve())
    conn.data_received(request("/hello"))
    await until(lambda: transport.written)
    data = transport.take()
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    [(status, headers, body)] = parse_responses(data)
    assert body == f"hello {PEER[0]}".encode()
    assert headers["content-length"] == str(len(body))
    assert "connection" not in headers  # HTTP/1.1 keep-alive needs no header
    assert not transport.closed and transport.reading


async def test_keep_alive_then_pipelined_requests_are_answered_in_order_in_one_write(serve):
    conn, transport = connect(serve())
    conn.data_received(request("/echo?n=0"))
    await until(lambda: transport.written)
    assert [body for _, _, body in parse_responses(transport.take())] == [b"0"]
    writes = transport.writes
    conn.data_received(b"".join(request(f"/echo?n={n}") for n in range(1, 6)))
    await until(lambda: len(parse_responses(bytes(transport.written))) == 5)
    responses = parse_responses(transport.take())
    assert [body for _, _, body in responses] == [b"1", b"2", b"3", b"4", b"5"]
    assert transport.writes == writes + 1  # held while the next were queued, written together
    await turns()
    assert not transport.closed and transport.reading


async def test_a_chunked_request_body_arrives_whole(serve):
    conn, transport = connect(serve())
    conn.data_received(request("/echo", "Transfer-Encoding: chunked", method="POST")
                       + b"5\r\nhello\r\n")
    await turns()
    assert not transport.written  # the body is not complete yet
    conn.data_received(b"1;ext=1\r\n \r\n6\r\nworld!\r\n0\r\n\r\n")
    await until(lambda: transport.written)
    [(status, _, body)] = parse_responses(transport.take())
    assert (status, body) == (200, b"hello world!")


async def test_a_bad_head_gets_400_and_a_lingering_close(serve):
    conn, transport = connect(serve())
    conn.data_received(b"GET /hello HTTP/1.1\r\nHost: example.org\r\nno colon here\r\n\r\n")
    await until(lambda: transport.eof)
    [(status, headers, _)] = parse_responses(transport.take())
    assert status == 400 and headers["connection"] == "close"
    # lingering: our side is shut, the client's input is read and thrown away, nothing answers it
    assert not transport.closed and transport.reading
    conn.data_received(request("/hello"))
    await turns()
    assert not transport.written and not transport.closed
    conn.data_received(b"x" * LINGER_MAX_BYTES)  # more than a lingering client may send
    assert transport.aborted


async def test_a_response_before_the_body_is_read_closes_lingering(serve, state):
    conn, transport = connect(serve(max_body_size=1000))
    # a body too large for a streaming handler: refused after prepare(), the rest unread
    conn.data_received(request("/upload", "Content-Length: 5000", method="PUT", body=b"x" * 100))
    await until(lambda: transport.eof)
    [(status, _, _)] = parse_responses(transport.take())
    assert status == 413
    conn.data_received(b"x" * 4900)  # the rest of the body, thrown away
    await turns()
    assert not transport.written and not transport.closed


async def test_413_from_content_length_before_the_body_and_no_100_continue(serve, state):
    conn, transport = connect(serve(max_body_size=1000))
    conn.data_received(request("/echo", "Content-Length: 10000", "Expect: 100-continue",
                               method="POST"))
    await until(lambda: transport.written)
    [(status, headers, _)] = parse_responses(transport.take())
    assert status == 413 and headers["connection"] == "close"
    assert transport.eof  # closing, lingering for the body the client may send anyway


async def test_100_continue_then_the_answer(serve):
    conn, transport = connect(serve())
    conn.data_received(request("/echo", "Content-Length: 4", "Expect: 100-continue",
                               method="POST"))
    await until(lambda: transport.written)
    assert transport.take() == b"HTTP/1.1 100 (Continue)\r\n\r\n"
    conn.data_received(b"ping")
    await until(lambda: transport.written)
    [(status, _, body)] = parse_responses(transport.take())
    assert (status, body) == (200, b"ping")


async def test_pause_writing_stops_the_writers_and_resume_writing_restarts_them(serve, state):
    conn, transport = connect(serve())
    conn.data_received(request("/gated"))
    await until(lambda: state["progress"] == ["first"])
    conn.pause_writing()  # the transport's buffer went over its high-water mark
    state["gate"].set()
    await turns()
    assert state["progress"] == ["first"]  # the handler's flush waits
    conn.resume_writing()
    await until(lambda: state["progress"] == ["first", "second"])
    await until(lambda: parse_responses(bytes(transport.written)))
    [(status, _, body)] = parse_responses(transport.take())
    assert (status, body) == (200, b"first second")


async def test_a_request_arriving_while_writing_is_paused_waits_for_resume(serve):
    conn, transport = connect(serve())
    conn.pause_writing()
    conn.data_received(request("/hello"))
    await turns()
    assert not transport.written
    conn.resume_writing()
    await until(lambda: transport.written)
    [(status, _, _)] = parse_responses(transport.take())
    assert status == 200


async def test_reading_pauses_while_requests_queue_and_resumes_when_answered(serve, state):
    server = serve()
    conn, transport = connect(server)
    conn.data_received(request("/gated") + request("/echo?n=2") + request("/echo?n=3"))
    await until(lambda: state["progress"] == ["first"])
    assert not transport.reading  # requests are queued: the client must wait
    assert conn in server.busy
    state["gate"].set()
    await until(lambda: len(parse_responses(bytes(transport.written))) == 3)
    responses = parse_responses(transport.take())
    assert [body for _, _, body in responses] == [b"first second", b"2", b"3"]
    await until(lambda: transport.reading)
    assert conn not in server.busy


async def test_connection_lost_mid_body_tells_the_delegate(serve, state):
    conn, transport = connect(serve())
    conn.data_received(request("/upload", "Content-Length: 100", method="PUT", body=b"x" * 40))
    await until(lambda: state["received"] == 40)
    conn.connection_lost(ConnectionResetError())
    await until(lambda: state["closed"] == ["/upload"])
    assert not transport.written


async def test_connection_lost_while_the_handler_works_tells_the_handler(serve, state):
    conn, transport = connect(serve())
    conn.data_received(request("/gated"))
    await until(lambda: state["progress"] == ["first"])
    conn.connection_lost(None)
    await until(lambda: state["closed"] == ["/gated"])
    state["gate"].set()
    await turns()
    assert state["progress"] == ["first"]  # its next flush failed: the client is gone


async def test_connection_close_closes_after_the_response(serve):
    conn, transport = connect(serve())
    conn.data_received(request("/hello", "Connection: close"))
    await until(lambda: transport.closed)
    [(status, headers, _)] = parse_responses(transport.take())
    assert status == 200 and headers["connection"] == "close"
    assert not transport.aborted
