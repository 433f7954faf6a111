"""HTTP/1.1 conformance of both engines through raw sockets: framing, limits, timeouts, drain.

Every test runs on each engine in conftest.ENGINES; where Tornado's own server answers differently
(it closes without a response where the fast engine says 431 or 408) both answers are accepted and
tests/test_engine_fast.py pins the fast engine's.
"""
import asyncio
import json

import pytest
import tornado.websocket

from helpers import get, wait_for_no_connections

pytestmark = pytest.mark.gen_test(timeout=60)


# --- keep-alive and pipelining ---

async def test_keep_alive_serves_many_requests_on_one_connection(connect, http_server):
    client = await connect()
    for name in ("ada", "grace", "linus"):
        client.send(get(f"/api/hello/{name}"))
        response = await client.response()
        assert response.status == 200
        assert response.json() == {"message": f"Hello, {name}"}
        assert response.header("connection") is None
    assert http_server.http.connection_count == 1
    client.close()
    assert await wait_for_no_connections(http_server) == 0


async def test_pipelined_requests_are_answered_in_order(connect):
    client = await connect()
    names = [f"n{i}" for i in range(20)]
    client.send(b"".join(get(f"/api/hello/{name}") for name in names))
    for name in names:
        response = await client.response()
        assert response.json() == {"message": f"Hello, {name}"}
    client.close()


