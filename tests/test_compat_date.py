"""compat.cache_date_formatting: the Date header formatted once a second gives Tornado's string.

The fast engine installs it; every response's Date is the current time in RFC 7231's format,
and the replaced httputil.format_timestamp returns what Tornado's own returns for every kind of
argument it accepts, at second boundaries too.
"""
import datetime
import email.utils
import time

import pytest
import tornado.web
from tornado import httputil
from tornado.httpclient import AsyncHTTPClient

from server import compat
from server.config import Settings
from server.lifecycle import bind, bound_port, make_http_server


class Hello(tornado.web.RequestHandler):
    def get(self) -> None:
        self.write("hello")


@pytest.mark.gen_test(timeout=30)
async def test_every_response_has_the_current_date():
    sockets = bind("127.0.0.1", 0, 128)
    server = make_http_server(tornado.web.Application([(r"/", Hello)]), Settings(engine="fast"))
    server.add_sockets(sockets)
    try:
        for _ in range(3):
            before = int(time.time())
            answer = await AsyncHTTPClient().fetch(f"http://127.0.0.1:{bound_port(sockets)}/")
            after = int(time.time())
            date = email.utils.parsedate_to_datetime(answer.headers["Date"]).timestamp()
            assert before <= date <= after
            assert answer.headers["Date"] == compat._format_timestamp(date)
    finally:
        server.stop()
        await server.close_all_connections()


def test_the_cached_formatting_returns_tornados_string_for_every_argument():
    compat.cache_date_formatting()
    compat.cache_date_formatting()  # idempotent: wraps Tornado's function once
    assert httputil.format_timestamp is not compat._format_timestamp
    now = time.time()
    values = [now, now, int(now), 0.0, 1.5, 86399.9999995, 86399.9999999, 86400.0, 86399.0,
              1_700_000_000.999999, 1_700_000_000.9999996, 1_700_000_001.0,
              datetime.datetime(2020, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
              time.gmtime(now), (2020, 1, 2, 3, 4, 5, 0, 0, 0)]
    for value in values + values[::-1]:
        assert httputil.format_timestamp(value) == compat._format_timestamp(value), value
    with pytest.raises(TypeError):
        httputil.format_timestamp("yesterday")
