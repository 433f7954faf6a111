"""A bare hello-world ``tornado.web.Application`` on the project's HTTP server of either engine.

What the engine costs without the project's handlers, metrics and access log:
``server.lifecycle.make_http_server(app, Settings(engine=...))`` serves
``Application([("/", Hello)])`` on a socket bound by ``server.lifecycle.bind``, on the event loop
the launcher picks (``run_loop``: uvloop when installed) and with its garbage-collector tuning
(``tune_garbage_collector``: gc.freeze() after start-up, --gc-threshold), as ``python -m server``.
"""
from __future__ import annotations

import argparse
import asyncio
import os

import tornado.web

from server.config import Settings
from server.lifecycle import (
    bind,
    bound_port,
    make_http_server,
    run_loop,
    tune_garbage_collector,
)

from . import HELLO


class HelloHandler(tornado.web.RequestHandler):
    """GET / and HEAD /: the hello-world text."""

    def get(self) -> None:
        self.set_header("Content-Type", "text/plain")
        self.write(HELLO)

    head = get


async def main(settings: Settings) -> None:
    """Serve until killed."""
    sockets = bind(settings.address, settings.port, settings.backlog)
    server = make_http_server(tornado.web.Application([(r"/", HelloHandler)]), settings)
    server.add_sockets(sockets)
    tune_garbage_collector(settings)  # what python -m server does once it serves: freeze, thresholds
    print(f"Serving on http://127.0.0.1:{bound_port(sockets)}/ (pid {os.getpid()})", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="python -m bench.baselines.project_hello")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--engine", choices=("tornado", "fast"), default="tornado")
    args = p.parse_args()
    settings = Settings(port=args.port, engine=args.engine, backlog=8192)
    run_loop(settings, main(settings))  # the launcher's loop choice: uvloop when installed
