"""Load runs for ``make bench``: one closed-loop run with wrk or ``python -m bench``, hold and probe
runs, and the quiet-machine wait (from ``bench.compare``) with a budget."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .compare import _busy_cpus, _ms, _pin
from .suite_servers import ROOT


def run_wrk(wrk: str, url: str, connections: int, seconds: int, threads: int = 1,
            cpu: int | None = None, script: tuple[str, ...] = ()) -> dict:
    """One ``wrk -t{threads} -c{connections} -d{seconds}s --latency`` run, parsed.

    ``script``: a Lua script and its arguments (``wrk -s SCRIPT URL -- ARGS``).
    """
    lua = ["-s", script[0]] if script else []
    lua_args = ["--", *script[1:]] if script[1:] else []
    out = subprocess.run([wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency",
                          *lua, url, *lua_args], capture_output=True, text=True, timeout=seconds + 60,
                         check=True, preexec_fn=_pin(cpu)).stdout
    pct = {m.group(1): _ms(m.group(2)) for m in re.finditer(r"^\s+(50|99)%\s+(\S+)", out, re.M)}
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                              out)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = sum(map(int, socket_errors.groups())) if socket_errors else 0
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50_ms": pct.get("50"), "p99_ms": pct.get("99"),
            "errors": errors + (int(non_2xx.group(1)) if non_2xx else 0)}


def run_bench(url: str, args: list[str], timeout: float, cpu: int | None = None) -> dict:
    """One ``python -m bench`` run in its own process (pinned to ``cpu``); its JSON report."""
    proc, path = start_bench(url, args, cpu)
    try:
        proc.wait(timeout)
        return finish_bench(proc, path)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


def start_bench(url: str, args: list[str], cpu: int | None = None) -> tuple[subprocess.Popen, str]:
    """Start ``python -m bench`` without waiting (the hold scenario probes while it runs)."""
    fd, path = tempfile.mkstemp(suffix=".json", prefix="bench-suite-")
    os.close(fd)
    proc = subprocess.Popen([sys.executable, "-m", "bench", url, *args, "--json", path, "-q",
                             "--no-progress"], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_pin(cpu))
    return proc, path


def finish_bench(proc: subprocess.Popen, path: str, ok: tuple[int, ...] = (0,)) -> dict:
    """Wait for a started ``python -m bench`` and return its report (RuntimeError if it failed)."""
    try:
        _, err = proc.communicate()
        if proc.returncode not in ok or not os.path.getsize(path):
            raise RuntimeError(f"python -m bench failed ({proc.returncode}): {err.strip()[-1000:]}")
        return json.loads(Path(path).read_text())
    finally:
        os.unlink(path)


def closed_loop(tool: str, url: str, connections: int, seconds: float, cpu: int | None,
                threads: int = 1, script: tuple[str, ...] = ()) -> dict:
    """req/s, p50, p99, errors and the load's wall time of one closed-loop run (wrk or bench).

    ``script`` (a wrk Lua script and its arguments) needs wrk.
    """
    if script and tool == "bench":
        raise RuntimeError(f"{script[0]} is a wrk script: this run needs wrk (apt-get install wrk)")
    if tool != "bench":
        started = time.monotonic()
        res = run_wrk(tool, url, connections, max(1, round(seconds)), threads, cpu, script)
        return {**res, "wall_s": time.monotonic() - started}
    rep = run_bench(url, ["-c", str(connections), "-d", f"{seconds:g}s", "-w", str(threads)],
                    timeout=seconds + 60, cpu=cpu)
    lat = rep["latency_ms"]
    # the report's duration, not the process's life: interpreter start-up is no load
    return {"rps": rep["requests_per_s"], "p50_ms": lat["p50"], "p99_ms": lat["p99"],
            "errors": rep["requests"]["errors_total"] + rep["requests"]["non_2xx_3xx"]
            + rep["connections"]["failed_total"], "wall_s": rep["duration_s"]}


@dataclass
class Quiet:
    """Waits for a quiet machine before each run, within a total budget, and keeps the readings.

    ``limit`` is how many CPUs' worth of work by anything (including our idle servers) counts as
    quiet. ``lost_s`` counts the seconds lost to other load (waiting, and runs repeated because
    they were disturbed); once it reaches ``budget``, runs start at once and are not repeated, so
    a busy machine cannot stretch the suite without end.
    """

    limit: float = 0.25
    patience: float = 30.0
    budget: float = 240.0
    sample_s: float = 1.0
    enabled: bool = True
    readings: list[float] = field(default_factory=list)
    lost_s: float = 0.0

    def wait(self, log) -> float:
        """Block until the machine is quiet (or patience/budget run out); the last reading."""
        if not self.enabled:
            return 0.0
        start = time.monotonic()
        deadline = start + min(self.patience, max(0.0, self.budget - self.lost_s))
        busy = _busy_cpus(self.sample_s)
        while busy > self.limit and time.monotonic() < deadline:
            print(f"  machine busy ({busy:.2f} CPUs in use): waiting", file=log, flush=True)
            busy = _busy_cpus(2.0)
        self.lost_s += max(0.0, time.monotonic() - start - self.sample_s)
        self.readings.append(busy)
        return busy

    @property
    def exhausted(self) -> bool:
        """Whether the budget for other load is spent (then nothing is repeated)."""
        return self.lost_s >= self.budget
