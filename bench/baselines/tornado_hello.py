"""Stock Tornado: one ``tornado.httpserver.HTTPServer`` + ``Application``, nothing of the project.

``/`` answers ``Hello, world`` (text/plain); with ``--files DIR`` Tornado's own
``StaticFileHandler`` serves DIR at ``/files/``.
"""
from __future__ import annotations

import argparse
import asyncio
import os

import tornado.httpserver
import tornado.web
from tornado.netutil import bind_sockets

from . import HELLO


class HelloHandler(tornado.web.RequestHandler):
    """GET / and HEAD /: the hello-world text."""

    def get(self) -> None:
        self.set_header("Content-Type", "text/plain")
        self.write(HELLO)

    head = get


async def main(port: int, files: str | None) -> None:
    """Serve until killed."""
    routes: list = [(r"/", HelloHandler)]
    if files:
        routes.append((r"/files/(.*)", tornado.web.StaticFileHandler, {"path": files}))
    sockets = bind_sockets(port, "127.0.0.1", backlog=8192)
    server = tornado.httpserver.HTTPServer(tornado.web.Application(routes))
    server.add_sockets(sockets)
    print(f"Serving on http://127.0.0.1:{sockets[0].getsockname()[1]}/ (pid {os.getpid()})",
          flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="python -m bench.baselines.tornado_hello")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--files", help="serve this directory at /files/ with StaticFileHandler")
    args = p.parse_args()
    asyncio.run(main(args.port, args.files))
