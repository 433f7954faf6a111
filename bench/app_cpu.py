"""CPU time per request through a Tornado ``Application``, in one process, without sockets.

``python -m bench.app_cpu`` builds, in one process, the bare hello ``Application`` of
``bench.baselines.project_hello`` and the project's full application twice (metrics on and
``--no-metrics``, each with its own database, ``--access-log off``), then feeds each the same
``GET`` through ``Application.start_request`` on an in-memory ``HTTPConnection`` that discards
what is written, alternating the three in rounds. It prints JSON: CPU microseconds per request of
every variant and round.

``--tfb json`` (or ``plaintext``): instead, that TechEmpower type through ``bench.techempower``'s
application, prepared as ``--engine fast`` prepares an application (its handler delegate, the
Date cached per second, request headers built as the engine builds them). That is the part of a
request on the fast engine that belongs to Tornado and the handler, no engine, socket or parser:
under ``valgrind --tool=callgrind``, the difference in instructions between two ``--requests``
counts is what that part costs per request (docs/bench.md).

What it shows that a socket benchmark cannot: the cost of the application's own path, free of
the loopback and scheduler effects that move a closed-loop run by several per cent from one run
(or server process) to the next. Both sides of a ratio run in the same process, so process-level
luck (address layout, hash seed) cancels too.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import tornado.web
from tornado import httputil

from server import compat
from server.config import Settings
from server.lifecycle import ServerRuntime, bind, tune_garbage_collector

from . import techempower
from .baselines.project_hello import HelloHandler

HEADERS = {"Host": "127.0.0.1:8888", "User-Agent": "bench.app_cpu", "Accept": "*/*"}
VARIANTS = (("bare", "/"), ("metrics", "/api/hello/x"), ("nometrics", "/api/hello/x"))
TFB_PATHS = {"json": "/json", "plaintext": "/plaintext"}


class NullConnection(httputil.HTTPConnection):
    """An HTTPConnection that accepts every write at once and keeps nothing."""

    class context:  # what handlers read from request.connection.context
        remote_ip = "127.0.0.1"
        protocol = "http"
        address = ("127.0.0.1", 40000)

    def __init__(self, done: asyncio.Future[None]) -> None:
        self.done = done

    def set_close_callback(self, callback: Any) -> None:
        pass

    def write_headers(self, start_line: Any, headers: httputil.HTTPHeaders,
                      chunk: bytes | None = None) -> asyncio.Future[None]:
        return self.done

    def write(self, chunk: bytes) -> asyncio.Future[None]:
        return self.done

    def finish(self) -> None:
        pass


async def cpu_per_request(app: tornado.web.Application, path: str, requests: int,
                          as_engine: bool = False) -> float:
    """CPU microseconds per request for ``requests`` GETs of ``path`` (handlers run to the end).

    ``as_engine``: the headers built as the fast engine builds them (``compat.make_headers``).
    """
    done = asyncio.get_running_loop().create_future()
    done.set_result(None)
    conn = NullConnection(done)
    start_line = httputil.RequestStartLine("GET", path, "HTTP/1.1")
    lists = {name: [value] for name, value in HEADERS.items()}

    def headers() -> httputil.HTTPHeaders:
        return compat.make_headers(dict(lists)) if as_engine else httputil.HTTPHeaders(HEADERS)
    began = time.process_time()
    for i in range(requests):
        delegate = app.start_request(None, conn)
        delegate.headers_received(start_line, headers())
        delegate.finish()
        if i % 50 == 49:  # let the handlers' tasks run, as an event loop with traffic would
            await asyncio.sleep(0)
    await asyncio.sleep(0.01)
    return (time.process_time() - began) / requests * 1e6


async def measure_tfb(path: str, rounds: int, requests: int) -> list[float]:
    """--tfb: one TFB type without a database, its application prepared as the fast engine does."""
    app = tornado.web.Application(techempower.ROUTES)  # no pool: json and plaintext need none
    compat.start_handlers_directly(app)
    compat.cache_date_formatting()
    tune_garbage_collector(Settings())  # python -m server's defaults
    await cpu_per_request(app, path, requests // 4, as_engine=True)
    return [await cpu_per_request(app, path, requests, as_engine=True) for _ in range(rounds)]


async def measure(rounds: int, requests: int) -> dict[str, list[float]]:
    tmp = Path(tempfile.mkdtemp(prefix="app-cpu-"))
    runtimes = {}
    for name, metrics in (("metrics", True), ("nometrics", False)):
        settings = Settings(address="127.0.0.1", port=0, data_dir=tmp / name, log_level="error",
                            access_log="off", metrics=metrics)
        runtimes[name] = ServerRuntime(settings)
        await runtimes[name].start(bind("127.0.0.1", 0, 128))
    apps = {"bare": tornado.web.Application([(r"/", HelloHandler)]),
            **{name: rt.http.request_callback for name, rt in runtimes.items()}}
    tune_garbage_collector(runtimes["metrics"].settings)  # as python -m server does once serving
    try:
        for name, path in VARIANTS:  # warm-up: caches, Python's specialising interpreter
            await cpu_per_request(apps[name], path, requests // 4)
        out: dict[str, list[float]] = {name: [] for name, _ in VARIANTS}
        for r in range(rounds):
            order = VARIANTS if r % 2 == 0 else VARIANTS[::-1]
            for name, path in order:
                out[name].append(await cpu_per_request(apps[name], path, requests))
        return out
    finally:
        for rt in runtimes.values():
            await rt.stop()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.app_cpu", description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--requests", type=int, default=20000, help="requests per variant and round")
    p.add_argument("--tfb", choices=sorted(TFB_PATHS),
                   help="this TechEmpower type alone, prepared as the fast engine does")
    args = p.parse_args(argv)
    if args.tfb:
        variants = {f"tfb-{args.tfb}": TFB_PATHS[args.tfb]}
        import uvloop  # the event loop python -m server runs the fast engine on (--loop auto)
        samples = {f"tfb-{args.tfb}": uvloop.run(measure_tfb(TFB_PATHS[args.tfb], args.rounds,
                                                             args.requests))}
    else:
        variants = dict(VARIANTS)
        samples = asyncio.run(measure(args.rounds, args.requests))
    print(json.dumps({"unit": "cpu_us_per_request", "rounds": args.rounds,
                      "requests": args.requests, "variants": variants, "samples": samples}))


if __name__ == "__main__":
    main()
