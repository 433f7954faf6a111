"""server.compat, every function, on the Tornado installed and on the lowest setup.cfg allows.

server.compat is the one module that touches Tornado's internals. Each test here drives one of
its functions through real Tornado objects (a served request, a real IOStream, a RequestHandler
in an Application) and checks it against what Tornado itself does or reports publicly. The last
test installs the lowest Tornado the `tornado>=` requirement in setup.cfg names (pip, into a
directory beside this Python's environment, once) and runs this module, test_headers,
test_handler_delegate and test_compat_date again on it, in a subprocess: what compat relies on
is proven on both ends of the range `make test` promises.
"""
import asyncio
import configparser
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import tornado
import tornado.httpserver
import tornado.web
from packaging.requirements import Requirement
from tornado import httputil
from tornado.httpclient import AsyncHTTPClient

from server import compat
from server.config import Settings
from server.httpserver import DrainingHTTPServer
from server.lifecycle import bind, bound_port, make_http_server

PROJECT = Path(__file__).resolve().parent.parent
# set in the subprocess that runs these tests on the lowest Tornado (it must not recurse)
LOWEST_RUN = "COMPAT_TESTS_TORNADO"


def lowest_tornado() -> str:
    """The lowest Tornado version setup.cfg's install_requires allows (its ">=" bound)."""
    config = configparser.ConfigParser()
    config.read(PROJECT / "setup.cfg")
    for line in config["options"]["install_requires"].splitlines():
        if line.strip() and Requirement(line.strip()).name == "tornado":
            bounds = [s.version for s in Requirement(line.strip()).specifier if s.operator == ">="]
            assert len(bounds) == 1, line
            return bounds[0]
    raise AssertionError("setup.cfg does not require tornado")


# --- the handler side: what BaseHandler.clear(), finish() and flush() use ---

class Probe(tornado.web.RequestHandler):
    """Records what compat reports at each step of a response."""

    def set_default_headers(self):
        self.set_header("X-Default", "yes")
        self.set_status(201)  # Tornado's clear() resets the status after this hook

    def get(self):
        seen = self.application.settings["seen"]
        compat.reset_response(self, compat.make_headers({"X-Built": ["direct"]}))
        seen["status after reset"] = self.get_status()
        self.write("abc")
        self.write(b"de")
        seen["buffered"] = compat.buffered_body_bytes(self)
        seen["written before flush"] = compat.headers_written(self)
        self.flush()
        seen["written after flush"] = compat.headers_written(self)
        seen["buffered after flush"] = compat.buffered_body_bytes(self)
        self.finish("f")


async def serve(app, engine="tornado", **settings):
    sockets = bind("127.0.0.1", 0, 128)
    server = make_http_server(app, Settings(engine=engine, **settings))
    server.add_sockets(sockets)
    return server, bound_port(sockets)


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize("engine", ["fast", "tornado"])
async def test_reset_response_and_the_handler_buffer_read_as_tornado_keeps_them(engine):
    seen = {}
    server, port = await serve(tornado.web.Application([(r"/", Probe)], seen=seen), engine)
    try:
        response = await AsyncHTTPClient().fetch(f"http://127.0.0.1:{port}/")
    finally:
        server.stop()
    assert response.code == 200 and response.body == b"abcdef"
    # the built headers replaced the defaults, and the hook ran after them, in Tornado's order
    assert response.headers["X-Built"] == "direct" and response.headers["X-Default"] == "yes"
    assert seen == {"status after reset": 200, "buffered": 5, "written before flush": False,
                    "written after flush": True, "buffered after flush": 0}


def test_check_header_value_refuses_what_set_header_refuses():
    compat.check_header_value("text/html; charset=UTF-8")
    for bad in ("a\r\nInjected: 1", "a\nb", "a\x00b"):
        with pytest.raises(ValueError):
            compat.check_header_value(bad)


# --- headers built straight from dicts ---

def test_make_headers_and_header_lists_agree_with_tornados_headers():
    lines = {"Content-Type": ["text/plain"], "Set-Cookie": ["a=1", "b=2"]}
    built = compat.make_headers({name: list(values) for name, values in lines.items()})
    tornado_headers = httputil.HTTPHeaders()
    for name, values in lines.items():
        for value in values:
            tornado_headers.add(name, value)
    assert compat.header_lists(built) == lines == compat.header_lists(tornado_headers)
    assert list(built.get_all()) == list(tornado_headers.get_all())
    assert compat.normalized("x-rEQUEST-id") == "X-Request-Id"


# --- the tornado engine: Tornado's HTTPServer and IOStream, read for timeouts and limits ---

class Big(tornado.web.RequestHandler):
    def get(self):
        self.finish(b"x" * 100_000)


