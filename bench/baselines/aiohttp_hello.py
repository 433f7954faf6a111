"""aiohttp: ``web.Application`` with one route, ``/`` → ``Hello, world`` (text/plain), no access log."""
from __future__ import annotations

import argparse
import asyncio
import os

from aiohttp import web

from . import HELLO


async def hello(request: web.Request) -> web.Response:
    """GET / (aiohttp answers HEAD from the GET route)."""
    return web.Response(body=HELLO, content_type="text/plain")


async def main(port: int) -> None:
    """Serve until killed."""
    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=8192)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # port 0: the kernel's choice
    print(f"Serving on http://127.0.0.1:{bound}/ (pid {os.getpid()})", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="python -m bench.baselines.aiohttp_hello")
    p.add_argument("--port", type=int, default=0)
    asyncio.run(main(p.parse_args().port))
