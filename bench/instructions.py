"""Instructions per request, counted by callgrind: before/after comparisons noise cannot blur.

``python -m bench.instructions --against REF`` serves the TechEmpower application
(``bench/techempower.py``) from this checkout and from a checkout of ``REF``, each server under
``valgrind --tool=callgrind``, on one private PostgreSQL. Per test type it sends a warm-up, zeroes
the counters (``callgrind_control -z``), sends ``--requests`` requests over ``--connections``
keep-alive connections, dumps the counters (``callgrind_control -d``) and divides the server
process's instructions by the requests. The database's work happens in other processes and is
not counted.

Why: on this shared two-core machine the req/s of one round of the database types drifts by a
factor of two between rounds, so a 2 % change in what the server does per request is invisible
in wrk's numbers. Callgrind's count of the same requests repeats to about 0.5 %. It counts
user-space instructions, not time (a cache miss costs nothing extra, a system call's work in the
kernel is not counted), so it tells whether the code does more or less work per request; req/s
in ``make bench`` stays the measure of speed. ``--baselines stock,aiohttp`` adds the TFB
baselines of ``bench/baselines/``.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from . import techempower
from .pgserver import PostgresServer
from .suite_servers import ROOT, Server, stop_all
from .suite_techempower import BASELINES, TYPES, checkout, project_argv, remove_checkout

CALLGRIND = ["valgrind", "--tool=callgrind", "--instr-atstart=no"]
REQUEST_TIMEOUT = 120.0  # seconds per request: a server under callgrind runs ~50x slower
READY_TIMEOUT = 300.0


async def _one_connection(host: str, port: int, path: str, count: int, statuses: dict) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    try:
        for _ in range(count):
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT)
            lines = head.split(b"\r\n")
            status = int(lines[0].split(b" ", 2)[1])
            length = next(int(line.split(b":", 1)[1]) for line in lines
                          if line.lower().startswith(b"content-length:"))
            await asyncio.wait_for(reader.readexactly(length), REQUEST_TIMEOUT)
            statuses[status] = statuses.get(status, 0) + 1
    finally:
        writer.close()


def send(url: str, path: str, requests: int, connections: int) -> dict[int, int]:
    """``requests`` GETs of ``path`` over ``connections`` keep-alive connections: {status: count}."""
    parts = urlsplit(url)
    statuses: dict[int, int] = {}
    shares = [requests // connections + (i < requests % connections) for i in range(connections)]

    async def main() -> None:
        await asyncio.gather(*(_one_connection(parts.hostname or "127.0.0.1", parts.port or 80,
                                               path, n, statuses) for n in shares if n))
    asyncio.run(main())
    return statuses


class Counted:
    """A server under callgrind: instructions of its process between zero() and dump()."""

    def __init__(self, key: str, argv: list[str], tmp: Path, cwd: Path) -> None:
        self.out = tmp / f"{key}.callgrind"
        self.dumps = 0
        wrap = [*CALLGRIND, f"--callgrind-out-file={self.out}"]
        self.server = Server(key, argv, tmp / f"{key}.log", None, cwd, wrap=wrap)

    def control(self, *args: str) -> None:
        subprocess.run(["callgrind_control", *args, str(self.server.pid)], check=True,
                       capture_output=True, timeout=120)

    def dump(self) -> int:
        """Write the counters since the last zero() and return their instruction total."""
        self.control("-d")
        self.dumps += 1
        for line in Path(f"{self.out}.{self.dumps}").read_text().splitlines():
            if line.startswith("totals:"):
                return int(line.split()[1])
        raise RuntimeError(f"{self.out}.{self.dumps}: no totals line")


def measure(counted: dict[str, Counted], types: list[str], requests: dict[str, int],
            connections: int) -> dict[str, dict[str, float]]:
    """{type: {server: instructions per request}}."""
    result: dict[str, dict[str, float]] = {t: {} for t in types}
    for key, c in counted.items():
        c.control("-i", "on")
        for t in types:
            n = requests[t]
            send(c.server.url, TYPES[t], max(n // 4, 50), connections)  # caches, compiled paths
            c.control("-z")
            statuses = send(c.server.url, TYPES[t], n, connections)
            total = c.dump()
            if statuses != {200: n}:
                raise RuntimeError(f"{key} {t}: answers {statuses}, not {n} x 200")
            result[t][key] = total / n
            print(f"  {t:15} {key:16} {total / n / 1000:9.1f} k instructions/request",
                  flush=True)
    return result


def render(result: dict[str, dict[str, float]], engines: list[str], against: str | None,
           baselines: list[str]) -> str:
    cols = [f"project-{e}" for e in engines]
    head = ["type"] + [f"`--engine {e}` (k)" for e in engines]
    if against:
        head += [f"before ÷ after, `{e}`" for e in engines]
    head += [f"{b} ÷ `{e}`" for b in baselines for e in engines]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t, per in result.items():
        cells = [t] + [f"{per[c] / 1000:.1f}" for c in cols]
        if against:
            cells += [f"{per[f'ref-{e}'] / per[f'project-{e}']:.3f}" for e in engines]
        cells += [f"{per[b] / per[f'project-{e}']:.2f}" for b in baselines for e in engines]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--against", help="a git ref to compare with (served from a worktree)")
    p.add_argument("--types", default="json,db,fortunes,updates",
                   help=f"test types, comma-separated, of {','.join(TYPES)}")
    p.add_argument("--engines", default="tornado,fast")
    p.add_argument("--baselines", default="", help=f"of {','.join(BASELINES)}, comma-separated")
    p.add_argument("--requests", type=int, default=1000,
                   help="requests counted per type (a tenth of it for queries and updates)")
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--out", default=str(ROOT / "artifacts" / "bench-instructions.json"))
    a = p.parse_args(argv)
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        p.error("valgrind is not installed (apt-get install valgrind)")
    types = [t for t in a.types.split(",") if t]
    unknown = [t for t in types if t not in TYPES]
    baselines = [b for b in a.baselines.split(",") if b]
    if unknown or any(b not in BASELINES for b in baselines):
        p.error(f"unknown type or baseline: {unknown or baselines}")
    engines = [e for e in a.engines.split(",") if e]
    requests = {t: a.requests // 10 if t in ("queries", "updates") else a.requests for t in types}
    tmp = Path(tempfile.mkdtemp(prefix="bench-instructions-"))
    os.chmod(tmp, 0o755)  # PostgreSQL, running as its own user, keeps its cluster in here
    pg = PostgresServer(tmp / "pg")
    counted: dict[str, Counted] = {}
    tree = tmp / "against"
    try:
        pg.start()
        os.environ[techempower.DB_ENV] = pg.create_database("tfb")
        if a.against:
            checkout(a.against, tree)
        for e in engines:
            # the servers python -m bench.suite --only techempower measures, command for command
            counted[f"project-{e}"] = Counted(f"project-{e}", project_argv(e, tmp / f"data-{e}"),
                                              tmp, ROOT)
            if a.against:
                counted[f"ref-{e}"] = Counted(f"ref-{e}", project_argv(e, tmp / f"data-ref-{e}"),
                                              tmp, tree)
        for b in baselines:
            counted[b] = Counted(b, BASELINES[b], tmp, ROOT)
        for c in counted.values():
            c.server.wait_ready(READY_TIMEOUT)
        result = measure(counted, types, requests, a.connections)
    finally:
        stop_all({k: c.server for k, c in counted.items()})
        if a.against:
            remove_checkout(tree)
        pg.stop("immediate")
        shutil.rmtree(tmp, ignore_errors=True)
    table = render(result, engines, a.against, baselines)
    command = "python -m bench.instructions " + " ".join(argv if argv is not None else sys.argv[1:])
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"command": command, "requests": requests,
                                       "connections": a.connections, "against": a.against,
                                       "instructions_per_request": result}, indent=1) + "\n")
    print(f"\n{command}\n\n{table}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
