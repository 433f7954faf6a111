"""Streamed uploads, as Tornado's demos/file_upload/file_receiver.py writes them, and a slow page.

``PUT /upload/<name>`` streams the body to a file in ``UPLOAD_DIR`` (a temporary directory by
default) without holding it in memory and answers with its size and SHA-256; ``GET /slow?s=``
answers after s seconds. The factories record each call in ``APP_CALLS`` (a file) when set.
"""
import asyncio
import contextlib
import hashlib
import os
import tempfile

import tornado.web

MAX_UPLOAD = 64 * 1024 * 1024  # the handler raises the server's body limit to this


@tornado.web.stream_request_body
class UploadHandler(tornado.web.RequestHandler):
    def initialize(self, directory):
        self.directory = directory

    def prepare(self):
        self.request.connection.set_max_body_size(MAX_UPLOAD)
        self.digest = hashlib.sha256()
        self.size = 0
        self.part = tempfile.NamedTemporaryFile(dir=self.directory, delete=False)

    def data_received(self, chunk):
        self.part.write(chunk)
        self.digest.update(chunk)
        self.size += len(chunk)

    def put(self, name):
        self.part.close()
        os.replace(self.part.name, os.path.join(self.directory, os.path.basename(name)))
        self.write({"name": name, "bytes": self.size, "sha256": self.digest.hexdigest()})

    def on_connection_close(self):
        if hasattr(self, "part"):
            self.part.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.part.name)


class FormHandler(tornado.web.RequestHandler):
    """A small buffered POST (the server's own body limit applies)."""

    def post(self):
        self.write({"bytes": len(self.request.body)})


class SlowHandler(tornado.web.RequestHandler):
    async def get(self):
        await asyncio.sleep(float(self.get_argument("s", "1")))
        self.write({"done": True, "pid": os.getpid()})


class PidHandler(tornado.web.RequestHandler):
    def get(self):
        self.write({"pid": os.getpid()})


def _record(what):
    calls = os.environ.get("APP_CALLS")
    if calls:
        with open(calls, "a") as f:
            f.write(f"{what} {os.getpid()}\n")


def make_app():
    _record("make_app")
    directory = os.environ.get("UPLOAD_DIR") or tempfile.mkdtemp(prefix="uploads-")
    return tornado.web.Application([
        (r"/upload/([^/]+)", UploadHandler, {"directory": directory}),
        (r"/form", FormHandler),
        (r"/slow", SlowHandler),
        (r"/pid", PidHandler),
    ])


async def make_app_async():
    await asyncio.sleep(0)
    return make_app()


@contextlib.asynccontextmanager
async def lifespan():
    """An application that owns a resource for exactly its lifetime (closed at shutdown)."""
    _record("open")
    try:
        yield make_app()
    finally:
        _record("close")


def failing_factory():
    raise RuntimeError("the database is not there")


NOT_AN_APP = {"routes": []}
