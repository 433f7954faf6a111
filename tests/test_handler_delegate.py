"""server.compat.HandlerDelegate (used by server.routing): handlers start as asyncio Tasks
without Tornado's bookkeeping.

Served over loopback by both engines: a handler runs inside a Task (asyncio.timeout works, as
redis-py needs), streamed request bodies still reach the handler, an error in a handler is a 500
and is logged, debug mode's template reloading path still serves, and no task is held on to
once its request is done.
"""
import asyncio
import logging

import pytest
import tornado.web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from server import compat, routing
from server.config import Settings
from server.lifecycle import bind, bound_port, make_http_server

pytestmark = [pytest.mark.gen_test(timeout=60), pytest.mark.parametrize("engine", ["fast", "tornado"])]


class InTask(tornado.web.RequestHandler):
    async def get(self) -> None:
        task = asyncio.current_task()
        async with asyncio.timeout(5):  # fails outside a task ("Timeout should be used inside a task")
            await asyncio.sleep(0.001)
        self.write({"in_task": task is not None and not task.done()})


@tornado.web.stream_request_body
class Streamed(tornado.web.RequestHandler):
    def prepare(self) -> None:
        self.size = 0
        self.pieces = 0

    def data_received(self, chunk: bytes) -> None:
        self.size += len(chunk)
        self.pieces += 1

    def put(self) -> None:
        self.write({"size": self.size})


class Broken(tornado.web.RequestHandler):
    def get(self) -> None:
        raise RuntimeError("handler bug for the test")


ROUTES = [(r"/task", InTask), (r"/streamed", Streamed), (r"/broken", Broken)]


async def serve(engine: str, **app_settings):
    app = routing.Application(ROUTES, **app_settings)
    sockets = bind("127.0.0.1", 0, 128)
    server = make_http_server(app, Settings(engine=engine))
    server.add_sockets(sockets)
    return server, f"http://127.0.0.1:{bound_port(sockets)}"


async def test_handlers_run_in_tasks_and_none_is_kept_after(engine):
    server, base = await serve(engine)
    client = AsyncHTTPClient()
    before = set(compat._RUNNING)  # other tests' handlers may still be running
    try:
        answers = await asyncio.gather(*(client.fetch(base + "/task") for _ in range(50)))
        assert {a.body for a in answers} == {b'{"in_task": true}'}
        await asyncio.sleep(0.05)
        assert not compat._RUNNING - before  # every handler's task let go once done
    finally:
        server.stop()
        await server.close_all_connections()


async def test_streamed_body_reaches_the_handler(engine):
    server, base = await serve(engine)
    body = b"x" * 300_000
    try:
        answer = await AsyncHTTPClient().fetch(base + "/streamed", method="PUT", body=body)
        assert answer.body == b'{"size": 300000}'
    finally:
        server.stop()
        await server.close_all_connections()


async def test_a_failing_handler_is_a_logged_500(engine, caplog):
    server, base = await serve(engine)
    try:
        with caplog.at_level(logging.ERROR, logger="tornado.application"):
            with pytest.raises(HTTPClientError) as failed:
                await AsyncHTTPClient().fetch(base + "/broken")
        assert failed.value.code == 500
        assert "handler bug for the test" in caplog.text
        ok = await AsyncHTTPClient().fetch(base + "/task")  # and the server goes on
        assert ok.code == 200
    finally:
        server.stop()
        await server.close_all_connections()


async def test_debug_mode_takes_tornados_reloading_path(engine):
    server, base = await serve(engine, compiled_template_cache=False, static_hash_cache=False)
    try:
        answer = await AsyncHTTPClient().fetch(base + "/task")
        assert answer.body == b'{"in_task": true}'
    finally:
        server.stop()
        await server.close_all_connections()


class OwnDelegate(tornado.web.Application):
    """An application that chose its delegate itself: the fast engine leaves that choice alone."""

    chosen = 0

    def get_handler_delegate(self, *args, **kwargs):
        OwnDelegate.chosen += 1
        return super().get_handler_delegate(*args, **kwargs)


async def serve_plain(app: tornado.web.Application, engine: str):
    sockets = bind("127.0.0.1", 0, 128)
    server = make_http_server(app, Settings(engine=engine))
    server.add_sockets(sockets)
    return server, f"http://127.0.0.1:{bound_port(sockets)}"


async def test_a_plain_tornado_application_starts_its_handlers_in_tasks_too(engine):
    # compat.start_handlers_directly: a tornado.web.Application (not routing.Application) on
    # the fast engine (and Tornado's own delegate on the tornado engine); its handlers run in Tasks
    # that are let go once done
    server, base = await serve_plain(tornado.web.Application(ROUTES), engine)
    before = set(compat._RUNNING)
    try:
        answers = await asyncio.gather(*(AsyncHTTPClient().fetch(base + "/task") for _ in range(20)))
        assert {a.body for a in answers} == {b'{"in_task": true}'}
        with pytest.raises(HTTPClientError) as failed:
            await AsyncHTTPClient().fetch(base + "/broken")
        assert failed.value.code == 500
        await asyncio.sleep(0.05)
        assert not compat._RUNNING - before
    finally:
        server.stop()
        await server.close_all_connections()


async def test_an_application_with_its_own_delegate_keeps_it(engine):
    server, base = await serve_plain(OwnDelegate(ROUTES), engine)
    OwnDelegate.chosen = 0
    try:
        answer = await AsyncHTTPClient().fetch(base + "/task")
        assert answer.body == b'{"in_task": true}'
        assert OwnDelegate.chosen == 1
    finally:
        server.stop()
        await server.close_all_connections()
