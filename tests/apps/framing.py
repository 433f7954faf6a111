"""Answers every request with what the server framed: its method, target and body.

``tests/test_smuggling.py`` serves it with ``--app framing:make_app`` and compares, request by
request, what each engine (and nginx in front of one) delivered to the application with what h11
parses from the same bytes. Every answer is a 200 with ``X-Framing: app`` (a refusal by the server
itself has no such header) and ``{"method": ..., "target": ..., "body": <latin-1 text>}``.
"""
import json

import tornado.web


class FramingHandler(tornado.web.RequestHandler):
    SUPPORTED_METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")

    def answer(self):
        self.set_header("X-Framing", "app")
        self.set_header("Content-Type", "application/json")
        self.write(json.dumps({"method": self.request.method, "target": self.request.uri,
                               "body": self.request.body.decode("latin-1")}))

    get = post = put = delete = patch = options = answer


def make_app():
    return tornado.web.Application([(r"/.*", FramingHandler)])
