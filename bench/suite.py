"""``make bench``: the project's server side by side with stock Tornado and aiohttp, as ratios.

Every server is pinned to CPU 0 and the load generator to CPU 1 (except ``--processes 2``, which
needs both cores); runs are interleaved over rounds in ABBA order and summarised as medians of
per-round ratios, because the machine is shared and absolute numbers drift. Writes
``artifacts/bench-suite.json`` and the suite's sections of ``BENCHMARKS.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from .compare import _cpu_model, _package_version, _pin, _version
from .suite_load import Quiet, closed_loop, finish_bench, run_bench, start_bench
from .suite_report import median, render, row, write_block
from .suite_servers import ROOT, Server, start_all, stop_all
from .suite_techempower import run_techempower
from .suite_techempower import write as write_techempower

SCENARIOS = ("hello", "accesslog", "metrics", "guestbook", "files", "hold", "slow", "processes",
             "techempower")
THROUGHPUT = SCENARIOS[:5]
OPT_IN = {"techempower"}  # run only when --only names it (its own block of BENCHMARKS.md)
MAX_ATTEMPTS = 3  # per run, while the server did not get its core
MIN_SERVER_CPU = 90.0  # percent of its core a saturated server gets on an undisturbed machine
HELLO_PATH = "/api/hello/x"
SEED_MESSAGES = 50


@dataclass(frozen=True)
class Target:
    """One closed-loop measurement: which server, which path."""

    key: str
    server: str
    path: str
    label: str


@dataclass(frozen=True)
class Env:
    """What every measurement needs: options, CPUs, tool, temp dir, quiet-machine wait, log."""

    args: argparse.Namespace
    server_cpus: set[int] | None
    client_cpu: int | None
    tool: str  # path of wrk, or "bench"
    tmp: Path
    quiet: Quiet
    log: object

    def show(self, argv: list[str], pinned: bool = True) -> str:
        """A server command as a reader would type it (temp paths as $TMP)."""
        pin = f"taskset -c {min(self.server_cpus)} " if pinned and self.server_cpus else ""
        return (pin + "python " + shlex.join(argv)).replace(str(self.tmp), "$TMP")

    def load(self, connections: int, threads: int = 1, pinned: bool = True) -> str:
        """The load command of the closed-loop runs."""
        pin = f"taskset -c {self.client_cpu} " if pinned and self.client_cpu is not None else ""
        secs = self.args.seconds
        if self.tool == "bench":
            return f"{pin}python -m bench URL -c {connections} -d {secs:g}s -w {threads}"
        return f"{pin}wrk -t{threads} -c{connections} -d{max(1, round(secs))}s --latency URL"


def project_argv(engine: str, data_dir: Path, *extra: str) -> list[str]:
    """``python -m server`` on a free port with the given engine and its own database."""
    return ["-m", "server", "--port", "0", "--engine", engine, "--backlog", "8192",
            "--data-dir", str(data_dir), *extra]


def throughput_plan(engines: list[str], wanted: set[str], tmp: Path
                    ) -> tuple[dict[str, list[str]], list[Target], list[dict]]:
    """Servers, targets (in run order) and section definitions of scenarios 1-5."""
    files = str(tmp / "files")
    servers = {"stock": ["-m", "bench.baselines.tornado_hello", "--files", files],
               "aiohttp": ["-m", "bench.baselines.aiohttp_hello"]}
    targets = [Target("stock", "stock", "/", "stock Tornado `/` req/s"),
               Target("aiohttp", "aiohttp", "/", "aiohttp `/` req/s")]
    for e in engines:
        servers[f"bare-{e}"] = ["-m", "bench.baselines.project_hello", "--engine", e]
        servers[f"full-{e}"] = project_argv(e, tmp / f"data-full-{e}", "--access-log", "off",
                                            "--post-rate", "off", "--files", files)
        servers[f"logged-{e}"] = project_argv(e, tmp / f"data-logged-{e}", "--access-log", "combined")
        # Suite 3's pair differs in --no-metrics alone: neither serves the other suites' paths
        servers[f"metrics-{e}"] = project_argv(e, tmp / f"data-metrics-{e}", "--access-log", "off")
        servers[f"nometrics-{e}"] = project_argv(e, tmp / f"data-nometrics-{e}", "--access-log", "off",
                                                 "--no-metrics")
        # the control: a twin of the metrics-on server, run exactly like the other two
        servers[f"twin-{e}"] = project_argv(e, tmp / f"data-twin-{e}", "--access-log", "off")
        targets += [
            Target(f"bare-{e}", f"bare-{e}", "/", f"bare hello `/`, {e} engine req/s"),
            Target(f"logged-{e}", f"logged-{e}", HELLO_PATH,
                   f"`{HELLO_PATH}` access log + metrics, {e} engine req/s"),
            Target(f"hello-{e}", f"full-{e}", HELLO_PATH, f"`{HELLO_PATH}` metrics on, {e} engine req/s"),
            Target(f"metrics-{e}", f"metrics-{e}", HELLO_PATH,
                   f"`{HELLO_PATH}` metrics on (nothing else served), {e} engine req/s"),
            Target(f"nometrics-{e}", f"nometrics-{e}", HELLO_PATH,
                   f"`{HELLO_PATH}` --no-metrics, {e} engine req/s"),
            Target(f"twin-{e}", f"twin-{e}", HELLO_PATH,
                   f"`{HELLO_PATH}` metrics on, its twin (control), {e} engine req/s"),
            Target(f"messages-{e}", f"full-{e}", "/api/messages", f"`/api/messages`, {e} engine req/s"),
            Target(f"files-{e}", f"full-{e}", "/files/4k.bin", f"`/files/4k.bin`, {e} engine req/s"),
        ]
    targets.append(Target("stock-files", "stock", "/files/4k.bin",
                          "stock Tornado StaticFileHandler `/files/4k.bin` req/s"))
    sections = [s for s in throughput_sections(engines) if s["id"] in wanted]
    needed = {k for s in sections for k in s["targets"]}
    targets = [t for t in targets if t.key in needed]
    servers = {k: v for k, v in servers.items() if k in {t.server for t in targets}}
    return servers, targets, sections


# issue 6's targets for the fast engine: bare hello ≥ 2.5x stock Tornado and ≥ 0.6x aiohttp;
# /api/hello/<name> through the full application ≥ 0.8x the engine's bare hello
FAST_GOALS = {"stock": (">=", 2.5), "aiohttp": (">=", 0.6), "app": (">=", 0.8)}


def throughput_sections(engines: list[str]) -> list[dict]:
    """Scenarios 1-5: which targets each shows and which ratios (numerator, denominator, goal)."""
    def per_engine(fmt: str) -> list[str]:
        return [fmt.format(e=e) for e in engines]
    return [
        {"id": "hello", "title": "Suite 1: hello world vs stock Tornado and aiohttp",
         "targets": ["stock", "aiohttp", *per_engine("bare-{e}"), *per_engine("hello-{e}")],
         "ratios": [(f"bare hello, {e} engine ÷ stock Tornado", f"bare-{e}", "stock",
                     FAST_GOALS["stock"] if e == "fast" else None) for e in engines]
         + [(f"bare hello, {e} engine ÷ aiohttp", f"bare-{e}", "aiohttp",
             FAST_GOALS["aiohttp"] if e == "fast" else None) for e in engines]
         + [(f"`{HELLO_PATH}` full app ÷ bare hello, {e} engine", f"hello-{e}", f"bare-{e}",
             FAST_GOALS["app"] if e == "fast" else None) for e in engines]
         + [(f"`{HELLO_PATH}` full app, {e} engine ÷ stock Tornado", f"hello-{e}", "stock", None)
            for e in engines]
         + [(f"`{HELLO_PATH}` full app, {e} engine ÷ aiohttp", f"hello-{e}", "aiohttp", None)
            for e in engines],
         "what": "Closed loop, 100 keep-alive connections. `GET /` answering `Hello, world` "
                 "(text/plain) from stock Tornado (`HTTPServer` + `Application`, "
                 "`bench/baselines/tornado_hello.py`), from aiohttp "
                 "(`bench/baselines/aiohttp_hello.py`) and from the same one-route Tornado "
                 "`Application` on the project's HTTP server of each engine "
                 "(`bench/baselines/project_hello.py`, via `server.lifecycle.make_http_server`); "
                 f"and `GET {HELLO_PATH}` (JSON) through the project's full application "
                 "(`python -m server --access-log off`, metrics on).",
         "read": "a ratio above 1.00x means the project answers more requests per second than "
                 "that baseline on the same single core."},
        {"id": "accesslog", "title": "Suite 2: full app with access log and metrics vs bare hello",
         "targets": [*per_engine("logged-{e}"), *per_engine("bare-{e}")],
         "ratios": [(f"full app + access log, {e} engine ÷ bare hello, {e} engine", f"logged-{e}",
                     f"bare-{e}", FAST_GOALS["app"] if e == "fast" else None) for e in engines],
         "what": f"`GET {HELLO_PATH}` (JSON) through the full application with "
                 "`--access-log combined` (stderr redirected to a file) and metrics on, vs the "
                 "bare hello `Application` on the same engine.",
         "read": "the ratio is the share of the bare engine's throughput left after routing, "
                 "request ids, JSON, metrics and the access log."},
        {"id": "metrics", "title": "Suite 3: metrics on vs off",
         "targets": [*per_engine("metrics-{e}"), *per_engine("nometrics-{e}"),
                     *per_engine("twin-{e}")],
         "ratios": [(f"metrics on ÷ --no-metrics, {e} engine, one after the other (req/s)",
                     f"metrics-{e}", f"nometrics-{e}", None) for e in engines]
         + [(f"control: metrics on ÷ its twin, {e} engine, one after the other (req/s)",
             f"metrics-{e}", f"twin-{e}", None) for e in engines],
         "what": f"`GET {HELLO_PATH}` through the full application with `--access-log off`: "
                 "metrics on (the default) vs `--no-metrics`, two servers whose command lines "
                 "differ in `--no-metrics` alone and which serve nothing else (Suite 1's "
                 "full-app server also serves Suites 4 and 5). Measured three ways: one server "
                 "after the other (req/s, like the other suites); both loaded at once, sharing "
                 "CPU 0, each by its own load generator with half the connections on CPU 1 "
                 "(requests per CPU second of each server, from /proc); and in one process "
                 "without sockets (`bench.app_cpu`, below). A third server, the metrics-on "
                 "server's twin (the same command), runs beside them the same way as a control: "
                 "its ratios show what two identical servers read.",
         "read": "1 minus the ratio is what recording the metrics of every request costs. The "
                 "goal is judged on the side-by-side and in-process ratios: one-after-the-other "
                 "runs of two processes differ by up to ±10% on this machine even when the "
                 "servers are identical (other tenants, each process's own layout), more than "
                 "the effect measured; the control rows show how far two identical servers "
                 "stay from 1.00x in each way of measuring."},
        {"id": "guestbook", "title": "Suite 4: guestbook first page from the cache vs hello",
         "targets": [*per_engine("messages-{e}"), *per_engine("hello-{e}")],
         "ratios": [(f"`/api/messages` ÷ `{HELLO_PATH}`, {e} engine", f"messages-{e}", f"hello-{e}",
                     (">=", 0.70)) for e in engines],
         "what": f"`GET /api/messages` (the first page, 20 of {SEED_MESSAGES} messages posted "
                 "before the runs, served from the memory cache) vs "
                 f"`GET {HELLO_PATH}` on the same server (`--post-rate off --access-log off`).",
         "read": "the ratio is how close a cached page of 20 messages comes to a greeting."},
        {"id": "files", "title": "Suite 5: a 4 KB file, /files/ vs Tornado's StaticFileHandler",
         "targets": [*per_engine("files-{e}"), "stock-files"],
         "ratios": [(f"`/files/4k.bin`, {e} engine ÷ stock StaticFileHandler", f"files-{e}",
                     "stock-files", None) for e in engines],
         "what": "`GET /files/4k.bin` (4,096 bytes) from `python -m server --files DIR` vs "
                 "stock Tornado's `StaticFileHandler` serving the same directory at `/files/`.",
         "read": "a ratio above 1.00x means the project's file handler (with its listing, "
                 "dot-file and symlink checks) serves more files per second than Tornado's own."},
    ]


def one_run(env: Env, server: Server, url: str, cpu: int | None, threads: int = 1,
            check_cpu: bool = True, script: tuple[str, ...] = ()) -> dict:
    """One closed-loop run, repeated while the server did not get its core (other load)."""
    a = env.args
    for attempt in range(1, MAX_ATTEMPTS + 1):
        busy = env.quiet.wait(env.log)
        before = server.cpu_seconds()
        try:
            res = closed_loop(env.tool, url, a.connections, a.seconds, cpu, threads, script)
        except Exception as exc:  # one failed run is reported, not fatal to the whole suite
            return {"rps": None, "error": str(exc)[-500:]}
        res.update(server_cpu=100 * (server.cpu_seconds() - before) / res["wall_s"], busy=busy,
                   attempts=attempt)
        res["disturbed"] = check_cpu and res["server_cpu"] < MIN_SERVER_CPU
        if not res["disturbed"] or env.quiet.exhausted:
            break
        env.quiet.lost_s += res["wall_s"]
        print(f"  server got {res['server_cpu']:.0f}% of its core (other load): repeating",
              file=env.log, flush=True)
    return res


def side_by_side(env: Env, pair: list[Server], path: str) -> list[dict]:
    """Two servers on their shared core loaded at the same time, each by its own load generator.

    Returns each server's requests per CPU second. Runs of two servers one after the other differ
    by up to ±10% on this machine even when the servers are identical (other tenants, the
    process's own layout); two servers measured in the same seconds share those conditions, so
    their ratio keeps only what differs between them. ``closed_loop`` runs in threads (each
    waits on its own load-generator process).
    """
    a = env.args
    env.quiet.wait(env.log)
    before = [s.cpu_seconds() for s in pair]
    with ThreadPoolExecutor(len(pair)) as pool:
        runs = list(pool.map(lambda s: _run_or_error(env, s.url + path, a.connections // 2), pair))
    used = [s.cpu_seconds() - cpu0 for s, cpu0 in zip(pair, before, strict=True)]
    wall = max((run.get("wall_s") or 0 for run in runs), default=0)
    # together they should have had the whole core; less means other load took part of it
    disturbed = wall > 0 and 100 * sum(used) / wall < MIN_SERVER_CPU
    return [{**run, "cpu_s": cpu, "disturbed": disturbed,
             "per_cpu_s": run["rps"] * run["wall_s"] / cpu if run.get("rps") and cpu > 0 else None}
            for run, cpu in zip(runs, used, strict=True)]


def _run_or_error(env: Env, url: str, connections: int) -> dict:
    try:
        return closed_loop(env.tool, url, max(1, connections), env.args.seconds, env.client_cpu)
    except Exception as exc:  # one failed run is reported, not fatal to the whole suite
        return {"rps": None, "error": str(exc)[-500:]}


def side_by_side_rows(engines: list[str], samples: dict) -> list[dict]:
    """Suite 3's side-by-side ratios: metrics on ÷ off, and the control (two identical servers)."""
    rows = []
    for e in engines:
        for pair, label, goal in (
                ("onoff", f"metrics on ÷ --no-metrics, {e} engine, both loaded at once "
                          "(requests per CPU second)", (">=", 0.95)),
                ("twins", f"control: metrics on ÷ its twin, {e} engine, both loaded at once "
                          "(requests per CPU second)", None)):
            runs = samples[f"{pair}-{e}"]
            ratios = [a["per_cpu_s"] / b["per_cpu_s"] if a["per_cpu_s"] and b["per_cpu_s"] else None
                      for a, b in runs]
            rows.append(row(label, "ratio", ratios, [a["disturbed"] for a, _ in runs], goal=goal))
    return rows


def seed_guestbook(url: str, count: int) -> None:
    """Post ``count`` messages, then read the first page once so the cache holds it."""
    for i in range(count):
        body = json.dumps({"name": f"bench {i}", "text": f"message {i} from the bench suite"})
        req = urllib.request.Request(url + "/api/messages", data=body.encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            if resp.status != 201:
                raise RuntimeError(f"seeding the guestbook at {url}: POST answered {resp.status}")
    urllib.request.urlopen(url + "/api/messages", timeout=10).read()


def rounds_over(items: list, rounds: int):
    """(round index, item) in ABBA order: forward, backward, ... so drift cancels out of ratios."""
    for r in range(rounds):
        for item in (items if r % 2 == 0 else items[::-1]):
            yield r, item


def round_argv(argv: list[str], r: int) -> list[str]:
    """A server's command for round r: the same, with a data directory of its own."""
    if "--data-dir" not in argv:
        return argv
    i = argv.index("--data-dir") + 1
    return [*argv[:i], f"{argv[i]}-round{r + 1}", *argv[i + 1:]]


def run_throughput(env: Env, engines: list[str], wanted: set[str]
                   ) -> tuple[list[dict], dict, dict]:
    """Scenarios 1-5 side by side, pinned; every round starts fresh server processes.

    Two processes of the same server can differ by several per cent in req/s over many runs
    (address layout, hash seed: two identical servers read 0.94-0.95x of each other in three of
    four rounds), so servers kept across rounds make that luck a fixed bias of a ratio; a fresh
    process per round samples it instead.
    """
    a = env.args
    specs, targets, sections = throughput_plan(engines, wanted, env.tmp)
    if not targets:
        return [], {}, {}
    samples: dict[str, list] = {t.key: [None] * a.rounds for t in targets}
    side: dict[str, list] = {}  # Suite 3's side-by-side pairs: [on, off] / [metrics, twin] per round
    for r in range(a.rounds):
        servers = start_all({k: round_argv(v, r) for k, v in specs.items()}, env.tmp,
                            env.server_cpus)
        try:
            for key, server in servers.items():
                if key.startswith("full-"):
                    seed_guestbook(server.url, SEED_MESSAGES)
            if a.warmup:
                for t in targets:
                    try:
                        closed_loop(env.tool, servers[t.server].url + t.path, a.connections, 1,
                                    env.client_cpu)
                    except Exception as exc:
                        print(f"  warm-up of {t.key} failed: {exc}", file=env.log, flush=True)
            for t in (targets if r % 2 == 0 else targets[::-1]):
                res = one_run(env, servers[t.server], servers[t.server].url + t.path,
                              env.client_cpu)
                samples[t.key][r] = res
                print(f"[round {r + 1}/{a.rounds}] {t.key}: " + (
                    f"{res['rps']:,.0f} req/s, server CPU {res['server_cpu']:.0f}%, "
                    f"errors {res['errors']}" if res["rps"] is not None
                    else f"failed: {res['error']}"), file=env.log, flush=True)
            if "metrics" in wanted:
                for e in engines:
                    for pair, keys in (("onoff", [f"metrics-{e}", f"nometrics-{e}"]),
                                       ("twins", [f"metrics-{e}", f"twin-{e}"])):
                        keys = keys if r % 2 == 0 else keys[::-1]
                        res = side_by_side(env, [servers[k] for k in keys], HELLO_PATH)
                        side.setdefault(f"{pair}-{e}", []).append(res if r % 2 == 0 else res[::-1])
                        print(f"[round {r + 1}/{a.rounds}] side by side {keys}: " + ", ".join(
                            f"{x['per_cpu_s']:,.0f} req per CPU s" if x["per_cpu_s"]
                            else f"failed: {x.get('error')}" for x in res), file=env.log, flush=True)
        finally:
            stop_all(servers)
    labels = {t.key: t.label for t in targets}
    out = []
    for s in sections:
        rows = [row(labels[k], "rps", [x["rps"] for x in samples[k]],
                    [x.get("disturbed", False) for x in samples[k]]) for k in s["targets"]]
        for label, num, den, goal in s["ratios"]:
            ratios = [n["rps"] / d["rps"] if n["rps"] and d["rps"] else None
                      for n, d in zip(samples[num], samples[den], strict=True)]
            marks = [bool(n.get("disturbed") or d.get("disturbed"))
                     for n, d in zip(samples[num], samples[den], strict=True)]
            rows.append(row(label, "ratio", ratios, marks, goal=goal))
        used = list(dict.fromkeys(t.server for k in s["targets"] for t in targets if t.key == k))
        loads = [env.load(a.connections)]
        if s["id"] == "metrics":
            rows += side_by_side_rows(engines, side)
            loads.append(env.load(a.connections // 2) + "  # side by side: one per server, at once")
        errors = sum(x.get("errors") or 0 for k in s["targets"] for x in samples[k])
        out.append({**{k: s[k] for k in ("id", "title", "what", "read")}, "rows": rows,
                    "commands": [env.show(specs[k]) for k in used] + loads,
                    "notes": [f"Request errors over these runs: {errors}. " + DISTURBED_NOTE]})
    return out, {t.key: {"label": t.label, "server": t.server, "path": t.path,
                         "samples": samples[t.key]} for t in targets}, side


def run_app_cpu(env: Env, section: dict) -> dict:
    """Suite 3's second measure: CPU per request in one process, no sockets (bench.app_cpu)."""
    a = env.args
    cmd = ["-m", "bench.app_cpu", "--rounds", str(a.rounds), "--requests", str(a.app_requests)]
    env.quiet.wait(env.log)
    proc = subprocess.run([sys.executable, *cmd], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, preexec_fn=_pin(min(env.server_cpus) if env.server_cpus
                                                       else None))
    if proc.returncode != 0:
        samples = {k: [None] * a.rounds for k in ("bare", "metrics", "nometrics")}
        print(f"bench.app_cpu failed: {proc.stderr[-500:]}", file=env.log, flush=True)
    else:
        samples = json.loads(proc.stdout)["samples"]
    print(f"[app_cpu] {samples}", file=env.log, flush=True)
    section["rows"] += [
        row("bare hello `/`, CPU per request in process", "us", samples["bare"]),
        row(f"`{HELLO_PATH}` metrics on, CPU per request in process", "us", samples["metrics"]),
        row(f"`{HELLO_PATH}` --no-metrics, CPU per request in process", "us", samples["nometrics"]),
        row("metrics on ÷ --no-metrics, in process (requests per CPU second)", "ratio",
            [off / on if on and off else None
             for on, off in zip(samples["metrics"], samples["nometrics"], strict=True)], goal=(">=", 0.95)),
    ]
    section["commands"].append(env.show(cmd))
    section["notes"].append(
        "The in-process rows come from `python -m bench.app_cpu`: one process builds the bare "
        "hello `Application` and the full application twice (metrics on, `--no-metrics`) and "
        f"feeds each {a.app_requests:,} `GET`s per round through `Application.start_request` "
        "on an in-memory connection, alternating them. It measures the application's own CPU "
        "cost free of the loopback and scheduler effects that move closed-loop runs of identical servers by "
        "several per cent (two identical server processes read 0.93-1.11x of each other in 4 s "
        "runs).")
    return samples


DISTURBED_NOTE = ("A value marked * comes from a run in which the server got under "
                  f"{MIN_SERVER_CPU:.0f}% of its core (other load on the machine) even after "
                  "repeating it; marked values stay out of the medians unless every round is "
                  "marked.")


def run_processes(env: Env, engines: list[str]) -> tuple[list[dict], dict]:
    """Scenario 8: ``--processes 2`` vs 1, unpinned, with a two-thread load generator."""
    a = env.args
    specs = {}
    for e in engines:
        for n in (1, 2):
            specs[f"p{n}-{e}"] = project_argv(e, env.tmp / f"data-p{n}-{e}", "--access-log", "off",
                                              *(["--processes", "2"] if n == 2 else []))
    servers = start_all(specs, env.tmp, None)
    samples: dict[str, list] = {k: [None] * a.rounds for k in specs}
    try:
        for r, key in rounds_over(list(specs), a.rounds):
            res = one_run(env, servers[key], servers[key].url + HELLO_PATH, None, threads=2,
                          check_cpu=False)
            samples[key][r] = res
            print(f"[round {r + 1}/{a.rounds}] {key}: " + (
                f"{res['rps']:,.0f} req/s, server CPU {res['server_cpu']:.0f}%"
                if res["rps"] is not None else f"failed: {res['error']}"), file=env.log, flush=True)
    finally:
        stop_all(servers)
    rows = []
    for e in engines:
        one, two = samples[f"p1-{e}"], samples[f"p2-{e}"]
        rows += [row(f"1 process, {e} engine req/s", "rps", [x["rps"] for x in one]),
                 row(f"2 processes, {e} engine req/s", "rps", [x["rps"] for x in two]),
                 row(f"2 processes ÷ 1, {e} engine", "ratio",
                     [t["rps"] / o["rps"] if t["rps"] and o["rps"] else None
                      for o, t in zip(one, two, strict=True)], goal=(">=", 1.7)),
                 row(f"server CPU with 2 processes, {e} engine", "pct",
                     [x.get("server_cpu") for x in two])]
    section = {
        "id": "processes", "title": "Suite 8: --processes 2 vs 1",
        "what": f"`GET {HELLO_PATH}` through the full application (`--access-log off`), one "
                "server process vs `--processes 2` (a supervisor and two workers on per-worker "
                "SO_REUSEPORT sockets). Nothing is pinned here: the server may use both cores, "
                "and the load generator runs with two threads on the same two cores.",
        "commands": [env.show(v, pinned=False) for v in specs.values()]
        + [env.load(a.connections, threads=2, pinned=False)],
        "rows": rows,
        "read": "the load generator shares the machine's two cores with the server, so two "
                "server processes cannot each get a full core; the server CPU row shows how "
                "much of the two cores (200%) they got. The ratio is the gain on this 2-CPU "
                "machine with its client, not the server's scaling alone.",
    }
    return [section], samples


def run_slow(env: Env, engines: list[str]) -> tuple[list[dict], dict]:
    """Scenario 7: N concurrent ``/api/slow?ms=M`` on N open connections; wall time for all."""
    a = env.args
    specs = {f"slow-{e}": project_argv(e, env.tmp / f"data-slow-{e}", "--access-log", "off")
             for e in engines}
    servers = start_all(specs, env.tmp, env.server_cpus)
    samples: dict[str, list] = {k: [None] * a.slow_rounds for k in specs}
    path = f"/api/slow?ms={a.slow_ms}"
    try:
        for r, key in rounds_over(list(specs), a.slow_rounds):
            env.quiet.wait(env.log)
            proc = subprocess.run([sys.executable, "-m", "bench.suite_slow", servers[key].url + path,
                                   "-c", str(a.slow_connections)], cwd=ROOT, capture_output=True,
                                  text=True, timeout=120, preexec_fn=_pin(env.client_cpu))
            res = json.loads(proc.stdout) if proc.returncode == 0 else {"wall_s": None,
                                                                         "error": proc.stderr[-500:]}
            samples[key][r] = res
            print(f"[round {r + 1}/{a.slow_rounds}] {key}: {res}", file=env.log, flush=True)
    finally:
        stop_all(servers)
    limit = 1.2 * a.slow_ms / 1000
    rows = []
    for e in engines:
        s = samples[f"slow-{e}"]
        rows += [row(f"wall time for all {a.slow_connections:,}, {e} engine", "s",
                     [x["wall_s"] for x in s], goal=("<=", limit)),
                 row(f"answered 200, {e} engine", "count", [x.get("ok") for x in s])]
    section = {
        "id": "slow", "title": f"Suite 7: {a.slow_connections:,} concurrent /api/slow?ms={a.slow_ms}",
        "what": f"`python -m bench.suite_slow` opens {a.slow_connections:,} connections, then "
                f"sends `GET {path}` on every one at once and times from the first write to the "
                "last complete response (the connects are not timed). Server: "
                "`python -m server --access-log off` on CPU 0, client on CPU 1.",
        "commands": [env.show(v) for v in specs.values()]
        + [(f"taskset -c {env.client_cpu} " if env.client_cpu is not None else "")
           + f"python -m bench.suite_slow 'URL{path}' -c {a.slow_connections}"],
        "rows": rows,
        "goal": None,
        "read": f"the waits overlap when the wall time is close to {a.slow_ms} ms; the rest is "
                "the time to parse, dispatch and answer every request on one core (the goal "
                "allows 20% over the wait).",
    }
    return [section], samples


def gc_pauses(base_url: str) -> tuple[float, int]:
    """Seconds the server's collector has stopped it, and its full collections, from /metrics."""
    with urllib.request.urlopen(base_url + "/metrics", timeout=30) as resp:
        text = resp.read().decode()
    seconds, full = 0.0, 0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "python_gc_pause_seconds_sum":
                seconds += sample.value
            elif sample.name == "python_gc_pause_seconds_count" and sample.labels["generation"] == "2":
                full = int(sample.value)
    return seconds, full


def hold_once(env: Env, key: str, argv: list[str], path: str) -> dict:
    """A fresh server; N hold-mode connections; RSS per connection and a probe's latency."""
    a = env.args
    env.quiet.wait(env.log)
    server = Server(key, argv, env.tmp / f"hold-{key}.log", env.server_cpus)
    try:
        base = server.wait_ready()
        url = base + path
        project = argv[:2] == ["-m", "server"]  # the baselines have no /metrics
        settle = min(1.0, a.probe_seconds)
        run_bench(url, ["-c", "1", "-d", f"{settle:g}s"], 60, env.client_cpu)  # first allocations
        gc0 = gc_pauses(base) if project else None
        fds0, rss0 = server.open_files(), server.rss_kb()
        hold, report = start_bench(url, ["-c", str(a.hold_connections), "--ramp", "100/10ms",
                                         "--interval", "1-10s", "--warmup", "1s", "-d", "300s",
                                         "-m", "GET"], env.client_cpu)
        try:
            deadline = time.monotonic() + 30  # 100 per 10 ms: 10,000 take 1 s when all is well
            while (server.open_files() - fds0 < a.hold_connections and hold.poll() is None
                   and time.monotonic() < deadline):
                time.sleep(0.1)
            time.sleep(settle)  # the ramp's first requests finish
            conns, rss1 = server.open_files() - fds0, server.rss_kb()
            probe = run_bench(url, ["-c", "1", "-d", f"{a.probe_seconds:g}s"],
                              a.probe_seconds + 60, env.client_cpu)
            gc1 = gc_pauses(base) if project else None
        finally:
            if hold.poll() is None:
                hold.send_signal(signal.SIGINT)  # bench ends early, still writes its report
            held = finish_bench(hold, report, ok=(0, 130))
    finally:
        server.stop()
    # a probe that got no answer at all has no latency (bench reports zeros)
    lat = probe["latency_ms"] if probe["requests"]["responses_total"] else dict.fromkeys(
        ("p50", "p99", "max"))
    return {"rss_before_kb": rss0, "rss_after_kb": rss1, "connections": conns,
            "kb_per_connection": (rss1 - rss0) / conns if conns > 0 else None,
            "probe_p50_ms": lat["p50"], "probe_p99_ms": lat["p99"], "probe_max_ms": lat["max"],
            "probe_rps": probe["requests_per_s"],
            # while opening, holding and probing: time in collections, full collections
            "gc_pause_ms": 1000 * (gc1[0] - gc0[0]) if project else None,
            "gc_full": gc1[1] - gc0[1] if project else None,
            "hold_errors": held["requests"]["errors_total"] + held["connections"]["failed_total"],
            "hold_open_at_end": held["connections"]["open_at_end"],
            "hold_closed_by_server": held["connections"]["closed_by_server"]}


def run_hold(env: Env, engines: list[str]) -> tuple[list[dict], dict]:
    """Scenario 6: idle keep-alive connections, memory per connection and a probe's p99."""
    a = env.args
    kinds = {f"full-{e}": (project_argv(e, env.tmp / f"data-hold-{e}", "--access-log", "off"),
                           "/healthz", f"project, {e} engine") for e in engines}
    # the same server with the collector as Python sets it: what --gc-freeze / --gc-threshold buy
    kinds.update({f"gcdefault-{e}": (project_argv(e, env.tmp / f"data-hold-gc-{e}", "--access-log",
                                                  "off", "--no-gc-freeze", "--gc-threshold", ""),
                                     "/healthz", f"project, {e} engine, Python's GC defaults")
                  for e in engines})
    kinds["stock"] = (["-m", "bench.baselines.tornado_hello"], "/", "stock Tornado")
    kinds["aiohttp"] = (["-m", "bench.baselines.aiohttp_hello"], "/", "aiohttp")
    samples: dict[str, list] = {k: [None] * a.hold_rounds for k in kinds}
    for r, key in rounds_over(list(kinds), a.hold_rounds):
        argv, path, _ = kinds[key]
        try:
            samples[key][r] = res = hold_once(env, key, argv, path)
        except Exception as exc:  # reported in the table as failed
            samples[key][r] = res = {"error": str(exc)[-500:]}
        print(f"[round {r + 1}/{a.hold_rounds}] hold {key}: {res}", file=env.log, flush=True)
    # a run in which the server did not get every connection, or the holding client saw errors,
    # happened on an overloaded machine: marked, and out of the medians when others are clean
    marks = {k: [x.get("connections", 0) < a.hold_connections or x.get("hold_errors", 1) > 0
                 for x in v] for k, v in samples.items()}
    def ratio_row(label: str, field: str, num: str, den: str) -> dict:
        return row(label, "ratio", [n[field] / d[field] if n.get(field) is not None and d.get(field)
                                    else None for n, d in zip(samples[num], samples[den], strict=True)],
                   [m or n for m, n in zip(marks[num], marks[den], strict=True)])

    rows = []
    for field, kind, what, goal in (("kb_per_connection", "kb", "KB per connection", 4.0),
                                    ("probe_p99_ms", "ms", "probe p99 ms", 5.0)):
        for key, (_, _, label) in kinds.items():
            rows.append(row(f"{what}, {label}", kind, [x.get(field) for x in samples[key]],
                            marks[key], goal=("<=", goal) if key == "full-fast" else None))
        for e in engines:
            p_key = f"full-{e}"
            for den, label in (("stock", f"project, {e} engine ÷ stock Tornado"),
                               (f"gcdefault-{e}", f"{e} engine, GC tuned ÷ Python's GC defaults")):
                rows.append(ratio_row(f"{what}: {label}", field, p_key, den))
    for field, kind, what in (("gc_pause_ms", "ms", "GC pauses, ms in all"),
                              ("gc_full", "count", "full collections (generation 2)")):
        for e in engines:
            for key in (f"full-{e}", f"gcdefault-{e}"):
                rows.append(row(f"{what}, {kinds[key][2]}", kind,
                                [x.get(field) for x in samples[key]], marks[key]))
    rows += [ratio_row(f"GC pauses: {e} engine, GC tuned ÷ Python's GC defaults", "gc_pause_ms",
                       f"full-{e}", f"gcdefault-{e}") for e in engines]
    every = [x for v in samples.values() for x in v if x and "connections" in x]
    n = a.hold_connections
    section = {
        "id": "hold", "title": f"Suite 6: {n:,} idle keep-alive connections",
        "what": f"A fresh server per run on CPU 0. After a 1 s warm-up probe its VmRSS is read, "
                f"then `python -m bench` opens {n:,} keep-alive connections (100 every 10 ms; each "
                "sends a GET at connect and then one every 1-10 s); once the server holds them "
                "(counted in /proc/PID/fd) VmRSS is read again, and a second `python -m bench` "
                f"probes with one connection in a closed loop for {a.probe_seconds:g} s. "
                "KB per connection = (RSS with the connections - RSS before) / connections. "
                "Paths: `/healthz` on the project's server (`--access-log off`), `/` on the "
                "baselines. The project's server runs twice per engine: as it starts by default "
                "(`--gc-freeze`: start-up objects frozen out of collections; `--gc-threshold "
                "5000,10,10`) and with the collector as Python sets it (`--no-gc-freeze "
                "--gc-threshold ''`: 700,10,10, nothing frozen). Both clients on CPU 1. The soft "
                "open-file limit of each server is raised to the hard limit before it starts. "
                "GC pauses: the growth of the project's `python_gc_pause_seconds` (/metrics, "
                "every generation; timed with `gc.callbacks`) from before the connections open "
                "until after the probe.",
        "commands": [env.show(argv) for argv, _, _ in kinds.values()] + [
            (f"taskset -c {env.client_cpu} " if env.client_cpu is not None else "")
            + f"python -m bench URL -c {n} --ramp 100/10ms --interval 1-10s --warmup 1s "
              "-d 300s -m GET  # stopped with SIGINT after the probe",
            (f"taskset -c {env.client_cpu} " if env.client_cpu is not None else "")
            + f"python -m bench URL -c 1 -d {a.probe_seconds:g}s"],
        "rows": rows,
        "goal": "the project as it starts by default: at most 4 KB per connection and a probe "
                "p99 of at most 5 ms (ARCHITECTURE.md measured stock Tornado at about 9 KB per "
                "connection and a 75 ms p99 with 10,000 connections open)",
        "read": "ratios below 1.00x mean the project needs less memory per connection, or "
                "answers the probe faster, than stock Tornado holding the same connections; "
                "'GC tuned ÷ Python's GC defaults' below 1.00x is what the collector settings "
                "buy the probe while the connections are open.",
        "notes": [f"Connections the servers held when measured: min "
                  f"{min((x['connections'] for x in every), default=0):,}; errors of the holding "
                  f"client: {sum(x['hold_errors'] for x in every)}; connections closed by a "
                  f"server: {sum(x['hold_closed_by_server'] for x in every)}. A value marked * "
                  "comes from a run in which the server held fewer connections than asked or "
                  "the holding client saw errors (an overloaded machine); marked values stay "
                  "out of the medians unless every round is marked. The probe's p99 is the "
                  "figure most sensitive to other load on the machine."],
    }
    return [section], samples


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command line; ``--quick`` changes the defaults, explicit options still win."""
    p = argparse.ArgumentParser(prog="python -m bench.suite", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="about 2 minutes: 1 s runs, no warm-up, 2,000 held connections, "
                        "1 round of hold and slow")
    p.add_argument("--rounds", type=int, help="interleaved rounds of closed-loop runs (default 3)")
    p.add_argument("--seconds", type=float, help="seconds per closed-loop run (default 5, max 10)")
    p.add_argument("-c", "--connections", type=int, default=100, help="closed-loop connections")
    p.add_argument("--tool", choices=("auto", "wrk", "bench"), default="auto",
                   help="closed-loop load generator: wrk when installed (auto), or python -m bench")
    p.add_argument("--engines", help="comma list of engines (default: tornado, and fast when "
                                     "server.engine imports)")
    p.add_argument("--only", help=f"comma list of scenarios: {','.join(SCENARIOS)} (default: all "
                                  f"but {', '.join(sorted(OPT_IN))})")
    p.add_argument("--hold-connections", type=int, help="hold scenario connections (default 10000)")
    p.add_argument("--probe-seconds", type=float, help="hold scenario probe run (default 5)")
    p.add_argument("--hold-rounds", type=int, help="hold scenario rounds (default 3)")
    p.add_argument("--slow-connections", type=int, default=1000)
    p.add_argument("--slow-ms", type=int, default=1000)
    p.add_argument("--slow-rounds", type=int, help="slow scenario rounds (default 3)")
    p.add_argument("--app-requests", type=int,
                   help="requests per variant and round of Suite 3's in-process measure "
                        "(bench.app_cpu; default 20000, --quick 3000)")
    p.add_argument("--tfb-types", help="techempower: comma list of test types (default: all seven)")
    p.add_argument("--tfb-pool", type=int, default=8,
                   help="techempower: database connections per server process (default 8)")
    p.add_argument("--no-tfb-processes", action="store_true",
                   help="techempower: skip --processes 2 vs 1")
    p.add_argument("--tfb-against", metavar="GIT_REF",
                   help="techempower: also measure this server as of GIT_REF (a temporary git "
                        "worktree) in the same run, for before/after ratios of a change")
    p.add_argument("--no-warmup", dest="warmup", action="store_false", default=None,
                   help="skip the 1 s warm-up run of every target")
    p.add_argument("--no-wait", action="store_true", help="do not wait for a quiet machine")
    p.add_argument("--wait-budget", type=float,
                   help="seconds the suite may lose to other load: waiting for a quiet machine "
                        "and repeating disturbed runs (default 180, --quick 45)")
    p.add_argument("--no-pin", action="store_true", help="no CPU pinning")
    p.add_argument("--out", default=str(ROOT / "artifacts"), help="directory of bench-suite.json")
    p.add_argument("--markdown", default=str(ROOT / "BENCHMARKS.md"),
                   help="file whose suite sections are replaced ('' = do not write)")
    args = p.parse_args(argv)
    quick = args.quick
    defaults = {"rounds": 3, "seconds": 1.0 if quick else 5.0, "warmup": not quick,
                "hold_connections": 2000 if quick else 10000, "probe_seconds": 2.0 if quick else 5.0,
                "hold_rounds": 1 if quick else 3, "slow_rounds": 1 if quick else 3,
                "wait_budget": 45.0 if quick else 180.0,
                "app_requests": 3000 if quick else 20000}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if not 0 < args.seconds <= 10:
        p.error("--seconds must be more than 0 and at most 10")
    if args.rounds < 1 or args.hold_rounds < 1 or args.slow_rounds < 1:
        p.error("rounds must be at least 1")
    args.only = set(SCENARIOS) - OPT_IN if not args.only else set(args.only.split(","))
    if args.only - set(SCENARIOS):
        p.error(f"unknown scenario(s): {', '.join(sorted(args.only - set(SCENARIOS)))}")
    return args


def available_engines(requested: str | None) -> tuple[list[str], list[str]]:
    """Engines to measure and notes on any left out (the fast engine may not import yet)."""
    try:
        from server.engine import FastHTTPServer  # noqa: F401
        fast, why = True, ""
    except Exception as exc:  # the engine is being written; any import failure means "not yet"
        fast, why = False, f"{type(exc).__name__}: {exc}"
    engines = requested.split(",") if requested else ["tornado", "fast"]
    if "fast" in engines and not fast:
        engines.remove("fast")
        return engines, [f"The fast engine is not measured: `from server.engine import "
                         f"FastHTTPServer` failed ({why})."]
    return engines, []


def main(argv: list[str] | None = None) -> int:
    """Run the selected scenarios; exit status 1 when any run failed (not when a goal is missed)."""
    args = parse_args(argv)
    log = sys.stderr
    started, load_start = time.monotonic(), os.getloadavg()
    engines, notes = available_engines(args.engines)
    for note in notes:
        print(note, file=log, flush=True)
    if args.tool == "bench":
        tool = "bench"
    else:
        tool = shutil.which("wrk") or ("bench" if args.tool == "auto" else "")
        if not tool:
            print("bench.suite: --tool wrk: wrk is not installed (apt-get install wrk)", file=log)
            return 2
    pin = not args.no_pin and (os.cpu_count() or 1) >= 2 and hasattr(os, "sched_setaffinity")
    quiet = Quiet(patience=10.0 if args.quick else 30.0, budget=args.wait_budget,
                  sample_s=0.5 if args.quick else 1.0, enabled=not args.no_wait)
    tmp = Path(tempfile.mkdtemp(prefix="bench-suite-"))
    env = Env(args, {0} if pin else None, 1 if pin else None, tool, tmp, quiet, log)
    (tmp / "files").mkdir()
    (tmp / "files" / "4k.bin").write_bytes(os.urandom(4096))
    sections, raw = [], {}
    try:
        wanted = args.only & set(THROUGHPUT)
        if wanted:
            found, raw["throughput"], raw["side_by_side"] = run_throughput(env, engines, wanted)
            sections += found
        if "metrics" in args.only:
            raw["app_cpu"] = run_app_cpu(env, next(s for s in sections if s["id"] == "metrics"))
        for name, runner in (("hold", run_hold), ("slow", run_slow), ("processes", run_processes)):
            if name in args.only:
                found, raw[name] = runner(env, engines)
                sections += found
        if "techempower" in args.only:
            tfb = run_techempower(env, engines)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    order = {name: i for i, name in enumerate(SCENARIOS)}
    sections.sort(key=lambda s: order[s["id"]])
    for s in sections:
        s["notes"] = s.get("notes", []) + notes
    runs = [x for v in raw.get("throughput", {}).values() for x in v["samples"] if x]
    disturbed = (sum(1 for x in runs if x.get("disturbed")), len(runs))
    setup = describe(args, argv, tool, env, engines, notes, load_start, time.monotonic() - started,
                     disturbed)
    out = Path(args.out)
    failed = False
    if "techempower" in args.only:
        summary, tfb_raw, violations = tfb
        print(write_techempower(env, setup, summary, tfb_raw, out, args.markdown))
        print(f"wrote {out / 'bench-techempower.json'}" + (
            f" and {args.markdown}" if args.markdown else ""), file=log)
        failed = bool(violations) or any(
            x is None or x.get("rps") is None for t in tfb_raw["types"].values()
            for runs in t.values() for x in runs)
        if violations:
            print(f"bench.suite: {len(violations)} TechEmpower rule(s) broken", file=log)
    if not sections:
        return 1 if failed else 0
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench-suite.json").write_text(json.dumps(
        {"setup": setup, "sections": sections, "raw": raw}, indent=1, default=str) + "\n")
    block = render(setup, sections)
    print(block)
    if args.markdown:
        write_block(Path(args.markdown), block)
        print(f"wrote {args.markdown} and {out / 'bench-suite.json'}", file=log)
    failed = failed or any(v is None for s in sections for r in s["rows"] for v in r["values"])
    return 1 if failed else 0


def describe(args, argv, tool: str, env: Env, engines: list[str], notes: list[str],
             load_start: tuple, elapsed: float, disturbed: tuple[int, int]) -> dict:
    """The setup: machine, versions, command, pinning, the load seen and the time taken."""
    cmd = shlex.join(["python", "-m", "bench.suite", *(sys.argv[1:] if argv is None else argv)])
    readings = env.quiet.readings
    tool_text = (_version([tool, "--version"]).split(" [")[0] if tool != "bench"
                 else "python -m bench")
    pinning = ("every server pinned to CPU 0 and the load generator to CPU 1 (taskset -c 0 / -c 1, "
               "set with sched_setaffinity), except in Suite 8" if env.server_cpus
               else "no CPU pinning")
    lines = [
        f"Produced by `{cmd}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} in "
        f"{elapsed / 60:.1f} minutes: {_cpu_model()}, {os.cpu_count()} CPUs, Linux "
        f"{platform.release()}, Python {platform.python_version()}, Tornado "
        f"{_package_version('tornado')}, aiohttp {_package_version('aiohttp')}, closed-loop "
        f"load: {tool_text}. Engines: {', '.join(engines)}.",
        "",
        f"Method: all servers of a scenario run side by side; {pinning}. Closed-loop runs: "
        f"{args.connections} keep-alive connections, {args.seconds:g} s each, "
        f"{'a 1 s warm-up run per target, ' if args.warmup else ''}{args.rounds} round(s) over "
        "every target, alternately forward and backward so a drift of the machine cancels out of "
        "the ratios; in Suites 1-5 every round starts its own server processes (two processes of "
        "one server can differ by several per cent over many runs). Each server's stderr (its "
        "log and access log) goes to a file. "
        "Ratios are medians of the per-round ratios; absolute req/s drift on this shared machine "
        "and are only comparable within one run.",
        "",
        f"Load seen: load average {load_start[0]:.2f} at the start, {os.getloadavg()[0]:.2f} at "
        f"the end; before each run the suite waited for other processes to use under "
        f"{env.quiet.limit} CPUs (bench.compare's quiet-machine check); waiting and repeated "
        f"runs took {env.quiet.lost_s:.0f} s (budget {env.quiet.budget:.0f} s); readings at the "
        f"start of runs: median {median(readings) or 0:.2f}, highest {max(readings, default=0):.2f} "
        "CPUs" + ("" if env.quiet.enabled else " (waiting was off: --no-wait)") + f". Scenarios "
        f"1-5: {disturbed[0]} of {disturbed[1]} closed-loop runs still disturbed (marked *).",
    ]
    lines += ["", *notes] if notes else []
    return {"cmd": cmd, "lines": lines, "engines": engines, "tool": tool_text,
            "pin": bool(env.server_cpus), "busy_readings": readings, "lost_s": env.quiet.lost_s,
            "loadavg_start": load_start, "elapsed_s": elapsed}


if __name__ == "__main__":
    sys.exit(main())