@pytest.mark.gen_test(timeout=30)
async def test_connections_and_their_read_and_write_counts_are_what_the_sockets_carried():
    server, port = await serve(tornado.web.Application([(r"/big", Big)]))
    assert isinstance(server, DrainingHTTPServer)
    loop = asyncio.get_running_loop()
    client = socket.create_connection(("127.0.0.1", port))
    client.setblocking(False)
    try:
        partial = b"GET /big HTTP/1.1\r\nHost: x\r\nX-Half: "
        await loop.sock_sendall(client, partial)
        for _ in range(200):
            if compat.open_connections(server):
                conn = next(iter(compat.open_connections(server)))
                if compat.buffered_read_bytes(conn.stream) == len(partial):
                    break
            await asyncio.sleep(0.01)
        assert server.connection_count == 1
        assert compat.buffered_read_bytes(conn.stream) == len(partial)  # a head has begun
        written_before = compat.bytes_written(conn.stream)
        await loop.sock_sendall(client, b"1\r\n\r\n")
        received = b""
        while b"x" * 100_000 not in received:
            chunk = await asyncio.wait_for(loop.sock_recv(client, 65536), 10)
            assert chunk, received[:300]
            received += chunk
        assert compat.buffered_read_bytes(conn.stream) == 0
        # everything the client received went through the counter (head + 100,000 body bytes)
        assert compat.bytes_written(conn.stream) - written_before == len(received)
    finally:
        client.close()
        server.stop()


@tornado.web.stream_request_body
class BodyLimit(tornado.web.RequestHandler):
    def prepare(self):
        self.limit = compat.http1_max_body_size(self.request.connection)

    def data_received(self, chunk):
        pass

    def put(self):
        self.write({"limit": self.limit})


@pytest.mark.gen_test(timeout=30)
async def test_http1_max_body_size_is_the_limit_the_server_was_given():
    server, port = await serve(tornado.web.Application([(r"/", BodyLimit)]), max_body_size=4321)
    try:
        response = await AsyncHTTPClient().fetch(f"http://127.0.0.1:{port}/", method="PUT",
                                                 body=b"12")
    finally:
        server.stop()
    assert response.body == b'{"limit": 4321}'


class CloseAfter(tornado.web.RequestHandler):
    def get(self):
        if self.get_argument("flush", None):
            self.write("head sent: ")
            self.flush()
        compat.close_after_response(self.request.connection)
        self.finish("done")


async def exchange(reader, writer, path):
    """One GET on an open connection: (head, body) of its response."""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    if "Transfer-Encoding: chunked" in head:
        body = b""
        while size := int((await reader.readline()).strip(), 16):
            body += (await reader.readexactly(size + 2))[:-2]
        await reader.readline()
        return head, body
    length = int(re.search(r"Content-Length: (\d+)", head).group(1))
    return head, await reader.readexactly(length)


@pytest.mark.gen_test(timeout=30)
async def test_close_after_response_closes_the_connection_unless_the_head_went_out():
    sockets = bind("127.0.0.1", 0, 128)
    server = tornado.httpserver.HTTPServer(tornado.web.Application([(r"/", CloseAfter)]))
    server.add_sockets(sockets)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", bound_port(sockets))
        head, body = await exchange(reader, writer, "/?flush=1")  # promised keep-alive: kept
        assert body == b"head sent: done" and "Connection: close" not in head
        head, body = await exchange(reader, writer, "/")
        assert body == b"done" and "Connection: close" in head
        assert await reader.read() == b""  # and Tornado closed it
        writer.close()
    finally:
        server.stop()


def test_release_transport_breaks_the_selector_transports_cycle():
    async def main():
        loop = asyncio.get_running_loop()
        closed = loop.create_future()

        class Protocol(asyncio.Protocol):
            def connection_lost(self, exc):
                closed.set_result(None)
        listener = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        transport, _ = await loop.create_connection(Protocol, "127.0.0.1", port)
        transport.close()
        await closed
        compat.release_transport(transport)
        listener.close()
        return transport
    transport = asyncio.run(main())  # the default (selector) loop, as the engine's asyncio mode
    assert getattr(transport, "_read_ready_cb", None) is None


def test_a_tornado_that_moved_an_attribute_fails_at_import_not_silently():
    def initialize(self):
        self._something_else = 0
    with pytest.raises(ImportError, match="_connections"):
        compat._require(initialize, "_connections")
    compat._require(initialize, "_something_else")


# --- the same tests on the lowest Tornado setup.cfg allows ---

def test_the_installed_tornado_is_in_the_range_setup_cfg_allows():
    lowest = lowest_tornado()
    wanted = os.environ.get(LOWEST_RUN)
    if wanted:  # the subprocess below: it really runs on the lowest
        assert tornado.version == wanted == lowest, (tornado.version, tornado.__file__)
    assert tornado.version_info >= tuple(int(p) for p in lowest.split(".")) + (0,)


def test_compat_passes_on_the_lowest_tornado_setup_cfg_allows(tmp_path):
    lowest = lowest_tornado()
    target = Path(sys.prefix) / f"tornado-{lowest}"  # installed once per environment
    if not (target / "tornado" / "__init__.py").exists():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                        "--target", str(target), f"tornado=={lowest}"], check=True, timeout=300)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(target), str(PROJECT), os.environ.get("PYTHONPATH")])))
    env[LOWEST_RUN] = lowest
    this = f"tests/test_compat.py::{test_compat_passes_on_the_lowest_tornado_setup_cfg_allows.__name__}"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA",
         "--basetemp", str(tmp_path / "run"), "--deselect", this, "tests/test_compat.py",
         "tests/test_headers.py", "tests/test_handler_delegate.py", "tests/test_compat_date.py"],
        cwd=PROJECT, env=env, capture_output=True, text=True, timeout=600)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-8000:]
    assert "PASSED tests/test_compat.py::test_the_installed_tornado_is_in_the_range" in out, out
    summary = re.search(r"^(\d+) passed, 1 deselected in ", out, re.MULTILINE)
    assert summary and int(summary.group(1)) >= 20, out[-3000:]
