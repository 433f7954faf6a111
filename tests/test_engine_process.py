"""The fast engine as a user runs it: `python -m server --engine fast` on asyncio and uvloop."""
import asyncio
import json
import signal
import socket
import time

import pytest
import tornado.httpclient
import tornado.websocket


def exchange(port, data, responses, timeout=10):
    """Send raw bytes on one connection; return the bytes of `responses` complete responses."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        deadline = time.monotonic() + timeout
        while received.count(b"HTTP/1.1 ") < responses or not _complete(received, responses):
            assert time.monotonic() < deadline, received
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        return received


def _complete(data, responses):
    # every response of these tests has a Content-Length: count the bodies that arrived whole
    done = 0
    rest = data
    while done < responses:
        head, sep, rest = rest.partition(b"\r\n\r\n")
        if not sep:
            return False
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        if len(rest) < length:
            return False
        rest = rest[length:]
        done += 1
    return True


async def live_round_trip(url, port):
    """Open the live guestbook WebSocket, post a message, receive it; then the shutdown close."""
    ws = await tornado.websocket.websocket_connect(f"ws://127.0.0.1:{port}/guestbook/live")
    client = tornado.httpclient.AsyncHTTPClient(force_instance=True)
    try:
        created = await client.fetch(url + "/api/messages", method="POST",
                                     body=json.dumps({"name": "Proc", "text": "live"}),
                                     headers={"Content-Type": "application/json"})
        event = json.loads(await asyncio.wait_for(ws.read_message(), 5))
        assert event == {"type": "message", "message": json.loads(created.body)}
    finally:
        client.close()
    return ws


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_fast_engine_serves_and_drains(live_server_factory, loop):
    server = live_server_factory("--engine", "fast", "--loop", loop)
    pipelined = b"".join(f"GET /api/hello/p{i} HTTP/1.1\r\nHost: t\r\n\r\n".encode() for i in range(5))
    answer = exchange(server.port, pipelined, 5)
    for i in range(5):
        assert f'{{"message":"Hello, p{i}"}}'.encode() in answer
    page = exchange(server.port, b"GET /hello/ada HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", 1)
    assert page.startswith(b"HTTP/1.1 200 ") and b"Hello, ada" in page

    async def live_then_stop():
        ws = await live_round_trip(server.url, server.port)
        server.signal(signal.SIGTERM)
        try:
            assert await asyncio.wait_for(ws.read_message(), 10) is None
            assert ws.close_code == 1001
        finally:
            ws.close()
    loop = asyncio.new_event_loop()  # not asyncio.run: it would unset the thread's event loop
    try:
        loop.run_until_complete(live_then_stop())
    finally:
        loop.close()
    assert server.wait() == 0
    assert "Traceback" not in server.stderr
