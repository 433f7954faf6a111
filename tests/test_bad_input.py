"""Classes of bad input, each sent to every route that takes it, on both engines (issue 15).

- integer parameters written in anything but ASCII digits ("²", "①", "٣", "５", "+1", ...):
  422 naming the parameter, 404 for a message id in the path; never a 500 or a traceback;
- JSON numbers JSON cannot carry back (1e999999 overflows a float; NaN, Infinity): 400;
- WebSocket messages over --live-max-message-size: closed with 1009, smaller ones still work;
- upstream responses of /api/fetch whose body cannot be framed (Content-Length "²", lists, both
  Content-Length and Transfer-Encoding, ...): that URL's result says "invalid response from the
  upstream" (a 502 when it is the only URL), and nothing is logged as an error.

Each class has one test per route (parametrized) and one test per engine that sends the whole
class and records the count tried for RELIABILITY.md.
"""
import asyncio
import json
import urllib.parse

import pytest
import tornado.websocket

from handlers.base import WebSocketHandler
from handlers.openapi import routes_of
from helpers import json_of

pytestmark = [pytest.mark.gen_test(timeout=60), pytest.mark.hardening]

ADMIN_TOKEN = "bad-input-admin"


# --- integer parameters ---

# str.isdigit() takes the first five (int() then crashes on "²" and "①", takes "٣" and "５"); int()
# takes most of the rest; none is a number in a URL. The last ones are digits with spaces or
# control characters around them, and the empty value: Tornado's get_query_argument strips the
# first and turns the second into spaces (so "\x001" read as 1); the value as sent is refused.
NOT_ASCII_DIGITS = ["²", "①", "٣", "５", "١٢", "+1", "-1", "1_0", "0x1", "1e2", "1.0",
                    "9" * 19, "", " 1", "1 ", "\t1", "1\x00", "\x011", "1\r\n"]

# (method, path with {} for the value, status, the parameter the error names)
INTEGER_PARAMETERS = {
    "slow-ms": ("GET", "/api/slow?ms={}", 422, "ms"),
    "messages-limit": ("GET", "/api/messages?limit={}", 422, "limit"),
    "messages-before": ("GET", "/api/messages?before={}", 422, "before"),
    "message-id-get": ("GET", "/api/messages/{}", 404, None),
    "message-id-delete": ("DELETE", "/api/messages/{}", 404, None),
    "guestbook-page-before": ("GET", "/guestbook?before={}", 422, "before"),
}


@pytest.fixture
def server_settings(server_settings):
    """An admin token (DELETE is tried), a small /api/slow bound."""
    return server_settings.replace(admin_token=ADMIN_TOKEN, slow_max_ms=50)


