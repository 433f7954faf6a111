"""``make bench``: the load generator against the project's server, incl. a 10,000-connection hold.

Starts ``python -m server --port 0`` (unless ``--url`` names a running server), then runs a closed
loop, a fixed-rate run at half the closed-loop throughput and a hold run of 10,000 keep-alive
connections; writes JSON and HTML reports to ``artifacts/`` and prints a markdown summary.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
READY = re.compile(r"Serving on (http://\S+?)/?(?:\s|$)")


class ProjectServer:
    """``python -m server --port 0`` as a subprocess; ``url`` comes from its ready line."""

    def __init__(self, extra: list[str], timeout: float = 30.0):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server", "--port", "0", *extra],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        deadline = time.monotonic() + timeout
        self.url = None
        while self.url is None:
            line = self.proc.stdout.readline()
            if not line or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("python -m server did not print 'Serving on http://...'")
            match = READY.search(line)
            if match:
                self.url = match.group(1)
        self.reader = threading.Thread(
            target=self.proc.stdout.read, daemon=True
        )  # never block on a full pipe
        self.reader.start()

    def stop(self) -> None:
        """Terminate the server (kill if it does not exit)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc.stdout.close()


def bench(url: str, name: str, out: Path, args: list[str]) -> tuple[int, dict]:
    """One ``python -m bench`` run (own process, as a user runs it) writing JSON + HTML."""
    json_path, html_path = out / f"bench-{name}.json", out / f"bench-{name}.html"
    cmd = [
        sys.executable,
        "-m",
        "bench",
        url,
        *args,
        "--json",
        str(json_path),
        "--report",
        str(html_path),
        "--max-error-rate",
        "1%",
    ]
    print(f"\n$ python -m bench {url} {' '.join(args)}", flush=True)
    code = subprocess.run(cmd, cwd=ROOT).returncode
    return code, json.loads(json_path.read_text()) if json_path.exists() else {}


def main(argv: list[str] | None = None) -> int:
    """Run the suite; exit status is non-zero when any run failed its error-rate gate."""
    p = argparse.ArgumentParser(prog="python -m bench.suite", description=__doc__.splitlines()[0])
    p.add_argument(
        "--url", help="benchmark this running server instead of starting python -m server"
    )
    p.add_argument("--seconds", type=int, default=10, help="closed-loop and rate runs (default 10)")
    p.add_argument(
        "-c", "--connections", type=int, default=100, help="closed-loop / rate connections"
    )
    p.add_argument(
        "--hold-connections", type=int, default=10000, help="hold run connections (default 10000)"
    )
    p.add_argument(
        "--hold-seconds", type=int, default=30, help="measured part of the hold run (default 30)"
    )
    p.add_argument("--out", default=str(ROOT / "artifacts"), help="directory for JSON/HTML reports")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    # the server subprocess inherits this limit: it must hold the hold run's connections too
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        resource.setrlimit(
            resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 1 << 20, hard)
        )

    server = None
    if args.url:
        base = args.url.rstrip("/")
    else:
        server = ProjectServer(["--backlog", "8192"] if _server_has_option("--backlog") else [])
        base = server.url
        print(f"started python -m server at {base}/", flush=True)
    results = []
    try:
        code, closed = bench(
            base + "/healthz",
            "closed",
            out,
            ["-c", str(args.connections), "-d", f"{args.seconds}s", "--warmup", "1s"],
        )
        results.append(("closed loop /healthz", code, closed))
        rate = max(100, int((closed.get("requests_per_s") or 200) / 2))
        code, rated = bench(
            base + "/api/hello/bench",
            "rate",
            out,
            [
                "-c",
                str(args.connections),
                "--rate",
                str(rate),
                "-d",
                f"{args.seconds}s",
                "--warmup",
                "1s",
            ],
        )
        results.append((f"rate {rate}/s /api/hello/bench", code, rated))
        ramp = args.hold_connections / 1000 + 2
        code, hold = bench(
            base + "/healthz",
            "hold",
            out,
            [
                "-c",
                str(args.hold_connections),
                "--ramp",
                "10/10ms",
                "--interval",
                "1-30s",
                "--warmup",
                f"{ramp:g}s",
                "-d",
                f"{args.hold_seconds}s",
                "-m",
                "HEAD",
            ],
        )
        results.append((f"hold {args.hold_connections:,} connections", code, hold))
    finally:
        if server is not None:
            server.stop()

    print("\n| run | requests/s | p50 ms | p99 ms | errors | open at end | generator CPU |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    worst = 0
    for name, code, rep in results:
        worst = max(worst, code)
        if not rep:
            print(f"| {name} | failed (exit {code}) | | | | | |")
            continue
        lat = rep["latency_ms"]
        errors = rep["requests"]["errors_total"] + rep["connections"]["failed_total"]
        print(
            f"| {name} | {rep['requests_per_s']:,.0f} | {lat['p50']:.3f} | {lat['p99']:.3f} "
            f"| {errors:,} | {rep['connections']['open_at_end']:,} "
            f"| {rep['cpu']['max_percent']:.1f}% |"
        )
    print(f"\nreports: {out}/bench-*.json, {out}/bench-*.html")
    return worst


def _server_has_option(option: str) -> bool:
    """Whether ``python -m server --help`` lists an option (the server's CLI is not ours)."""
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "server", "--help"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return option in proc.stdout


if __name__ == "__main__":
    sys.exit(main())
