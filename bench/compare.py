"""nginx vs wrk vs this tool in one run: ``python -m bench.compare`` prints a BENCHMARKS.md section.

Starts a private nginx (Debian package, temp config, 1 worker, ``return 200``, loopback only), then
interleaves ``wrk -t1 -c100`` and ``python -m bench -c 100 --workers 1`` (closed loop) a few times,
and finally holds 10,000 keep-alive connections to measure this tool's CPU cost per second.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .ports import free_port, wait_port

NGINX_CONF = """\
worker_processes 1;
{affinity}daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
worker_rlimit_nofile {files};
events {{ worker_connections {files}; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 1000000000;
    keepalive_timeout 600s;
    server {{
        listen 127.0.0.1:{port} backlog=8192;
        location / {{ return 200; }}
    }}
}}
"""


MAX_ATTEMPTS = 6  # per round, when other load disturbs it
MIN_CLIENT_CPU = 90.0  # percent of its core a closed-loop client uses on an undisturbed machine


class Nginx:
    """A private nginx master + 1 worker on a loopback port, stopped on exit."""

    def __init__(self, binary: str, files: int, cpu: int | None):
        self.dir = tempfile.mkdtemp(prefix="bench-nginx-")
        self.port = free_port()
        conf = Path(self.dir) / "nginx.conf"
        affinity = "" if cpu is None else f"worker_cpu_affinity {1 << cpu:b};\n"
        conf.write_text(
            NGINX_CONF.format(dir=self.dir, port=self.port, files=files, affinity=affinity)
        )
        self.proc = subprocess.Popen(
            [binary, "-p", self.dir, "-c", str(conf), "-e", f"{self.dir}/error.log"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            wait_port(self.port)
        except TimeoutError:
            self.stop()
            raise
        self.url = f"http://127.0.0.1:{self.port}/"

    def stop(self) -> None:
        """Quit nginx (SIGQUIT lets it finish; kill if it does not) and remove the temp dir."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc.stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def _ms(text: str) -> float:
    """wrk latency '452.31us' / '1.20ms' / '2.00s' -> milliseconds."""
    match = re.match(r"([\d.]+)(us|ms|s)", text)
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def _pin(cpu: int | None):
    """preexec_fn that pins the child to one CPU (None: no pinning)."""
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def run_wrk(wrk: str, url: str, connections: int, seconds: int, cpu: int | None = None) -> dict:
    """One ``wrk -t1`` run: requests/s and its latency percentiles."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        [wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
        preexec_fn=_pin(cpu),
    ).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    pct = {m.group(1): _ms(m.group(2)) for m in re.finditer(r"^\s+(50|90|99)%\s+(\S+)", out, re.M)}
    return {
        "rps": rps,
        "p50": pct.get("50"),
        "p99": pct.get("99"),
        "cpu_percent": 100 * cpu_s / seconds,
        "raw": out,
    }


def run_bench(url: str, args: list[str], timeout: float, cpu: int | None = None) -> dict:
    """One ``python -m bench`` run in a fresh process; returns its JSON report."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tmp:
        path = tmp.name
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "bench", url, *args, "--json", path, "-q", "--no-progress"],
            capture_output=True,
            text=True,
            timeout=timeout,
            preexec_fn=_pin(cpu),
        )
        if proc.returncode not in (0,):
            raise RuntimeError(f"bench failed ({proc.returncode}): {proc.stderr.strip()}")
        return json.loads(Path(path).read_text())
    finally:
        os.unlink(path)


def _busy_cpus(interval: float = 1.0) -> float:
    """CPUs' worth of work done by anything on the machine during ``interval`` (from /proc/stat)."""

    def sample():
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return sum(fields[:8]), idle

    try:
        total0, idle0 = sample()
        time.sleep(interval)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return 0.0
    ticks = total1 - total0
    return 0.0 if ticks <= 0 else (os.cpu_count() or 1) * (1 - (idle1 - idle0) / ticks)


def wait_quiet(log, limit: float = 0.25, patience: float = 120.0) -> float:
    """Wait (at most ``patience`` s) until others use under ``limit`` CPUs; the last reading."""
    deadline = time.monotonic() + patience
    busy = _busy_cpus()
    while busy > limit and time.monotonic() < deadline:
        print(
            f"  machine busy ({busy:.2f} CPUs in use by other processes): waiting",
            file=log,
            flush=True,
        )
        busy = _busy_cpus(2.0)
    return busy


