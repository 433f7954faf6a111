"""Every pytest fixture of the suite lives here, so the async test plugin can be swapped in one file."""
import asyncio
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import tornado.httpclient
import tornado.ioloop
import tornado.testing
import tornado.web
from tornado.netutil import bind_sockets

from bench.pgserver import PostgresServer, postgres_bin_dir
from bench.ports import free_port
from helpers import PROJECT_ROOT, Api, LiveServer, RawClient, RedisServer, engine_test_routes, require
from server.config import Settings
from server.lifecycle import ServerRuntime

# its hooks (--reliability-report) and the reliability fixture
pytest_plugins = ["reliability"]

ARTIFACTS = PROJECT_ROOT / "artifacts"

CHROMIUM = "/usr/bin/chromium"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CI=true a skipped test is a failure: CI must never pass on a suite that did not run."""
    # imported here, not at the top: pytest_plugins must load the module first (to rewrite its asserts)
    from reliability import record_report
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("CI", "").lower() == "true" and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true: {report.longrepr}"
    record_report(item, report)


@pytest.fixture(scope="module")
def chromium_browser():
    """A headless Debian Chromium driven by Playwright (never a downloaded browser).

    Module-scoped: Playwright's sync API keeps an event loop running while it is open, which
    would stop pytest-tornado's loops in later modules; keep browser tests in modules of their own.
    """
    require(os.path.exists(CHROMIUM) or shutil.which("chromium") is not None,
            "chromium (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
            ],
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(chromium_browser):
    """A fresh browser page (own context: no cookies shared between tests)."""
    context = chromium_browser.new_context()
    try:
        yield context.new_page()
    finally:
        context.close()


# --- the server in this process, on pytest-tornado's event loop ---

@pytest.fixture(scope="session", autouse=True)
def main_thread_event_loop():
    """One explicit, finally closed event loop as the thread's default.

    Tornado's IOLoop remembers the thread's previous asyncio loop when it becomes current and
    restores it on close; without this, asyncio would create that loop implicitly and nobody
    would close it (a ResourceWarning whenever the garbage collector finds it).
    """
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield loop
    asyncio.set_event_loop(None)
    loop.close()


@pytest.fixture
def io_loop():
    """A fresh IOLoop per test (replaces pytest-tornado's, which calls the deprecated make_current)."""
    loop = tornado.ioloop.IOLoop()  # current for this thread until closed, as gen_test needs
    yield loop
    loop.close(all_fds=True)


@pytest.fixture
def _unused_port():
    """A loopback listening socket with a deep backlog.

    pytest-tornado's has 128: too few for 1,000 clients.
    """
    sock = bind_sockets(0, "127.0.0.1", family=socket.AF_INET, backlog=2048)[0]
    return sock, sock.getsockname()[1]


# Every in-process server test runs on each HTTP engine listed here
ENGINES = ["tornado", "fast"]


@pytest.fixture(params=ENGINES)
def engine(request):
    """The HTTP/1.1 engine under test."""
    return request.param


@pytest.fixture
def tornado_http_server(io_loop, engine):
    """Serve any Tornado application on the engine under test, built as HTTPServer(app, **options).

    ``await start(app, **options)`` returns the port; the servers stop at the end of the test.
    """
    from server.engine import FastHTTPServer
    from server.httpserver import DrainingHTTPServer
    servers = []

    async def start(app, **options):
        """A server on a free loopback port; its port."""
        server_class = FastHTTPServer if engine == "fast" else DrainingHTTPServer
        server = server_class(app, **options)
        sock = bind_sockets(0, "127.0.0.1", family=socket.AF_INET)[0]
        server.add_sockets([sock])
        servers.append(server)
        return sock.getsockname()[1]
    yield start
    for server in servers:
        server.stop()
        io_loop.run_sync(server.close_all_connections, timeout=10)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """(certificate, key) paths, made once for the module."""
    from helpers import make_certificate
    return make_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def raw_clients(io_loop):
    """``await raw_clients(port)``: a RawClient (tests/helpers.py), closed at the end of the test."""
    opened = []

    async def open_client(port):
        client = await RawClient.connect(port)
        opened.append(client)
        return client
    yield open_client
    for client in opened:
        client.close()
    io_loop.run_sync(lambda: asyncio.sleep(0.01))  # let the transports finish closing


@pytest.fixture
def server_settings(request, tmp_path, engine):
    """Test settings: loopback, one compute worker, 127.0.0.1 fetchable.

    @pytest.mark.server_settings(...) overrides them.
    """
    marker = request.node.get_closest_marker("server_settings")
    overrides = dict(marker.kwargs) if marker else {}
    base = Settings(address="127.0.0.1", port=0, compute_workers=1, log_level="warning",
                    outbound_allow=("127.0.0.1",), cookie_secret="test-cookie-secret",
                    data_dir=tmp_path / "data", post_rate=None, engine=engine)
    return base.replace(**overrides)


@pytest.fixture
def http_server(io_loop, server_settings, _unused_port):
    """The whole server (services, app, draining HTTP server) on an unused loopback port."""
    runtime = ServerRuntime(server_settings)
    io_loop.run_sync(lambda: runtime.start([_unused_port[0]]))
    yield runtime
    io_loop.run_sync(runtime.stop, timeout=30)


@pytest.fixture
def http_port(http_server, _unused_port):
    """The port of the running in-process server."""
    return _unused_port[1]


@pytest.fixture
def gate():
    """The Event /engine-test/gate waits on (POST to it sets it)."""
    return asyncio.Event()


@pytest.fixture
def port(http_server, http_port, gate):
    """The in-process server's port, with tests/helpers.py's engine_test_routes added (the engine tests)."""
    http_server.http.request_callback.add_handlers(r".*", engine_test_routes(gate))
    return http_port


@pytest.fixture
def connect(port):
    """``await connect()``: a RawClient to ``port``, closed at the end of the test (even a failed one)."""
    opened = []

    async def open_client():
        """Connect one more client."""
        client = await RawClient.connect(port)
        opened.append(client)
        return client
    yield open_client
    for client in opened:
        client.close()  # the server fixture's teardown then runs the loop that finishes closing


@pytest.fixture
def base_url(http_port):
    """http://127.0.0.1:<port> of the in-process server."""
    return f"http://127.0.0.1:{http_port}"


@pytest.fixture
def http_client(io_loop, http_server):
    """An AsyncHTTPClient of the test's own (not the shared singleton capped at 10 requests)."""
    async def make():
        return tornado.httpclient.AsyncHTTPClient(force_instance=True, max_clients=1100)
    client = io_loop.run_sync(make)
    yield client
    client.close()


@pytest.fixture
def api(http_client, base_url):
    """An Api helper bound to the in-process server."""
    return Api(http_client, base_url)


# --- what the in-process server logged ---

class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def server_errors():
    """The records at ERROR or with a traceback that the server's loggers emit (a callable).

    "tornado" and "server", and "asyncio" (an exception in a callback the loop ran).
    """
    handler = _Collect()
    loggers = [logging.getLogger(name) for name in ("tornado", "server", "asyncio")]
    for logger in loggers:
        logger.addHandler(handler)
    yield lambda: [f"{r.name}: {r.getMessage()}" + (" (with traceback)" if r.exc_info else "")
                   for r in handler.records
                   if r.levelno >= logging.ERROR or r.exc_info
                   or "Traceback" in r.getMessage() or "Uncaught exception" in r.getMessage()]
    for logger in loggers:
        logger.removeHandler(handler)


# --- the server as a subprocess, exactly as a user starts it ---

@pytest.fixture
def live_server_factory():
    """Start `python -m server` subprocesses; every one is killed at the end of the test."""
    started = []

    def start(*args, env=None, ready=True):
        server = LiveServer(*args, env=env)
        started.append(server)
        return server.wait_ready() if ready else server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def live_server():
    """One `python -m server` subprocess shared by a module's tests (browser tests)."""
    server = LiveServer("--log-level", "warning").wait_ready()
    yield server
    server.stop()


@pytest.fixture
def artifacts_dir():
    """Where tests leave screenshots for people (and CI) to look at."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


# --- bench fixtures (python -m bench) ---

class BenchTarget:
    """A server subprocess for the load-generator tests; ``url`` is set from its 'Serving on' line."""

    READY = re.compile(r"Serving on (http://\S+?)/?(?:\s|$)")

    def __init__(self, argv, log_path, timeout=20.0):
        import threading
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(argv, cwd=PROJECT_ROOT, stdout=subprocess.PIPE,
                                     stderr=self.log, text=True)
        deadline = time.monotonic() + timeout
        self.url = None
        while self.url is None:
            line = self.proc.stdout.readline()
            if not line or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"{argv} did not start: {open(log_path).read()[-2000:]}")
            match = self.READY.search(line)
            if match:
                self.url = match.group(1)
        self.port = int(self.url.rsplit(":", 1)[1])
        # keep reading stdout so a chatty server can never block on a full pipe
        self.reader = threading.Thread(target=self.proc.stdout.read, daemon=True)
        self.reader.start()

    def stats(self):
        """The stub server's own counters (GET /__stats)."""
        import urllib.request
        with urllib.request.urlopen(self.url + "/__stats", timeout=5) as response:
            return json.loads(response.read())

    def stop(self):
        """Kill the subprocess (only this one) and close its files."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        reader = getattr(self, "reader", None)
        if reader is not None:
            reader.join(5)
        self.proc.stdout.close()
        self.log.close()


@pytest.fixture
def bench_stub(tmp_path):
    """Start `python -m bench.stubserver [options]` subprocesses; each is killed after the test."""
    started = []

    def start(*options):
        target = BenchTarget([sys.executable, "-m", "bench.stubserver", "--port", "0", *options],
                             tmp_path / f"stub{len(started)}.log")
        started.append(target)
        return target

    yield start
    for target in started:
        target.stop()


@pytest.fixture
def bench_project_server(tmp_path):
    """The project's own server (`python -m server --port 0`) as a subprocess, as a user starts it."""
    if not (PROJECT_ROOT / "server" / "__main__.py").exists():
        pytest.skip("server/__main__.py does not exist yet")
    target = BenchTarget([sys.executable, "-m", "server", "--port", "0"], tmp_path / "server.log")
    yield target
    target.stop()


@pytest.fixture
def bench_free_port():
    """A loopback port with nothing listening on it (connections are refused)."""
    return free_port()


@pytest.fixture
def bench_run(tmp_path, capsys):
    """Run `python -m bench` in this process; returns (exit code, JSON report or None, stdout, stderr)."""
    from bench.__main__ import main

    runs = []

    def run(*args):
        path = tmp_path / f"bench{len(runs)}.json"
        runs.append(path)
        code = main([*map(str, args), "--json", str(path)])
        out, err = capsys.readouterr()
        report = json.loads(path.read_text()) if path.exists() else None
        return code, report, out, err

    return run


# --- a real upstream HTTP server for /api/fetch, on its own loopback port ---

class _UpstreamHandler(tornado.web.RequestHandler):
    async def get(self, what):
        if what == "page":
            self.set_header("Content-Type", "text/html; charset=utf-8")
            self.write("<!doctype html><html><head><title>\n Upstream &amp; Co \n</title></head>"
                       "<body><title>not this one</title>hello</body></html>")
        elif what == "plain":
            self.set_header("Content-Type", "text/plain")
            self.write("just text")
        elif what == "big":
            self.write(b"x" * (2 * 1024 * 1024))
        elif what == "big-chunked":
            for _ in range(64):
                self.write(b"y" * 32 * 1024)
                await self.flush()
        elif what == "sleep":
            await asyncio.sleep(float(self.get_query_argument("s")))
            self.write("slept")
        elif what == "redirect-page":
            self.redirect("/page")
        elif what == "redirect-private":
            self.redirect("http://10.255.255.1/")
        elif what == "missing":
            self.set_status(404)
            self.write("gone")
        elif what == "reset":
            self.request.connection.stream.close()
        else:
            raise tornado.web.HTTPError(400)

    head = get


@pytest.fixture
def upstream(io_loop):
    """Base URL of a local upstream server (/page, /plain, /big, /sleep?s=, /reset, ...)."""
    import tornado.httpserver
    sock = bind_sockets(0, "127.0.0.1", family=socket.AF_INET)[0]
    app = tornado.web.Application([(r"/(.*)", _UpstreamHandler)])

    async def start():
        server = tornado.httpserver.HTTPServer(app)
        server.add_sockets([sock])
        return server
    server = io_loop.run_sync(start)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.stop()
    io_loop.run_sync(server.close_all_connections)


# --- real PostgreSQL and Redis servers (Debian packages), started by the tests ---

@pytest.fixture(scope="session")
def postgres_server():
    """A private PostgreSQL cluster on a free loopback port for the whole session."""
    require(postgres_bin_dir() is not None, "PostgreSQL server (apt-get install postgresql)")
    base = Path(tempfile.mkdtemp(prefix="hps-pg-"))  # not under pytest's root-only tmp dirs
    server = PostgresServer(base)
    server.start()
    yield server
    server.stop("immediate")
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server):
    """A fresh, empty PostgreSQL database for one test (the server restarted if a test stopped it)."""
    if not postgres_server.running:
        postgres_server.start()
    return postgres_server.create_database("t_" + uuid.uuid4().hex[:12])


@pytest.fixture(scope="session")
def redis_server():
    """A private redis-server on a free loopback port for the whole session."""
    require(shutil.which("redis-server") is not None, "Redis server (apt-get install redis-server)")
    base = Path(tempfile.mkdtemp(prefix="hps-redis-"))
    server = RedisServer(base)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def redis_url(redis_server):
    """An emptied Redis (restarted if a test stopped it)."""
    if redis_server.proc is None:
        redis_server.start()
    redis_server.flush()
    return redis_server.url()