async def integer_parameter_problems(api, route, values):
    """Send each value to one integer parameter; what answered other than expected."""
    method, template, status, name = INTEGER_PARAMETERS[route]
    problems = []
    for value in values:
        path = template.format(urllib.parse.quote(value, safe=""))
        response = await api.call(method, path,
                                  headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        where = f"{method} {path} ({value!r})"
        if response.code != status:
            problems.append(f"{where}: {response.code} {response.body[:200]!r}")
        elif path.startswith("/api/"):
            error = json_of(response)["error"]
            if error["status"] != status or (name and error.get("field") != name) \
                    or (name and name not in error["message"]):
                problems.append(f"{where}: {error}")
        elif name not in response.body.decode() or "text/html" not in response.headers["Content-Type"]:
            problems.append(f"{where}: the page does not name {name}: {response.body[:300]!r}")
    return problems


async def a_stored_message(api):
    """Post a message; its id (the same message must still be there after the bad input)."""
    response = await api.post("/api/messages", {"name": "Kept", "text": "still here"})
    assert response.code == 201, response.body
    return json_of(response)["id"]


@pytest.mark.parametrize("route", INTEGER_PARAMETERS)
async def test_integer_parameters_take_ascii_digits_only(api, server_errors, route):
    kept = await a_stored_message(api)
    assert await integer_parameter_problems(api, route, NOT_ASCII_DIGITS) == []
    # the same parameter written in ASCII digits works
    method, template, _, _ = INTEGER_PARAMETERS[route]
    value = {"slow-ms": "1", "messages-limit": "1", "messages-before": str(kept + 1),
             "guestbook-page-before": str(kept + 1)}.get(route, str(kept))
    if method == "GET":
        ok = await api.get(template.format(value))
        assert ok.code == 200, ok.body
    assert server_errors() == []


QUERY_INTEGERS = [route for route, (_, template, _, _) in INTEGER_PARAMETERS.items()
                  if "?" in template]


@pytest.mark.parametrize("route", QUERY_INTEGERS)
async def test_a_query_parameter_given_twice_is_refused(api, server_errors, route):
    """?limit=1&limit=99 is not read as its last value: a 422 naming the parameter."""
    method, template, status, name = INTEGER_PARAMETERS[route]
    for path in (template.format("1") + "&" + template.format("2").split("?")[1],
                 template.format("") + "&" + template.format("1").split("?")[1]):
        response = await api.call(method, path)
        assert response.code == 422, (path, response.code, response.body[:300])
        body = response.body.decode()
        assert name in body and "once" in body, body[:300]
    assert server_errors() == []


async def test_unicode_digit_integers_battery(api, server_errors, engine, reliability):
    reliability.describe(f"integer parameters (query and path) written in non-ASCII digits or "
                         f"int() spellings (², ①, ٣, ５, +1, 1_0, ...) on every route that takes "
                         f"one ({engine} engine)", area="bad input")
    kept = await a_stored_message(api)
    problems = []
    for route in INTEGER_PARAMETERS:
        problems += await integer_parameter_problems(api, route, NOT_ASCII_DIGITS)
    tried = len(INTEGER_PARAMETERS) * len(NOT_ASCII_DIGITS)
    errors = server_errors()
    still_there = (await api.get(f"/api/messages/{kept}")).code == 200
    reliability.figure(f"{tried} requests over {len(INTEGER_PARAMETERS)} integer parameters: "
                       f"{tried - len(problems)} answered 422 naming the parameter (404 for an "
                       f"id), {len(errors)} logged errors; the stored message "
                       f"{'kept' if still_there else 'LOST'}")
    assert problems == []
    assert errors == [] and still_there


# --- JSON numbers that JSON cannot carry back ---

NOT_FINITE = ["1e999999", "-1e999", "1e309", "1.7976931348623159e308", "1" + "0" * 400 + ".0",
              "1" + "0" * 300 + "e10", "NaN", "Infinity", "-Infinity"]

# every route with a JSON body, the body with {} where the number goes
JSON_BODIES = {
    "echo": ("/api/echo", "{}"),
    "echo-nested": ("/api/echo", '{{"a": [1, {{"b": {}}}]}}'),
    "hello": ("/api/hello", '{{"name": {}}}'),
    "messages": ("/api/messages", '{{"name": "N", "text": {}}}'),
    "compute": ("/api/compute", '{{"n": {}}}'),
    "fetch": ("/api/fetch", '{{"urls": [{}]}}'),
}


async def not_finite_problems(api, route, values):
    """Post each non-finite number in one route's body; what was not a 400 "malformed JSON"."""
    path, template = JSON_BODIES[route]
    problems = []
    for value in values:
        response = await api.post(path, template.format(value).encode(),
                                  headers={"Content-Type": "application/json"})
        error = json_of(response).get("error", {}) if response.body else {}
        if response.code != 400 or not error.get("message", "").startswith("malformed JSON"):
            problems.append(f"POST {path} with {value[:30]}: {response.code} {response.body[:200]!r}")
    return problems


@pytest.mark.parametrize("route", JSON_BODIES)
async def test_numbers_json_cannot_carry_are_400(api, server_errors, route):
    count = json_of(await api.get("/api/messages"))["count"]
    assert await not_finite_problems(api, route, NOT_FINITE) == []
    assert json_of(await api.get("/api/messages"))["count"] == count  # nothing stored
    assert server_errors() == []


async def test_finite_numbers_and_strings_that_look_like_them_still_work(api):
    big = await api.post("/api/echo", b"[1e308, -1e-999, 1.5E+3]",
                         headers={"Content-Type": "application/json"})
    assert big.code == 200 and json.loads(big.body) == [1e308, -0.0, 1500.0]
    named = await api.post("/api/hello", {"name": "NaN Infinity 1e999"})
    assert json_of(named) == {"message": "Hello, NaN Infinity 1e999"}
    # 1e2 is the integer 100 (JSON Schema's "integer" is a number with no fraction); 1.5e0 is not
    assert (await api.post("/api/compute", b'{"n": 1e2}',
                           headers={"Content-Type": "application/json"})).code == 200
    assert (await api.post("/api/compute", b'{"n": 1.5e0}',
                           headers={"Content-Type": "application/json"})).code == 422


async def test_overflowing_json_numbers_battery(api, server_errors, engine, reliability):
    reliability.describe(f"JSON numbers that overflow a float (1e999999, 400 digits) and NaN / "
                         f"Infinity literals in the body of every JSON route ({engine} engine)",
                         area="bad input")
    problems = []
    for route in JSON_BODIES:
        problems += await not_finite_problems(api, route, NOT_FINITE)
    tried = len(JSON_BODIES) * len(NOT_FINITE)
    errors = server_errors()
    reliability.figure(f"{tried} bodies over {len({p for p, _ in JSON_BODIES.values()})} routes: "
                       f"{tried - len(problems)} answered 400 malformed JSON, 0 answered invalid "
                       f"JSON, {len(errors)} logged errors")
    assert problems == [] and errors == []


# --- WebSocket messages ---

def websocket_routes(http_server):
    """The pattern of every route whose handler is a WebSocket."""
    return [route.pattern for route in routes_of(http_server.app.default_router)
            if issubclass(route.handler, tornado.websocket.WebSocketHandler)]


def test_every_websocket_handler_has_the_message_limit(http_server):
    routes = list(routes_of(http_server.app.default_router))
    sockets = [r for r in routes if issubclass(r.handler, tornado.websocket.WebSocketHandler)]
    assert [r.pattern for r in sockets] == ["/guestbook/live"]
    assert all(issubclass(r.handler, WebSocketHandler) for r in sockets), sockets


async def oversized_message_problems(base_url, path, limit):
    """Over one WebSocket: a message of the limit works, one byte more closes with 1009."""
    url = base_url.replace("http", "ws", 1) + path
    problems = []
    for size, text in ((limit, False), (limit + 1, False), (limit + 1, True), (10 * limit, False),
                       (1024 * 1024, False)):
        conn = await tornado.websocket.websocket_connect(url)
        message = "x" * size if text else b"x" * size
        await conn.write_message(message, binary=not text)
        if size <= limit:
            # ignored, and the connection stays open
            if await read_or_time_out(conn) != "quiet" or conn.close_code is not None:
                problems.append(f"{path}: a message of {size} bytes closed it ({conn.close_code})")
            conn.close()
            continue
        closed = await asyncio.wait_for(conn.read_message(), 5)
        if closed is not None or conn.close_code != 1009:
            problems.append(f"{path}: {size} bytes: got {closed!r}, close code {conn.close_code}")
        conn.close()
    return problems


async def read_or_time_out(conn):
    """The next message, or None when nothing comes in half a second (the socket is quiet)."""
    try:
        return await asyncio.wait_for(conn.read_message(), 0.5)
    except TimeoutError:
        return "quiet"


@pytest.mark.server_settings(live_max_message_size=1024)
async def test_a_message_over_the_limit_closes_with_1009(api, base_url, http_server, server_errors):
    for path in websocket_routes(http_server):
        url = base_url.replace("http", "ws", 1) + path
        small = await tornado.websocket.websocket_connect(url)
        await small.write_message("x" * 1024)
        # a message within the limit is ignored and the connection still gets live events
        assert await read_or_time_out(small) == "quiet"
        created = json_of(await api.post("/api/messages", {"name": "WS", "text": "after"}))
        event = json.loads(await asyncio.wait_for(small.read_message(), 5))
        assert event == {"type": "message", "message": created}
        big = await tornado.websocket.websocket_connect(url)
        await big.write_message("x" * 1025)
        assert await asyncio.wait_for(big.read_message(), 5) is None
        assert big.close_code == 1009
        small.close()
        big.close()
    assert server_errors() == []


async def test_oversized_websocket_messages_battery(base_url, http_server, server_errors, engine,
                                                    reliability):
    limit = http_server.settings.live_max_message_size
    reliability.describe(f"WebSocket messages at, just over and far over --live-max-message-size "
                         f"({limit} B, the default) on every WebSocket route ({engine} engine)",
                         area="bad input")
    paths = websocket_routes(http_server)
    problems = []
    for path in paths:
        problems += await oversized_message_problems(base_url, path, limit)
    tried = 5 * len(paths)
    errors = server_errors()
    reliability.figure(f"{tried} messages on {len(paths)} WebSocket route(s): those over {limit} B "
                       f"(up to 1 MiB) closed with 1009, the one at the limit kept open; "
                       f"{len(problems)} wrong, {len(errors)} logged errors")
    assert problems == [] and errors == []


# --- upstream responses of /api/fetch that cannot be framed ---

BAD_FRAMING = {
    "cl-superscript": b"Content-Length: \xb2\r\n",
    "cl-fullwidth": "Content-Length: ５\r\n".encode(),
    "cl-plus": b"Content-Length: +5\r\n",
    "cl-negative": b"Content-Length: -5\r\n",
    "cl-hex": b"Content-Length: 0x5\r\n",
    "cl-underscore": b"Content-Length: 0_5\r\n",
    "cl-empty": b"Content-Length: \r\n",
    "cl-unequal-list": b"Content-Length: 5, 6\r\n",
    "cl-two-unequal": b"Content-Length: 5\r\nContent-Length: 6\r\n",
    "cl-and-te": b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
    "te-gzip": b"Transfer-Encoding: gzip\r\n",
    "te-chunked-gzip": b"Transfer-Encoding: chunked, gzip\r\n",
}


@pytest.fixture
def raw_upstream(io_loop):
    """http://127.0.0.1:PORT of an upstream that answers /NAME with BAD_FRAMING[NAME] in its head."""
    async def answer(reader, writer):
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            name = head.split(b" ", 2)[1].lstrip(b"/").decode()
            framing = BAD_FRAMING.get(name, b"Content-Length: 5\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n" + framing
                         + b"\r\nhello")
            await writer.drain()
            await reader.read()  # until the client closes
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = io_loop.run_sync(lambda: asyncio.start_server(answer, "127.0.0.1", 0))
    yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    server.close()
    io_loop.run_sync(lambda: asyncio.sleep(0.05))


INVALID = "invalid response from the upstream"


async def bad_framing_problems(api, upstream, names):
    """Fetch each badly framed upstream alone (a 502) and beside a good one (a 200)."""
    problems = []
    for name in names:
        alone = await api.post("/api/fetch", {"urls": [f"{upstream}/{name}"]})
        message = json_of(alone).get("error", {}).get("message", "")
        if alone.code != 502 or INVALID not in message:
            problems.append(f"{name} alone: {alone.code} {message!r}")
        mixed = await api.post("/api/fetch", {"urls": [f"{upstream}/{name}", f"{upstream}/good"]})
        if mixed.code != 200:
            problems.append(f"{name} beside a good URL: {mixed.code} {mixed.body[:200]!r}")
            continue
        bad, good = json_of(mixed)["results"]
        if bad["ok"] or not (bad["error"] or "").startswith(INVALID) or not good["ok"]:
            problems.append(f"{name} beside a good URL: {bad} / {good}")
    return problems


@pytest.mark.parametrize("name", BAD_FRAMING)
async def test_an_upstream_response_that_cannot_be_framed_is_reported(api, raw_upstream,
                                                                      server_errors, name):
    assert await bad_framing_problems(api, raw_upstream, [name]) == []
    assert server_errors() == []


async def test_the_superscript_content_length_names_the_problem(api, raw_upstream):
    response = await api.post("/api/fetch", {"urls": [raw_upstream + "/cl-superscript"]})
    message = json_of(response)["error"]["message"]
    assert f"{INVALID}: Only integer Content-Length is allowed in a response: '²'" in message


async def test_invalid_upstream_framing_battery(api, raw_upstream, server_errors, engine,
                                                reliability):
    reliability.describe(f"/api/fetch of loopback upstreams whose response head cannot frame a "
                         f"body (Content-Length ², ５, +5, lists; Content-Length with "
                         f"Transfer-Encoding; gzip transfer coding), alone and beside a good URL "
                         f"({engine} engine)", area="bad input")
    problems = await bad_framing_problems(api, raw_upstream, BAD_FRAMING)
    errors = server_errors()
    tried = 2 * len(BAD_FRAMING)
    reliability.figure(f"{tried} fetches of {len(BAD_FRAMING)} badly framed responses: each "
                       f"reported as an invalid response from the upstream (502 alone, 200 beside "
                       f"a good URL); {len(problems)} wrong, {len(errors)} logged errors")
    assert problems == [] and errors == []