def _version(cmd: list[str]) -> str:
    """First line of a tool's version output."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except OSError:
        return "?"
    text = (proc.stdout + proc.stderr).strip().splitlines()
    return text[0] if text else "?"


def _cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _package_version(name: str) -> str:
    """Installed version of a Python distribution, or 'not installed'."""
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and print the markdown section on stdout (progress on stderr)."""
    p = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__.splitlines()[0])
    p.add_argument(
        "--rounds", type=int, default=3, help="interleaved wrk / bench rounds (default 3)"
    )
    p.add_argument(
        "--seconds", type=int, default=5, help="length of each closed-loop run (default 5)"
    )
    p.add_argument(
        "-c", "--connections", type=int, default=100, help="closed-loop connections (default 100)"
    )
    p.add_argument(
        "--hold-connections", type=int, default=10000, help="hold run connections (default 10000)"
    )
    p.add_argument(
        "--hold-seconds", type=int, default=30, help="measured part of the hold run (default 30)"
    )
    p.add_argument("--skip-hold", action="store_true", help="only the closed-loop comparison")
    p.add_argument(
        "--no-pin",
        action="store_true",
        help="do not pin nginx to CPU 0 and the load generator (wrk or bench) to CPU 1",
    )
    args = p.parse_args(argv)
    nginx_bin = shutil.which("nginx") or (
        "/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None
    )
    wrk = shutil.which("wrk")
    if not nginx_bin or not wrk:
        print("bench.compare: needs nginx and wrk (apt-get install -y nginx wrk)", file=sys.stderr)
        return 2

    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    files = args.hold_connections + 1024
    if hard == resource.RLIM_INFINITY or hard >= files:
        resource.setrlimit(
            resource.RLIMIT_NOFILE,
            (
                max(soft, files) if hard == resource.RLIM_INFINITY else min(max(soft, files), hard),
                hard,
            ),
        )
    # With two or more CPUs, nginx gets CPU 0 and the client under test CPU 1: both tools meet the
    # same conditions and the scheduler cannot put client and server on one core for part of a run.
    pin = not args.no_pin and (os.cpu_count() or 1) >= 2 and hasattr(os, "sched_setaffinity")
    server_cpu, client_cpu = (0, 1) if pin else (None, None)
    nginx = Nginx(nginx_bin, files, server_cpu)
    busy_readings = []
    discarded = 0
    log = sys.stderr
    rows = []
    try:
        url = nginx.url
        run_wrk(wrk, url, args.connections, 1)  # warm nginx up
        for round_no in range(1, args.rounds + 1):
            for attempt in range(1, MAX_ATTEMPTS + 1):
                busy_readings.append(wait_quiet(log))
                w = run_wrk(wrk, url, args.connections, args.seconds, client_cpu)
                print(
                    f"round {round_no}: wrk {w['rps']:,.0f} req/s (cpu {w['cpu_percent']:.0f}%)",
                    file=log,
                    flush=True,
                )
                busy_readings.append(wait_quiet(log))
                b = run_bench(
                    url,
                    ["-c", str(args.connections), "-d", f"{args.seconds}s", "-w", "1"],
                    timeout=args.seconds + 60,
                    cpu=client_cpu,
                )
                print(
                    f"round {round_no}: bench {b['requests_per_s']:,.0f} req/s "
                    f"(cpu {b['cpu']['max_percent']:.0f}%)",
                    file=log,
                    flush=True,
                )
                # Both clients saturate their core on an undisturbed machine; one that got much less
                # CPU was pre-empted by something else, so the round says nothing about the tools.
                if _clean(w, b) or attempt == MAX_ATTEMPTS:
                    break
                discarded += 1
                print(f"round {round_no}: discarded (a client got under {MIN_CLIENT_CPU:.0f}% of "
                      "its CPU: other load on the machine); repeating", file=log, flush=True)
            rows.append((w, b))
        hold = None
        if not args.skip_hold:
            ramp_s = args.hold_connections / 1000 + 2  # 10 per 10 ms = 1,000 per second
            print(f"hold: {args.hold_connections:,} connections, {ramp_s:.0f} s ramp + "
                  f"{args.hold_seconds} s", file=log, flush=True)
            wait_quiet(log)
            hold_args = (f"-c {args.hold_connections} --ramp 10/10ms --interval 1-30s "
                         f"--warmup {ramp_s:g}s -d {args.hold_seconds}s -m HEAD").split()
            hold = run_bench(url, hold_args, ramp_s + args.hold_seconds + 120, cpu=client_cpu)
            hold["_args"] = hold_args
    finally:
        nginx.stop()

    setup = {
        "cmd": " ".join(["python -m bench.compare", *(sys.argv[1:] if argv is None else argv)]),
        "nginx": _version([nginx_bin, "-v"]),
        "wrk": _version([wrk, "--version"]).split(" [")[0],
        "pin": (server_cpu, client_cpu) if pin else None,
        "busy": max(busy_readings, default=0.0),
        "discarded": discarded,
    }
    out = render_markdown(args, setup, rows, hold)
    print(out)
    return 0


def _clean(w: dict, b: dict) -> bool:
    """Both clients had their core to themselves (each used at least MIN_CLIENT_CPU percent)."""
    return min(w["cpu_percent"], b["cpu"]["max_percent"]) >= MIN_CLIENT_CPU


