"""aiohttp + asyncpg serving the TechEmpower test types to the rules of ``bench/techempower.py``
(the same queries, clamps, cache and fortunes page, as a Jinja2 template), on uvloop as TFB's
aiohttp entry runs; no access log.
"""
from __future__ import annotations

import argparse
import asyncio

import jinja2
import uvloop
from aiohttp import web

from bench import techempower as tfb

from . import announce

POOL = web.AppKey("pool", object)
CACHE = web.AppKey("cache", dict)
TEMPLATE = jinja2.Environment(autoescape=True).from_string(tfb.FORTUNES_JINJA)


def json_response(value) -> web.Response:
    return web.Response(body=tfb.to_json(value).encode(),
                        content_type=tfb.JSON_TYPE)


async def json_route(request: web.Request) -> web.Response:
    return json_response({"message": tfb.HELLO})


async def plaintext(request: web.Request) -> web.Response:
    return web.Response(body=tfb.HELLO.encode(), content_type=tfb.TEXT_TYPE)


async def db(request: web.Request) -> web.Response:
    return json_response(tfb.world(await request.app[POOL].fetchrow(tfb.SELECT_WORLD,
                                                                      tfb.random_id())))


async def queries(request: web.Request) -> web.Response:
    async with request.app[POOL].acquire() as conn:
        rows = await tfb.read_worlds(conn, tfb.clamp(request.query.get("queries")))
    return json_response([tfb.world(r) for r in rows])


async def updates(request: web.Request) -> web.Response:
    async with request.app[POOL].acquire() as conn:
        return json_response(await tfb.update_worlds(conn, tfb.clamp(request.query.get("queries"))))


async def cached_queries(request: web.Request) -> web.Response:
    cache = request.app[CACHE]
    return json_response([cache[tfb.random_id()]
                          for _ in range(tfb.clamp(request.query.get("count")))])


async def fortunes(request: web.Request) -> web.Response:
    rows = tfb.sorted_fortunes(await request.app[POOL].fetch(tfb.SELECT_FORTUNES))
    return web.Response(text=TEMPLATE.render(fortunes=rows), content_type="text/html")


async def database(app: web.Application):
    """The pool for the application's lifetime (aiohttp's cleanup context)."""
    app[POOL] = pool = await tfb.open_pool()
    app[CACHE] = await tfb.load_cache(pool)
    yield
    await pool.close()


async def main(port: int) -> None:
    app = web.Application()
    app.cleanup_ctx.append(database)
    for path, handler in (("/json", json_route), ("/plaintext", plaintext), ("/db", db),
                          ("/queries", queries), ("/fortunes", fortunes), ("/updates", updates),
                          ("/cached-queries", cached_queries)):
        app.router.add_get(path, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=8192)
    await site.start()
    announce(site._server.sockets[0].getsockname()[1])  # port 0: the kernel's choice
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="python -m bench.baselines.tfb_aiohttp")
    p.add_argument("--port", type=int, default=0)
    uvloop.run(main(p.parse_args().port))
