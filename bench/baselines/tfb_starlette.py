"""Starlette on uvicorn (httptools parser, uvloop) + asyncpg serving the TechEmpower test types
to the rules of ``bench/techempower.py`` (the same queries, clamps, cache and fortunes page, as a
Jinja2 template); the pool opened and closed by Starlette's lifespan; no access log.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket

import jinja2
import uvicorn
import uvloop
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route

from bench import techempower as tfb

from . import announce

TEMPLATE = jinja2.Environment(autoescape=True).from_string(tfb.FORTUNES_JINJA)


def json_response(value) -> Response:
    return Response(tfb.to_json(value), media_type=tfb.JSON_TYPE)


async def json_route(request: Request) -> Response:
    return json_response({"message": tfb.HELLO})


async def plaintext(request: Request) -> Response:
    return PlainTextResponse(tfb.HELLO)


async def db(request: Request) -> Response:
    pool = request.app.state.pool
    return json_response(tfb.world(await pool.fetchrow(tfb.SELECT_WORLD, tfb.random_id())))


async def queries(request: Request) -> Response:
    async with request.app.state.pool.acquire() as conn:
        rows = await tfb.read_worlds(conn, tfb.clamp(request.query_params.get("queries")))
    return json_response([tfb.world(r) for r in rows])


async def updates(request: Request) -> Response:
    async with request.app.state.pool.acquire() as conn:
        return json_response(await tfb.update_worlds(
            conn, tfb.clamp(request.query_params.get("queries"))))


async def cached_queries(request: Request) -> Response:
    cache = request.app.state.cache
    return json_response([cache[tfb.random_id()]
                          for _ in range(tfb.clamp(request.query_params.get("count")))])


async def fortunes(request: Request) -> Response:
    rows = tfb.sorted_fortunes(await request.app.state.pool.fetch(tfb.SELECT_FORTUNES))
    return HTMLResponse(TEMPLATE.render(fortunes=rows))


@contextlib.asynccontextmanager
async def lifespan(app: Starlette):
    app.state.pool = pool = await tfb.open_pool()
    app.state.cache = await tfb.load_cache(pool)
    yield
    await pool.close()


app = Starlette(lifespan=lifespan, routes=[
    Route("/json", json_route), Route("/plaintext", plaintext), Route("/db", db),
    Route("/queries", queries), Route("/fortunes", fortunes), Route("/updates", updates),
    Route("/cached-queries", cached_queries)])


async def main(port: int) -> None:
    sock = socket.create_server(("127.0.0.1", port), backlog=8192)
    server = uvicorn.Server(uvicorn.Config(app, http="httptools", access_log=False,
                                           log_level="warning", lifespan="on"))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not serving.done():
        await asyncio.sleep(0.02)
    if server.started:
        announce(sock.getsockname()[1])
    await serving


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="python -m bench.baselines.tfb_starlette")
    p.add_argument("--port", type=int, default=0)
    uvloop.run(main(p.parse_args().port))
