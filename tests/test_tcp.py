"""The TCP greeting service (seed 000) on a real socket: greetings, many clients, limits."""
import asyncio
import sys

import pytest
from tornado.netutil import bind_sockets

from helpers import PROJECT_ROOT
from server.services.greeting import GreetingService
from server.tcp import GreetingTCPServer

pytestmark = pytest.mark.gen_test(timeout=30)


@pytest.fixture
def tcp_service(io_loop):
    """A greeting service with a 64-byte line limit and a 0.5 s idle timeout; yields its port."""
    sock = bind_sockets(0, "127.0.0.1")[0]

    async def start():
        server = GreetingTCPServer(GreetingService(max_name_length=64), max_line=64, idle_timeout=0.5)
        server.add_sockets([sock])
        return server
    server = io_loop.run_sync(start)
    server.port = sock.getsockname()[1]
    yield server
    io_loop.run_sync(lambda: server.shutdown(timeout=1))


async def converse(port, payload: bytes, read_until_close=True):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read() if read_until_close else reader.readline(), 5)
    finally:
        writer.close()


async def test_each_line_is_greeted(tcp_service):
    reader, writer = await asyncio.open_connection("127.0.0.1", tcp_service.port)
    writer.write(b"ada\r\ngrace\n\n")
    await writer.drain()
    lines = [await asyncio.wait_for(reader.readline(), 5) for _ in range(3)]
    assert lines == [b"Hello, ada\n", b"Hello, grace\n", b"Hello, Anonymous\n"]
    writer.write(b"split ")
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.write(b"line\n")
    assert await asyncio.wait_for(reader.readline(), 5) == b"Hello, split line\n"
    writer.close()


async def test_many_clients_at_once(tcp_service):
    answers = await asyncio.gather(*(converse(tcp_service.port, f"client {i}\n".encode(), False)
                                     for i in range(200)))
    assert answers == [f"Hello, client {i}\n".encode() for i in range(200)]


async def test_overlong_line_gets_an_error_and_is_closed(tcp_service):
    answer = await converse(tcp_service.port, b"x" * 200)
    assert answer == b"Error: line longer than 64 bytes\n"
    answer = await converse(tcp_service.port, b"ok\n" + b"y" * 100 + b"\n")
    assert answer == b"Hello, ok\nError: line longer than 64 bytes\n"


async def test_invalid_utf8_and_control_characters(tcp_service):
    reader, writer = await asyncio.open_connection("127.0.0.1", tcp_service.port)
    writer.write(b"caf\xc3\xa9 \xff\n" + b"bell\x07\n")
    lines = [await asyncio.wait_for(reader.readline(), 5) for _ in range(2)]
    assert lines[0] == "Hello, café \ufffd\n".encode()
    assert lines[1] == b"Error: name: must not contain control characters\n"
    writer.close()


async def test_idle_clients_are_disconnected(tcp_service):
    reader, writer = await asyncio.open_connection("127.0.0.1", tcp_service.port)
    data = await asyncio.wait_for(reader.read(), 5)
    assert data == b"Bye: idle for too long\n"
    writer.close()
    await asyncio.sleep(0.05)
    assert tcp_service.connection_count == 0


async def test_half_closed_client_is_answered_cleaned_up_and_others_are_served(tcp_service):
    # a line sent together with FIN (shutdown(SHUT_WR)) is still answered before the server closes
    reader, writer = await asyncio.open_connection("127.0.0.1", tcp_service.port)
    writer.write(b"bye\n")
    writer.write_eof()
    assert await asyncio.wait_for(reader.read(), 5) == b"Hello, bye\n"
    writer.close()
    await asyncio.sleep(0.05)
    assert tcp_service.connection_count == 0
    assert await converse(tcp_service.port, b"next\n", False) == b"Hello, next\n"


async def test_shutdown_closes_clients(tcp_service):
    reader, writer = await asyncio.open_connection("127.0.0.1", tcp_service.port)
    writer.write(b"x\n")
    assert await reader.readline() == b"Hello, x\n"
    await tcp_service.shutdown(timeout=1)
    assert await asyncio.wait_for(reader.read(), 5) == b""
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", tcp_service.port)
    writer.close()


async def test_importing_the_tcp_service_does_not_load_the_fast_engine():
    # the greeting service needs engine.listeners only: the fast engine and httptools (its
    # parser, an optional speed-up) load when --engine fast asks for them, not on import
    check = ("import server.tcp, sys; loaded = [m for m in ('httptools', 'server.engine.server') "
             "if m in sys.modules]; assert not loaded, loaded")
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", check, cwd=PROJECT_ROOT,
                                                stderr=asyncio.subprocess.PIPE)
    _, errors = await proc.communicate()
    assert proc.returncode == 0, errors.decode()
