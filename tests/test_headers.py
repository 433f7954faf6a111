"""server.compat.make_headers: the HTTPHeaders the fast engine and BaseHandler build answer as
Tornado's do (also run on the lowest Tornado setup.cfg allows: tests/test_compat.py)."""
import copy

import pytest
import tornado
from tornado import httputil

from server.compat import FAST_HEADERS, Headers, make_headers

LINES = {"Content-Type": ["text/plain"], "Set-Cookie": ["a=1", "b=2"], "X-Request-Id": ["abc"]}


def both():
    """The same header lines in Tornado's HTTPHeaders and in make_headers' result."""
    tornado_headers = httputil.HTTPHeaders()
    for name, values in LINES.items():
        for value in values:
            tornado_headers.add(name, value)
    return tornado_headers, make_headers({name: list(values) for name, values in LINES.items()})


def test_the_layout_of_this_tornado_is_the_one_built_directly():
    # the layout built directly is 6.6's; 6.5 keeps a _last_key too and takes the public path
    assert FAST_HEADERS == (tornado.version_info >= (6, 6))
    assert (type(make_headers({})) is Headers) == FAST_HEADERS


@pytest.mark.parametrize("name", ["content-type", "Set-Cookie", "X-REQUEST-ID", "If-None-Match",
                                  "Content-Length", ""])
def test_get_answers_like_tornados_for_present_and_absent_names(name):
    tornado_headers, ours = both()
    assert ours.get(name) == tornado_headers.get(name)
    assert ours.get(name, "fallback") == tornado_headers.get(name, "fallback")
    assert ours.get(name) == ours.get(name)  # the cached combined value is the same


def test_get_sees_every_change_made_through_the_mapping():
    tornado_headers, ours = both()
    for headers in (tornado_headers, ours):
        assert headers.get("Set-Cookie") == "a=1,b=2"  # cached now
        headers.add("Set-Cookie", "c=3")
        headers["Content-Type"] = "application/json"
        del headers["X-Request-Id"]
        headers["Etag"] = '"x"'
    for name in ("Set-Cookie", "Content-Type", "X-Request-Id", "Etag"):
        assert ours.get(name) == tornado_headers.get(name)
    assert list(ours.get_all()) == list(tornado_headers.get_all())
    assert dict(copy.copy(ours)) == dict(tornado_headers)
