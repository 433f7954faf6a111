"""python -m bench.cluster: one instance direct vs nginx (docs/deploy/nginx.conf) in front of three.

Everything runs on this machine, so the three instances, nginx and the load generator share its
cores: the figure shows what the proxy hop costs and that the cluster serves, not how it scales
across machines. Prints a markdown section for BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .ports import free_port

ROOT = Path(__file__).resolve().parent.parent
READY = re.compile(r"Serving on (http://\S+?)/? ")


def start_instance(port: int, data_dir: Path) -> subprocess.Popen:
    """python -m server on a port, returned once it says it serves."""
    proc = subprocess.Popen([sys.executable, "-m", "server", "--port", str(port), "--access-log", "off",
                             "--data-dir", str(data_dir), "--trusted-proxies", "127.0.0.1/32"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    while not READY.search(proc.stdout.readline() or "Serving on x "):
        pass
    return proc


def start_nginx(ports: list[int], base: Path) -> tuple[subprocess.Popen, int]:
    """nginx with the documented site config, upstream ports rewritten."""
    port = free_port()
    site = (ROOT / "docs" / "deploy" / "nginx.conf").read_text()
    numbers = iter(ports)
    site = re.sub(r"server 127\.0\.0\.1:800\d", lambda _: f"server 127.0.0.1:{next(numbers)}", site)
    (base / "site.conf").write_text(site.replace("listen 80;", f"listen 127.0.0.1:{port};"))
    (base / "nginx.conf").write_text(
        f"user root; worker_processes 1; pid {base}/nginx.pid; error_log {base}/error.log warn;\n"
        f"events {{ worker_connections 4096; }}\n"
        f"http {{ access_log off; client_body_temp_path {base}/b; proxy_temp_path {base}/p;\n"
        f"  fastcgi_temp_path {base}/f; uwsgi_temp_path {base}/u; scgi_temp_path {base}/s;\n"
        f"  include {base}/site.conf; }}\n")
    proc = subprocess.Popen([shutil.which("nginx") or "/usr/sbin/nginx", "-c", str(base / "nginx.conf"),
                             "-g", "daemon off;"], stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    return proc, port


def measure(url: str, seconds: int, connections: int, report: Path) -> dict:
    """One closed-loop run of python -m bench; returns its JSON report."""
    subprocess.run([sys.executable, "-m", "bench", url, "-c", str(connections), "-d", f"{seconds}s",
                    "--warmup", "1s", "--no-progress", "-q", "--json", str(report)],
                   cwd=ROOT, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads(report.read_text())


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and print the markdown section."""
    parser = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=50)
    args = parser.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="hps-cluster-bench-"))
    base.chmod(0o755)
    ports = [free_port() for _ in range(3)]
    instances = [start_instance(port, base / f"data{i}") for i, port in enumerate(ports)]
    nginx, nginx_port = start_nginx(ports, base)
    rows = []
    try:
        for round_number in range(1, args.rounds + 1):
            direct = measure(f"http://127.0.0.1:{ports[0]}/api/hello/x", args.seconds, args.connections,
                             base / "direct.json")
            proxied = measure(f"http://127.0.0.1:{nginx_port}/api/hello/x", args.seconds,
                              args.connections, base / "proxied.json")
            rows.append((round_number, direct, proxied))
    finally:
        nginx.terminate()
        for proc in instances:
            proc.terminate()
        for proc in [nginx, *instances]:
            proc.wait(20)
        shutil.rmtree(base, ignore_errors=True)

    def rps(result: dict) -> float:
        return result["requests_per_s"]

    def p99(result: dict) -> float:
        return result["latency_ms"]["p99"]

    command = " ".join(["python -m bench.cluster", *(argv if argv is not None else sys.argv[1:])])
    print("## Cluster behind nginx vs one instance direct (issue 8)\n")
    print(f"Produced by `{command}`: three `python -m server` instances (one process each, access log "
          f"off) behind nginx with `docs/deploy/nginx.conf` (1 worker, keep-alive upstream), against "
          f"one of the same instances direct; `python -m bench URL/api/hello/x -c {args.connections} "
          f"-d {args.seconds}s`, interleaved {args.rounds} times. Everything shares this machine's 2 "
          f"cores.\n")
    print("| round | direct req/s | via nginx req/s | ratio | direct p99 ms | via nginx p99 ms | errors |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for number, direct, proxied in rows:
        errors = direct["requests"]["errors_total"] + proxied["requests"]["errors_total"]
        print(f"| {number} | {rps(direct):,.0f} | {rps(proxied):,.0f} | {rps(proxied) / rps(direct):.2f}x "
              f"| {p99(direct):.2f} | {p99(proxied):.2f} | {errors} |")
    direct_median = statistics.median(rps(d) for _, d, _ in rows)
    proxied_median = statistics.median(rps(p) for _, _, p in rows)
    print(f"| **median** | **{direct_median:,.0f}** | **{proxied_median:,.0f}** | "
          f"**{proxied_median / direct_median:.2f}x** | {statistics.median(p99(d) for _, d, _ in rows):.2f} "
          f"| {statistics.median(p99(p) for _, _, p in rows):.2f} | |")
    print("\nHow to read it: one instance is one process on one core; the three behind nginx can "
          "spread over both cores of this machine, which they share with nginx and the load "
          "generator, so a ratio above 1x is the second core outweighing the proxy hop, and the "
          "higher p99 is the hop plus that contention. On separate machines each instance brings "
          "its own cores.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
