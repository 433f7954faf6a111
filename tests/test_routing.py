"""The indexed route lookup picks exactly the handler Tornado's own rule list picks."""
import pytest
import tornado.web
from tornado import httputil
from tornado.routing import PathMatches, Rule

from server.routing import Application, RouteIndex, literal_first_segment

PATHS = [
    "/", "/hello", "/hello/Ada", "/hello/", "/hello/a/b", "/api/hello", "/api/hello/x", "/api/hello/",
    "/api/echo", "/api/slow", "/api/messages", "/api/messages/12", "/api/stats", "/api/stats/stream",
    "/api/openapi.json", "/api/docs", "/api/nope", "/api", "/apix/hello", "/guestbook", "/guestbook/live",
    "/metrics", "/healthz", "/readyz", "/dashboard", "/static/css/site.css", "/static/", "/favicon.ico",
    "/robots.txt", "/files/", "/files/a/b.txt", "/%61pi/hello/x", "//api/hello", "*", "http://x/api/hello",
    "", "/nothing/here", "/HELLO", "/api/hello/x/y",
]


class _Conn(httputil.HTTPConnection):
    context = None

    def set_close_callback(self, callback):
        pass


def _request(path):
    line = httputil.RequestStartLine("GET", path, "HTTP/1.1")
    return httputil.HTTPServerRequest(start_line=line, headers=httputil.HTTPHeaders({"Host": "h"}),
                                      connection=_Conn())


def _picked(delegate):
    return (delegate.handler_class, delegate.handler_kwargs, delegate.path_args, delegate.path_kwargs)


@pytest.mark.parametrize("engine", ["tornado"])  # routing does not depend on the engine
def test_index_picks_what_tornado_picks_for_every_route(http_server):
    app = http_server.http.request_callback
    assert isinstance(app, Application)
    rules = app.wildcard_router.rules
    assert len(rules) > 15
    for path in PATHS:
        ours = app.find_handler(_request(path))
        theirs = tornado.web.Application.find_handler(app, _request(path))
        assert _picked(ours) == _picked(theirs), path


def test_literal_first_segment():
    def seg(pattern):
        return literal_first_segment(Rule(PathMatches(pattern), object))
    assert seg(r"/api/hello/([^/]+)") == "api"
    assert seg(r"/") == ""
    assert seg(r"/guestbook") == "guestbook"
    assert seg(r"/(favicon\.ico)") is None
    assert seg(r"/apiv[0-9]/x") is None
    assert seg(r"/a.b/c") is None  # "." is a regex wildcard here
    assert seg(r"/files/(.*)") == "files"


def test_rules_added_later_and_host_handlers_are_honoured():
    class A(tornado.web.RequestHandler):
        pass

    class B(tornado.web.RequestHandler):
        pass

    app = Application([(r"/a", A)])
    app.wildcard_router.add_rules([(r"/b", B)])
    assert app.find_handler(_request("/b")).handler_class is B
    app.add_handlers(r"other\.example", [(r"/a", B)])
    assert app.find_handler(_request("/a")).handler_class is A  # Host "h" is not other.example


def test_index_groups_keep_rule_order():
    patterns = (r"/api/x", r"/(.*)", r"/api/(.*)", r"/other")
    rules = [Rule(PathMatches(p), tornado.web.RequestHandler, name=p) for p in patterns]
    index = RouteIndex(rules)
    assert [r.name for r in index.candidates("/api/x")] == [r"/api/x", r"/(.*)", r"/api/(.*)"]
    assert [r.name for r in index.candidates("/zzz")] == [r"/(.*)"]
