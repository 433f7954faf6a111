"""Stock Tornado serving the TechEmpower application (``bench/techempower.py``): the same
``make_app`` that ``python -m server --app`` serves, on a plain ``tornado.httpserver.HTTPServer``
(what ``app.listen()`` builds) and asyncio's default event loop, nothing of the project's server.
"""
from __future__ import annotations

import argparse
import asyncio

import tornado.httpserver
from tornado.netutil import bind_sockets

from bench.techempower import make_app

from . import announce


async def main(port: int) -> None:
    """Serve until killed; the pool is closed if the loop is cancelled."""
    async with make_app() as app:
        sockets = bind_sockets(port, "127.0.0.1", backlog=8192)
        tornado.httpserver.HTTPServer(app).add_sockets(sockets)
        announce(sockets[0].getsockname()[1])
        await asyncio.Event().wait()


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="python -m bench.baselines.tfb_tornado")
    p.add_argument("--port", type=int, default=0)
    asyncio.run(main(p.parse_args().port))
