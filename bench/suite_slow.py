"""``python -m bench.suite_slow URL -c 1000``: N requests at once on N open connections, wall time.

Opens every connection first, then writes one GET on each as fast as it can and waits for all
responses; prints JSON: the time from the first write to the last complete response, how many
answered 200, and the connect time (not part of the wall time).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time
from urllib.parse import urlsplit


async def _exchange(reader: asyncio.StreamReader) -> tuple[int, float]:
    """Read one response (Content-Length framed): its status and when it was complete."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return status, time.perf_counter()


async def burst(url: str, connections: int, timeout: float) -> dict:
    """Open ``connections`` connections, then send one request on each at once; the timings."""
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    request = (f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
               "User-Agent: bench.suite_slow\r\n\r\n").encode()
    started = time.perf_counter()
    pairs = await asyncio.gather(*(asyncio.open_connection(parts.hostname, parts.port or 80)
                                   for _ in range(connections)))
    connected = time.perf_counter()
    t0 = time.perf_counter()
    for _, writer in pairs:
        writer.write(request)
    results = await asyncio.wait_for(
        asyncio.gather(*(_exchange(reader) for reader, _ in pairs), return_exceptions=True), timeout)
    for _, writer in pairs:
        writer.close()
    done = [r for r in results if not isinstance(r, BaseException)]
    ends = [end for _, end in done]
    return {"connections": connections, "connect_s": connected - started,
            "wall_s": (max(ends) - t0) if ends else None,
            "first_s": (min(ends) - t0) if ends else None,
            "ok": sum(1 for status, _ in done if status == 200),
            "errors": connections - len(done)}


def main(argv: list[str] | None = None) -> int:
    """Run one burst and print its JSON."""
    p = argparse.ArgumentParser(prog="python -m bench.suite_slow", description=__doc__.splitlines()[0])
    p.add_argument("url", help="e.g. http://127.0.0.1:8888/api/slow?ms=1000")
    p.add_argument("-c", "--connections", type=int, default=1000)
    p.add_argument("--timeout", type=float, default=60.0, help="seconds for the whole burst")
    args = p.parse_args(argv)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print(json.dumps(asyncio.run(burst(args.url, args.connections, args.timeout))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
