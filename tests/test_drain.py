"""Draining with an application that knows nothing of it, on both engines.

This project's handlers say ``Connection: close`` themselves while the server drains; any other
application (``--app``, TechEmpower's) relies on the engine. The engine must then close every
keep-alive connection after its current response, or its clients keep it busy until the
shutdown timeout cuts their requests off, and the application's database pool closes under
queries still running (asyncpg: "got result for unknown protocol state 3").
"""
import asyncio
import http.client
import signal
import threading

import pytest
import tornado.web

from bench import techempower
from helpers import RawClient, get
from server.config import Settings
from server.lifecycle import bind, bound_port, make_http_server


class Hello(tornado.web.RequestHandler):
    """A plain handler: nothing of its own about draining or Connection headers."""

    def get(self):
        """Answer at once."""
        self.write("hello")


class Waiting(tornado.web.RequestHandler):
    """Answers once the test lets it (a request in flight when the drain begins)."""

    def initialize(self, release):
        """The event that lets it answer."""
        self.release = release

    async def get(self):
        """Wait for the event, then answer."""
        await self.release.wait()
        self.write("done")


async def serve(engine, release):
    app = tornado.web.Application([(r"/", Hello), (r"/wait", Waiting, {"release": release})])
    sockets = bind("127.0.0.1", 0, 128)
    server = make_http_server(app, Settings(engine=engine))
    server.add_sockets(sockets)
    return server, bound_port(sockets)


async def start_draining(server):
    """The server's drain, begun; a long idle grace: only Connection: close ends a connection."""
    drain = asyncio.ensure_future(server.drain(timeout=20, idle_grace=20))
    while not server.draining:
        await asyncio.sleep(0)
    return drain


async def assert_answered_then_closed(client, drain, body):
    """The client gets its answer saying Connection: close, then the close; the drain is clean."""
    response = await client.response()
    assert (response.status, response.body) == (200, body)
    assert response.header("connection") == "close"
    assert await client.closed()
    client.close()
    assert await drain is True


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize("engine", ["fast", "tornado"])
async def test_a_request_on_a_keep_alive_connection_during_drain_is_answered_and_closed(engine):
    server, port = await serve(engine, asyncio.Event())
    client = await RawClient.connect(port)
    client.send(get("/"))
    first = await client.response()
    assert first.status == 200 and first.header("connection") is None  # kept alive
    drain = await start_draining(server)
    client.send(get("/"))
    await assert_answered_then_closed(client, drain, b"hello")


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize("engine", ["fast", "tornado"])
async def test_a_request_in_flight_when_the_drain_begins_closes_its_connection(engine):
    release = asyncio.Event()
    server, port = await serve(engine, release)
    client = await RawClient.connect(port)
    client.send(get("/wait"))
    while not server.busy:
        await asyncio.sleep(0.01)
    drain = await start_draining(server)
    release.set()
    await assert_answered_then_closed(client, drain, b"done")


# --- under the launcher, with PostgreSQL: TechEmpower's application (an asyncpg pool) ---

CLIENTS = 24


def keep_asking(port, path, answers, problems, started):
    """One keep-alive client sending requests until the server stops accepting connections."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    count = 0
    while True:
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
        except ConnectionRefusedError:
            break  # the server has stopped listening
        except (http.client.HTTPException, OSError) as exc:
            problems.append(repr(exc))  # the server closed a connection with a request on it
            conn.close()
            continue
        answers.append(response.status)
        count += 1
        if count == 5:
            started.release()
    conn.close()


@pytest.mark.parametrize("engine", ["fast", "tornado"])
def test_sigterm_under_load_drains_a_foreign_app_before_its_pool_closes(live_server_factory,
                                                                       postgres_url, engine):
    server = live_server_factory(
        "--app", "bench.techempower:make_app", "--access-log", "off", "--engine", engine,
        "--shutdown-timeout", "15",
        env={techempower.DB_ENV: postgres_url, techempower.POOL_ENV: "4"})
    answers, problems = [], []
    started = threading.Semaphore(0)
    paths = ["/queries?queries=20", "/updates?queries=10", "/db", "/fortunes"]
    clients = [threading.Thread(target=keep_asking,
                                args=(server.port, paths[i % len(paths)], answers, problems,
                                      started))
               for i in range(CLIENTS)]
    for client in clients:
        client.start()
    for _ in clients:
        assert started.acquire(timeout=60)  # every client is in the middle of its requests
    server.signal(signal.SIGTERM)
    code = server.wait()
    for client in clients:
        client.join(30)
    assert "stopped cleanly" in server.stderr, server.stderr[-3000:]
    assert code == 0
    assert "Traceback" not in server.stderr and "InternalClientError" not in server.stderr
    assert set(answers) == {200}
    assert problems == []