def _disturbed_note(disturbed: int, none_clean: bool) -> str:
    """How rounds that stayed disturbed after every attempt were treated."""
    if not disturbed:
        return "."
    if none_clean:
        return (f"; no round was undisturbed after {MAX_ATTEMPTS} attempts, so the medians include "
                "disturbed rounds: rerun on a quiet machine.")
    return (f"; {disturbed} round(s) still disturbed after {MAX_ATTEMPTS} attempts are marked and "
            "left out of the medians.")


def render_markdown(args, setup: dict, rows: list, hold: dict | None) -> str:
    """The BENCHMARKS.md section for one comparison run."""
    # a round still disturbed after every attempt is shown but left out of the medians
    undisturbed = [(w, b) for w, b in rows if _clean(w, b)]
    clean = undisturbed or rows
    wrk_rps = [w["rps"] for w, _ in clean]
    bench_rps = [b["requests_per_s"] for _, b in clean]
    med_w, med_b = statistics.median(wrk_rps), statistics.median(bench_rps)
    med_ratio = statistics.median(b / w for w, b in zip(wrk_rps, bench_rps, strict=True))
    c_arg, d_arg = args.connections, args.seconds
    if setup["pin"]:
        pinning = (f"nginx's worker is pinned to CPU {setup['pin'][0]} and the client under test "
                   f"to CPU {setup['pin'][1]} (the same for both tools).")
    else:
        pinning = "No CPU pinning."
    out = [
        "## Load generator vs wrk (issue 3)",
        "",
        f"Produced by `{setup['cmd']}` on {time.strftime('%Y-%m-%d', time.gmtime())}: "
        f"{_cpu_model()}, {os.cpu_count()} CPUs, Linux {platform.release()}, "
        f"Python {platform.python_version()}, uvloop {_package_version('uvloop')}, "
        f"httptools {_package_version('httptools')}, {setup['nginx']}, {setup['wrk']}.",
        "",
        "Target: nginx, 1 worker process, `return 200;` on 127.0.0.1, access log off. Closed loop, "
        f"{c_arg} keep-alive connections, {d_arg} s per run, the two tools interleaved "
        f"{args.rounds} times: `wrk -t1 -c{c_arg} -d{d_arg}s` vs "
        f"`python -m bench URL -c {c_arg} -d {d_arg}s --workers 1`. {pinning} "
        "Before each run the script waited for the machine to be quiet (highest reading of "
        f"other load: {setup['busy']:.2f} CPUs).",
        "",
        "| round | wrk -t1 req/s | python -m bench req/s | ratio | wrk p50 / p99 ms "
        "| bench p50 / p99 ms | wrk CPU | bench CPU |",
        "|---|---:|---:|---:|---|---|---:|---:|",
    ]
    for i, (w, b) in enumerate(rows, 1):
        lat, rps = b["latency_ms"], b["requests_per_s"]
        mark = "" if _clean(w, b) else " (disturbed)"
        out.append(
            f"| {i}{mark} | {w['rps']:,.0f} | {rps:,.0f} | {rps / w['rps']:.2f}x "
            f"| {w['p50'] or 0:.3f} / {w['p99'] or 0:.3f} | {lat['p50']:.3f} / {lat['p99']:.3f} "
            f"| {w['cpu_percent']:.0f}% | {b['cpu']['max_percent']:.0f}% |")
    out += [
        f"| **median** | **{med_w:,.0f}** | **{med_b:,.0f}** | **{med_b / med_w:.2f}x** "
        "| | | | |",
        "",
        f"Ratio of the medians: **{med_b / med_w:.2f}x**; median of the per-round ratios: "
        f"**{med_ratio:.2f}x** (target: at least 0.90x). Rounds in which either client got under "
        f"{MIN_CLIENT_CPU:.0f}% of its core (other processes on the machine) were repeated: "
        f"{setup['discarded']} discarded"
        + _disturbed_note(len(rows) - len(undisturbed), not undisturbed),
        "",
    ]
    if hold is not None:
        c, cpu, lat = hold["connections"], hold["cpu"]["workers"][0], hold["latency_ms"]
        per_s = cpu["cpu_s"] / cpu["wall_s"] if cpu["wall_s"] else 0.0
        out += [
            f"Hold run: `python -m bench URL {' '.join(hold['_args'])}` (the warm-up covers the "
            "ramp, so the CPU figure is for holding the connections, not for opening them):",
            "",
            f"- connections established {c['established']:,}, open at the end "
            f"{c['open_at_end']:,}, failed {c['failed_total']:,}, "
            f"closed by the server {c['closed_by_server']:,}",
            f"- requests {hold['requests']['sent']:,} ({hold['requests_per_s']:,.0f}/s), "
            f"errors {hold['requests']['errors_total']:,}, latency p50 {lat['p50']:.3f} ms, "
            f"p99 {lat['p99']:.3f} ms",
            f"- **CPU to hold them: {per_s:.3f} CPU-seconds per second = {100 * per_s:.1f}% of one "
            f"core** ({cpu['cpu_s']:.2f} s CPU over {cpu['wall_s']:.1f} s)",
            "",
        ]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