async def test_pipelined_requests_with_bodies_and_a_slow_one(connect):
    client = await connect()
    body = b'{"x": 1}'
    post = (b"POST /api/echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    client.send(get("/engine-test/slow?s=0.2") + post + get("/api/hello/z") + post)
    assert (await client.response()).body == b"done"
    assert (await client.response()).json() == {"x": 1}
    assert (await client.response()).json() == {"message": "Hello, z"}
    assert (await client.response()).json() == {"x": 1}
    client.close()


async def test_many_pipelined_requests_arrive_whole_and_in_order(connect):
    client = await connect()
    for depth in (16, 70):  # the fast engine writes answers in a row together (up to 32 a write)
        names = [f"d{depth}-{i}" for i in range(depth)]
        client.send(b"".join(get(f"/api/hello/{name}") for name in names))
        assert [(await client.response()).json()["message"] for _ in names] == \
            [f"Hello, {name}" for name in names]
    client.close()


async def test_answers_before_a_waiting_pipelined_request_are_not_held_back(connect):
    client = await connect()
    client.send(get("/api/hello/a") + get("/api/hello/b") + get("/engine-test/gate")
                + get("/api/hello/c"))
    # a and b arrive while the gate's handler waits (its answer can only come after them)
    assert (await client.response()).json() == {"message": "Hello, a"}
    assert (await client.response()).json() == {"message": "Hello, b"}
    opener = await connect()
    opener.send(b"POST /engine-test/gate HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n")
    assert (await opener.response()).body == b"open"
    assert (await client.response()).body == b"through"
    assert (await client.response()).json() == {"message": "Hello, c"}
    client.close()
    opener.close()


async def test_request_context_is_right(connect):
    client = await connect()
    client.send(get("/engine-test/context?a=1&a=2&b="))
    info = (await client.response()).json()
    assert info["remote_ip"] == info["context_ip"] == "127.0.0.1"
    assert info["protocol"] == info["context_protocol"] == "http"
    assert info["host"] == "test" and info["host_name"] == "test"
    assert info["version"] == "HTTP/1.1"
    assert info["uri"] == "/engine-test/context?a=1&a=2&b="
    assert info["path"] == "/engine-test/context" and info["query"] == "a=1&a=2&b="
    assert info["arguments"] == {"a": ["1", "2"], "b": [""]}
    assert 0 <= info["request_time"] < 1
    assert info["full_url"] == "http://test/engine-test/context?a=1&a=2&b="
    client.close()


# --- bodies ---

async def test_chunked_request_body(connect):
    client = await connect()
    client.send(b"POST /api/echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
                b"4\r\n{\"a\"\r\n3\r\n: [\r\n"
                b"5\r\n1, 2]\r\n1\r\n}\r\n0\r\n\r\n")
    response = await client.response()
    assert response.status == 200
    assert response.json() == {"a": [1, 2]}
    client.send(get("/api/hello/after"))  # the framing held: the connection is still usable
    assert (await client.response()).json() == {"message": "Hello, after"}
    client.close()


async def test_chunked_request_body_in_tiny_writes(connect):
    client = await connect()
    client.send(b"POST /api/echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n")
    for piece in (b"2\r\n[1", b"\r\n", b"2\r", b"\n,2\r\n", b"1\r\n]\r\n", b"0\r\n", b"\r\n"):
        await asyncio.sleep(0.01)
        client.send(piece)
    assert (await client.response()).json() == [1, 2]
    client.close()


async def test_streamed_response_is_chunked_and_arrives_in_pieces(connect):
    client = await connect()
    client.send(get("/engine-test/streamed?n=4"))
    response = await client.response()
    assert response.status == 200
    assert response.header("transfer-encoding") == "chunked"
    assert response.body == b"part0;part1;part2;part3;"
    assert response.raw_body.count(b"\r\n") >= 10  # several chunks, not one
    client.send(get("/api/hello/after"))
    assert (await client.response()).status == 200
    client.close()


@pytest.mark.parametrize("chunked", [False, True])
async def test_stream_request_body_handler(connect, chunked):
    client = await connect()
    size = 3 * 1024 * 1024  # over the server's 1 MB limit: the handler raised its own
    piece = b"x" * 65536
    if chunked:
        client.send(b"PUT /engine-test/upload HTTP/1.1\r\nHost: t\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n")
        for _ in range(size // len(piece)):
            client.send(b"%x\r\n%s\r\n" % (len(piece), piece))
            await client.writer.drain()
        client.send(b"0\r\n\r\n")
    else:
        # 413 is answered from the head for anything over --max-body-size, so stay under it here
        size = 1024 * 1024 - 1
        client.send(b"PUT /engine-test/upload HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % size)
        sent = 0
        while sent < size:
            data = piece[:size - sent]
            client.send(data)
            sent += len(data)
            await client.writer.drain()
    response = await client.response(timeout=20)
    assert response.status == 200, response
    assert response.json()["bytes"] == size
    client.close()


async def test_expect_100_continue(connect):
    client = await connect()
    client.send(b"POST /api/echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                b"Content-Length: 7\r\nExpect: 100-continue\r\n\r\n")
    interim = await client.response()
    assert interim.status == 100
    client.send(b'{"a":1}')
    final = await client.response()
    assert final.status == 200 and final.json() == {"a": 1}
    client.close()


async def test_expect_100_continue_with_too_large_body_gets_413_and_no_100(connect):
    client = await connect()
    client.send(b"POST /api/echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                b"Content-Length: 5000000\r\nExpect: 100-continue\r\n\r\n")
    response = await client.response()
    assert response.status == 413
    assert response.json()["error"]["status"] == 413
    assert await client.closed()


# --- responses without bodies, and closing ---

async def test_head_has_headers_but_no_body(connect):
    client = await connect()
    client.send(get("/engine-test/slow?s=0", method="HEAD") + get("/api/hello/bob"))
    head = await client.response(method="HEAD")
    assert head.status == 200
    assert int(head.header("content-length")) == len(b"done")
    # had a body been sent, it would now be read as the next response
    assert (await client.response()).json() == {"message": "Hello, bob"}
    client.close()


async def test_not_modified_has_no_body(connect):
    client = await connect()
    client.send(get("/api/hello/ada"))
    etag = (await client.response()).header("etag")
    assert etag
    client.send(get("/api/hello/ada", f"If-None-Match: {etag}") + get("/api/hello/bob"))
    not_modified = await client.response()
    assert not_modified.status == 304
    assert not_modified.header("transfer-encoding") is None
    assert (await client.response()).json() == {"message": "Hello, bob"}
    client.close()


async def test_connection_close_is_honoured(connect, http_server):
    client = await connect()
    client.send(get("/api/hello/ada", "Connection: close"))
    response = await client.response()
    assert response.status == 200
    assert response.header("connection") == "close"
    assert await client.closed()
    assert await wait_for_no_connections(http_server) == 0


async def test_http_1_0_closes_after_the_response(connect):
    client = await connect()
    client.send(b"GET /api/hello/old HTTP/1.0\r\n\r\n")
    response = await client.response()
    assert response.status == 200 and response.json() == {"message": "Hello, old"}
    assert await client.closed()


async def test_http_1_0_keep_alive(connect):
    client = await connect()
    for name in ("a", "b"):
        client.send(f"GET /api/hello/{name} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n".encode())
        response = await client.response()
        assert response.json() == {"message": f"Hello, {name}"}
        assert response.header("connection").lower() == "keep-alive"
    client.close()


async def test_upgrade_request_to_a_plain_handler_keeps_http(connect):
    client = await connect()
    client.send(get("/api/hello/up", "Connection: Upgrade, HTTP2-Settings", "Upgrade: h2c",
                    "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA") + get("/api/hello/next"))
    assert (await client.response()).json() == {"message": "Hello, up"}
    assert (await client.response()).json() == {"message": "Hello, next"}
    client.close()


# --- refused requests ---

@pytest.mark.parametrize("request_bytes", [
    b"GARBAGE\r\n\r\n",
    b"GET /\r\n\r\n",
    b"GET / HTTP/2.0\r\nHost: t\r\n\r\n",
    b"GET / HTTP/1.1\r\n\r\n",  # no Host
    b"GET / HTTP/1.1\r\nHost: t\r\nNo-Colon\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost : t\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: t\r\nX: a\x01b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: t\r\nX: a\r\n folded\r\n\r\n",
    b"GET /a b HTTP/1.1\r\nHost: t\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n",
], ids=["garbage", "http09", "http2", "no-host", "no-colon", "space-before-colon", "control-char",
        "folding", "space-in-target", "bad-host"])
async def test_malformed_requests_get_400_and_close(connect, request_bytes):
    client = await connect()
    client.send(request_bytes)
    response = await client.response()
    assert response.status == 400
    assert await client.closed()


@pytest.mark.parametrize("head", [
    b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
    b"Content-Length: 3\r\nContent-Length: 4\r\n",
    b"Transfer-Encoding: gzip\r\n",
    b"Transfer-Encoding: gzip, chunked\r\n",
    b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
    b"Content-Length: -3\r\n",
    b"Content-Length: 3x\r\n",
], ids=["cl-te", "te-cl", "two-lengths", "te-gzip", "te-gzip-chunked", "two-te", "negative-cl",
        "bad-cl"])
async def test_ambiguous_framing_is_refused(connect, head):
    client = await connect()
    client.send(b"POST /api/echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n" + head
                + b"\r\n3\r\n[1]\r\n0\r\n\r\nGET /api/hello/smuggled HTTP/1.1\r\nHost: t\r\n\r\n")
    response = await client.response()
    assert response.status == 400
    assert b"smuggled" not in await client.rest()


@pytest.mark.parametrize("chunks", [
    b"zz\r\nabc\r\n0\r\n\r\n",
    b"-3\r\nabc\r\n0\r\n\r\n",
    b"ffffffffffffffffffff\r\nabc\r\n0\r\n\r\n",
    b"3\r\nabcXY0\r\n\r\n",
    b"3 3\r\nabc\r\n0\r\n\r\n",
], ids=["letters", "negative", "overflow", "unterminated", "space"])
async def test_invalid_chunks_get_400(connect, chunks):
    client = await connect()
    client.send(b"POST /api/echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n" + chunks)
    response = await client.response()
    assert response.status == 400
    assert await client.closed()


@pytest.mark.server_settings(max_body_size=1024)
async def test_chunked_body_growing_past_the_limit_is_cut_off_with_400(connect):
    client = await connect()
    client.send(b"POST /api/echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n" + b"400\r\n" + b"x" * 1024 + b"\r\n"
                + b"10\r\n" + b"y" * 16 + b"\r\n0\r\n\r\n")
    assert (await client.response()).status == 400
    assert await client.closed()


@pytest.mark.server_settings(max_header_size=4096)
@pytest.mark.parametrize("where", ["one-header", "many-headers", "target"])
async def test_oversized_head_is_refused(connect, where):
    client = await connect()
    if where == "one-header":
        client.send(get("/api/hello", "X-Big: " + "b" * 8000))
    elif where == "many-headers":
        client.send(get("/api/hello", *[f"X-H{i}: {'v' * 50}" for i in range(200)]))
    else:
        client.send(get("/api/hello?q=" + "q" * 8000))
    raw = await client.rest()
    # Tornado's server closes without a word; the fast engine says 431
    assert raw == b"" or raw.startswith((b"HTTP/1.1 431 ", b"HTTP/1.1 400 ")), raw[:100]


@pytest.mark.server_settings(max_body_size=1024)
@pytest.mark.parametrize("path, json_body", [("/api/echo", True), ("/hello", False)])
async def test_oversized_body_is_413_from_the_head(connect, path, json_body):
    client = await connect()
    client.send(f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                f"Content-Length: 100000\r\n\r\n".encode() + b"x" * 5000)
    response = await client.response()
    assert response.status == 413
    assert response.header("connection") == "close"
    if json_body:
        assert response.json()["error"]["status"] == 413
    else:
        assert b"413" in response.body and response.header("content-type").startswith("text/html")
    assert await client.closed()


# --- clients that go away ---

async def test_client_vanishing_mid_head_mid_body_and_mid_response(connect, http_server):
    partial_head = await connect()
    partial_head.send(b"GET /api/hello HTTP/1.1\r\nHost: t\r\nX-Partial: yes")
    partial_body = await connect()
    partial_body.send(b"POST /api/echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 1000\r\n\r\n[1, 2")
    partial_upload = await connect()
    partial_upload.send(b"PUT /engine-test/upload HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n"
                        + b"x" * 1000)
    waiting = await connect()
    waiting.send(get("/engine-test/slow?s=0.3"))
    streaming = await connect()
    streaming.send(get("/engine-test/streamed?n=100"))
    await streaming.reader.readline()
    await asyncio.sleep(0.1)
    for client in (partial_head, partial_body, partial_upload, waiting, streaming):
        client.close()
    assert await wait_for_no_connections(http_server) == 0
    await asyncio.sleep(0.5)  # the slow handler finishes into a closed connection
    healthy = await connect()
    healthy.send(get("/api/hello/still"))
    assert (await healthy.response()).json() == {"message": "Hello, still"}
    healthy.close()
    assert await wait_for_no_connections(http_server) == 0
    assert len(http_server.http.busy) == 0


async def test_client_resetting_the_connection(connect, http_server):
    import socket
    import struct
    upload = b"POST /api/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 50\r\n\r\n"
    for request in (get("/engine-test/slow?s=0.2"), upload):
        client = await connect()
        client.send(request)
        await client.writer.drain()
        await asyncio.sleep(0.05)
        sock = client.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
        client.close()
    assert await wait_for_no_connections(http_server) == 0


# --- timeouts ---

@pytest.mark.server_settings(idle_timeout=0.3)
async def test_idle_connections_are_closed(connect, http_server):
    silent = await connect()
    used = await connect()
    used.send(get("/api/hello/once"))
    assert (await used.response()).status == 200
    slow_head = await connect()
    slow_head.send(b"GET /api/hello HTTP/1.1\r\n")  # a head that never completes
    started = asyncio.get_running_loop().time()
    for client in (silent, used, slow_head):
        assert await client.closed(timeout=3)
    assert asyncio.get_running_loop().time() - started < 2.5
    assert await wait_for_no_connections(http_server) == 0


@pytest.mark.server_settings(idle_timeout=0.3)
async def test_a_slow_handler_is_not_an_idle_connection(connect):
    client = await connect()
    client.send(get("/engine-test/slow?s=0.8"))
    assert (await client.response()).body == b"done"
    client.close()


@pytest.mark.server_settings(body_timeout=0.3)
async def test_body_timeout_closes_a_slow_upload(connect, http_server):
    client = await connect()
    client.send(b"POST /api/echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100\r\n\r\n[1,")
    raw = await client.rest(timeout=3)
    assert raw == b"" or raw.startswith(b"HTTP/1.1 408 "), raw[:100]
    assert await wait_for_no_connections(http_server) == 0


# --- WebSockets ---

async def test_websocket_echo(port, http_server):
    conn = await tornado.websocket.websocket_connect(f"ws://127.0.0.1:{port}/engine-test/ws")
    for message in ("hello", "", "é" * 1000):
        await conn.write_message(message)
        assert await asyncio.wait_for(conn.read_message(), 5) == message
    big = bytes(range(256)) * 4096  # 1 MB, binary
    await conn.write_message(big, binary=True)
    assert await asyncio.wait_for(conn.read_message(), 10) == big
    conn.close()
    assert await wait_for_no_connections(http_server) == 0


async def test_websocket_server_side_close(port, http_server):
    conn = await tornado.websocket.websocket_connect(f"ws://127.0.0.1:{port}/engine-test/ws")
    await conn.write_message("close-me")
    assert await asyncio.wait_for(conn.read_message(), 5) is None
    assert conn.close_code == 4000 and conn.close_reason == "asked"
    conn.close()
    assert await wait_for_no_connections(http_server) == 0


async def test_guestbook_live_websocket(port, api):
    conn = await tornado.websocket.websocket_connect(f"ws://127.0.0.1:{port}/guestbook/live")
    created = (await api.post("/api/messages", {"name": "Engine", "text": "live"}))
    message = json.loads(created.body)
    event = json.loads(await asyncio.wait_for(conn.read_message(), 5))
    assert event == {"type": "message", "message": message}
    conn.close()


async def test_websocket_upgrade_refused_keeps_http(connect):
    client = await connect()
    client.send(get("/engine-test/ws", "Upgrade: websocket", "Connection: Upgrade",
                    "Sec-WebSocket-Version: 99", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==")
                + get("/api/hello/after"))
    assert (await client.response()).status == 426
    assert (await client.response()).json() == {"message": "Hello, after"}
    client.close()


# --- graceful drain ---

async def test_drain_finishes_in_flight_closes_idle_and_refuses_new(connect, http_server, port):
    busy = await connect()
    busy.send(get("/engine-test/slow?s=0.5"))
    idle = await connect()
    idle.send(get("/api/hello/idle"))
    assert (await idle.response()).status == 200
    await asyncio.sleep(0.1)
    assert len(http_server.http.busy) == 1
    draining = asyncio.ensure_future(http_server.http.drain(5, 0.0))
    assert await idle.closed(timeout=2)
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)
    response = await busy.response()
    assert response.status == 200 and response.body == b"done"
    assert await busy.closed(timeout=3)
    assert await draining is True
    assert http_server.http.connection_count == 0


async def test_drain_timeout_cuts_requests_off(connect, http_server):
    client = await connect()
    client.send(get("/engine-test/slow?s=5"))
    await asyncio.sleep(0.1)
    assert await http_server.http.drain(0.2, 0.0) is False
    assert await client.closed(timeout=2)
    assert http_server.http.connection_count == 0


async def test_close_all_connections_closes_websockets_too(connect, http_server, port):
    conn = await tornado.websocket.websocket_connect(f"ws://127.0.0.1:{port}/engine-test/ws")
    client = await connect()
    client.send(get("/api/hello/x"))
    await client.response()
    http_server.http.stop()
    await http_server.http.close_all_connections()
    assert await client.closed(timeout=2)
    if http_server.settings.engine == "fast":  # Tornado's leaves WebSockets to their handlers
        assert await asyncio.wait_for(conn.read_message(), 5) is None
    conn.close()
