"""Helpers the tests share (one module: tests import from here, never from each other).

Fixtures live in tests/conftest.py, which builds them from these; nothing here is a fixture.
"""
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import tornado.web
import tornado.websocket
from tornado.iostream import StreamClosedError

from bench.ports import free_port, wait_port

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def require(condition: bool, what: str) -> None:
    """Skip when a system component is missing; under CI=true a missing component fails instead."""
    if condition:
        return
    message = f"not installed: {what}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message} (CI=true requires it)")
    pytest.skip(message)


def nginx_binary():
    """The nginx executable (Debian installs it in /usr/sbin, often not on PATH), or None."""
    return shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


# --- the in-process server, through Tornado's HTTP client and raw sockets ---

class Api:
    """Small helper to call the server and read JSON answers without raising on 4xx/5xx."""

    def __init__(self, client, base_url):
        self.client = client
        self.base_url = base_url

    async def call(self, method, path, body=None, headers=None, **kwargs):
        if body is not None and not isinstance(body, bytes):  # bytes are sent as they are
            body = json.dumps(body)
            headers = {"Content-Type": "application/json", **(headers or {})}
        if body is None and method in ("POST", "PUT", "PATCH"):
            body = b""
        response = await self.client.fetch(self.base_url + path, method=method, body=body,
                                           headers=headers, raise_error=False,
                                           allow_nonstandard_methods=True, request_timeout=60,
                                           **kwargs)
        return response

    async def get(self, path, **kwargs):
        return await self.call("GET", path, **kwargs)

    async def post(self, path, body=None, **kwargs):
        return await self.call("POST", path, body=body, **kwargs)


def json_of(response):
    """The JSON body of a response, checking it was declared as JSON."""
    assert response.headers.get("Content-Type", "").startswith("application/json"), response.headers
    return json.loads(response.body)


async def raw_http(port, data, timeout=5.0, host="127.0.0.1", ssl_context=None):
    """Send raw bytes to a port (over TLS with ssl_context) and return everything received until
    the server closes (or timeout)."""
    reader, writer = await asyncio.open_connection(
        host, port, ssl=ssl_context, server_hostname=host if ssl_context else None)
    writer.write(data)
    await writer.drain()
    chunks = []
    try:
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), timeout)
            if not chunk:
                break
            chunks.append(chunk)
    except (TimeoutError, ConnectionResetError, ssl.SSLError):
        pass
    finally:
        writer.close()
    return b"".join(chunks)


class Response:
    """One parsed response: status, reason, headers (lower-case names) and the decoded body."""

    def __init__(self, status, reason, headers, body, raw_body=b""):
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.raw_body = raw_body

    def header(self, name):
        """The value of a header (None when absent)."""
        values = self.headers.get(name.lower())
        return values[0] if values else None

    def json(self):
        """The body as JSON."""
        return json.loads(self.body)

    def __repr__(self):
        return f"<Response {self.status} {self.headers} {self.body[:200]!r}>"


class RawClient:
    """One client connection: send bytes as they are, read responses one at a time."""

    def __init__(self, reader, writer):
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port):
        """Open a connection to the server."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    def send(self, data):
        """Write bytes exactly as given."""
        self.writer.write(data)

    async def response(self, method="GET", timeout=5.0):
        """The next response (1xx ones included), parsed by its framing."""
        return await asyncio.wait_for(self._response(method), timeout)

    async def _response(self, method):
        status_line = await self.reader.readline()
        if not status_line:
            raise EOFError("connection closed before a response")
        version, status, reason = status_line.decode("latin-1").rstrip("\r\n").split(" ", 2)
        assert version == "HTTP/1.1", status_line
        headers = {}
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, value = line.decode("latin-1").split(":", 1)
            headers.setdefault(name.strip().lower(), []).append(value.strip())
        status = int(status)
        raw = []
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            body = b""
        elif headers.get("transfer-encoding") == ["chunked"]:
            parts = []
            while True:
                size_line = await self.reader.readline()
                raw.append(size_line)
                size = int(size_line.split(b";")[0], 16)
                data = await self.reader.readexactly(size + 2)
                raw.append(data)
                assert data.endswith(b"\r\n")
                if size == 0:
                    break
                parts.append(data[:-2])
            body = b"".join(parts)
        elif "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"][0]))
        else:
            body = await self.reader.read()
        return Response(status, reason, headers, body, b"".join(raw))

    async def closed(self, timeout=5.0):
        """True when the server closes the connection within timeout (anything still sent is read)."""
        try:
            while True:
                data = await asyncio.wait_for(self.reader.read(65536), timeout)
                if not data:
                    return True
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True

    async def rest(self, timeout=5.0):
        """Everything the server sends until it closes."""
        chunks = []
        try:
            while True:
                data = await asyncio.wait_for(self.reader.read(65536), timeout)
                if not data:
                    break
                chunks.append(data)
        except (TimeoutError, ConnectionResetError):
            pass
        return b"".join(chunks)

    def close(self):
        """Close the client side."""
        self.writer.close()


def get(path, *extra, version="1.1", method="GET"):
    """A request head as bytes."""
    lines = [f"{method} {path} HTTP/{version}", "Host: test", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def wait_for_no_connections(http_server, timeout=5.0):
    """Wait until the server holds no connection (none leaked); the final count."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while http_server.http.connection_count and loop.time() < deadline:
        await asyncio.sleep(0.02)
    return http_server.http.connection_count


def make_certificate(directory, name="server"):
    """A self-signed certificate for localhost, 127.0.0.1 and ::1 and its key (openssl CLI)."""
    assert shutil.which("openssl") is not None, "openssl is needed (apt-get install openssl)"
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert),
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


# --- request handlers the engine tests add to the in-process server (conftest.py's port fixture) ---

class StreamedHandler(tornado.web.RequestHandler):
    """Writes its body in flushed pieces (a chunked response)."""

    async def get(self):
        """Write n pieces, flushing each."""
        for i in range(int(self.get_query_argument("n", "3"))):
            self.write(f"part{i};")
            try:
                await self.flush()
            except StreamClosedError:
                return
            await asyncio.sleep(0.01)


@tornado.web.stream_request_body
class UploadHandler(tornado.web.RequestHandler):
    """Counts a streamed request body; data_received is a coroutine (flow control)."""

    def check_xsrf_cookie(self):
        """Raw test requests carry no XSRF token."""
        return None

    def prepare(self):
        """Start counting; accept bodies up to 8 MB."""
        self.total = 0
        self.chunks = 0
        self.request.connection.set_max_body_size(8 * 1024 * 1024)

    async def data_received(self, chunk):
        """Count a piece (yielding once, like a handler that writes it somewhere)."""
        self.total += len(chunk)
        self.chunks += 1
        await asyncio.sleep(0)

    def put(self):
        """Answer with what arrived."""
        self.write({"bytes": self.total, "chunks": self.chunks})

    post = put


class SlowHandler(tornado.web.RequestHandler):
    """Answers after ?s= seconds."""

    async def get(self):
        """Sleep, then answer."""
        await asyncio.sleep(float(self.get_query_argument("s")))
        self.write("done")

    head = get


class GateHandler(tornado.web.RequestHandler):
    """GET waits until the gate is opened (POST opens it); the gate is the test's own Event."""

    def initialize(self, gate: asyncio.Event) -> None:
        self.gate = gate

    def check_xsrf_cookie(self):
        """Raw test requests carry no XSRF token."""
        return None

    async def get(self):
        """Answer once the gate is open."""
        await self.gate.wait()
        self.write("through")

    def post(self):
        """Open the gate."""
        self.gate.set()
        self.write("open")


class ContextHandler(tornado.web.RequestHandler):
    """What the request says about the client and the connection."""

    def get(self):
        """Answer with the request's view of the client."""
        request = self.request
        self.write({"remote_ip": request.remote_ip, "protocol": request.protocol, "host": request.host,
                    "host_name": request.host_name, "version": request.version, "uri": request.uri,
                    "path": request.path, "query": request.query,
                    "arguments": {k: [v.decode() for v in vs] for k, vs in request.arguments.items()},
                    "context_ip": request.connection.context.remote_ip,
                    "context_protocol": request.connection.context.protocol,
                    "request_time": request.request_time(), "full_url": request.full_url()})


class EchoWebSocket(tornado.websocket.WebSocketHandler):
    """Sends every message back."""

    def on_message(self, message):
        """Echo, or close when asked."""
        if message == "close-me":
            self.close(4000, "asked")
            return
        self.write_message(message, binary=isinstance(message, bytes))


def engine_test_routes(gate: asyncio.Event) -> list:
    """The engine tests' routes; /engine-test/gate waits on ``gate``."""
    return [
        (r"/engine-test/streamed", StreamedHandler),
        (r"/engine-test/upload", UploadHandler),
        (r"/engine-test/slow", SlowHandler),
        (r"/engine-test/context", ContextHandler),
        (r"/engine-test/gate", GateHandler, {"gate": gate}),
        (r"/engine-test/ws", EchoWebSocket),
    ]


# --- the server as a subprocess, exactly as a user starts it ---

class LiveServer:
    """A `python -m server` subprocess started with --port 0; knows its URL once ready."""

    READY = re.compile(r"Serving on (https?://\S+/) \(pid (\d+)[,)]")
    TCP_READY = re.compile(r"TCP greeting service on ([\d.]+):(\d+)")

    def __init__(self, *args, env=None):
        self.args = ["--port", "0", "--address", "127.0.0.1", *args]
        self._data_dir = None
        if "--data-dir" not in args and "--db-url" not in args:
            self._data_dir = tempfile.mkdtemp(prefix="hps-data-")
            self.args += ["--data-dir", self._data_dir]
        environment = {k: v for k, v in os.environ.items() if not k.startswith("SERVER_")}
        environment.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server", *self.args], cwd=PROJECT_ROOT, env=environment,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True)  # its own process group: stop() takes workers down too
        self.url = None
        self.tcp_port = None
        self.lines = []
        # the access log goes to stderr: read it all the time, or a full pipe would stall the server
        self.stderr_lines = []
        self._stderr_reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._stderr_reader.start()

    def _read_stderr(self):
        for line in self.proc.stderr:
            self.stderr_lines.append(line)

    def wait_ready(self, timeout=20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                code = self.wait()
                raise AssertionError(f"server exited early ({code}): {self.stderr}")
            self.lines.append(line)
            tcp = self.TCP_READY.search(line)
            if tcp:
                self.tcp_port = int(tcp.group(2))
            match = self.READY.search(line)
            if match:
                self.url = match.group(1).rstrip("/")
                self.port = int(self.url.rsplit(":", 1)[1])
                return self
        raise AssertionError("server did not print its ready line in time")

    def signal(self, signum=signal.SIGTERM):
        self.proc.send_signal(signum)

    def wait(self, timeout=30.0):
        code = self.proc.wait(timeout)
        self._stderr_reader.join(5)
        self.stderr = "".join(self.stderr_lines)
        return code

    def stop(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the server and any worker it forked
        except ProcessLookupError:
            pass
        self.proc.wait(10)
        self._stderr_reader.join(5)  # it ends at EOF; closing the pipe under it would raise
        for pipe in (self.proc.stdout, self.proc.stderr):
            pipe.close()
        if self._data_dir:
            shutil.rmtree(self._data_dir, ignore_errors=True)


def get_json(url, timeout=10):
    """The JSON document a GET of url answers (urllib, a fresh connection, closed afterwards)."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def run_server(*args, env=None, timeout=30):
    """Run `python -m server ARGS` to completion, bare environment (for settings that make it exit)."""
    return subprocess.run([sys.executable, "-m", "server", *args], cwd=PROJECT_ROOT,
                          env={"PATH": "/usr/bin:/bin", **(env or {})}, check=False,  # callers assert it
                          capture_output=True, text=True, timeout=timeout)


class BenchRun:
    """`python -m bench` closed loop in the background, writing its JSON report."""

    def __init__(self, url, seconds, report, connections=20):
        self.report = report
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench", url, "-c", str(connections), "--duration", f"{seconds}s",
             "--no-progress", "-q", "--json", str(report)],
            cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def result(self, timeout=120):
        """Wait for the run to end and return its report."""
        _, errors = self.proc.communicate(timeout=timeout)
        assert self.report.exists(), errors
        return json.loads(self.report.read_text())


# --- one request on a new connection to a server subprocess, and what /proc says of it ---

def open_fds(pid: int) -> int:
    """File descriptors the process holds right now."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_bytes(pid: int) -> int:
    """Resident set size of the process (VmRSS)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class Answer:
    """A parsed HTTP response."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        assert self.headers.get("content-type", "").startswith("application/json"), self.headers
        return json.loads(self.body)


def parse_response(raw: bytes) -> Answer:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not lines[0].startswith("HTTP/1."):
        raise ConnectionError(f"no HTTP response: {raw[:80]!r}")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        decoded, rest = bytearray(), body
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            decoded += rest[:size]
            rest = rest[size + 2:]
        body = bytes(decoded)
    elif "content-length" in headers:
        length = int(headers["content-length"])
        if len(body) < length:
            raise ConnectionError(f"response cut short: {len(body)} of {length} bytes")
    return Answer(status, headers, body)


async def http_call(port: int, method: str, path: str, body=None, timeout: float = 30.0,
                    headers: dict[str, str] | None = None) -> Answer:
    """One request on a new connection (Connection: close); OSError when the connect fails."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    try:
        payload = b""
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
        if body is not None:
            payload = body if isinstance(body, bytes) else json.dumps(body).encode()
            head += "Content-Type: application/json\r\n"
        if body is not None or method in ("POST", "PUT", "PATCH"):
            head += f"Content-Length: {len(payload)}\r\n"
        for name, value in (headers or {}).items():
            head += f"{name}: {value}\r\n"
        writer.write(head.encode() + b"\r\n" + payload)
        raw = await asyncio.wait_for(reader.read(), timeout)  # until the server closes
        return parse_response(raw)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def gauges(port: int) -> dict[str, float]:
    """The unlabelled samples of /metrics (http_connections_open, http_requests_in_flight, ...)."""
    answer = await http_call(port, "GET", "/metrics", timeout=10)
    assert answer.status == 200
    values = {}
    for line in answer.body.decode().splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, _, value = line.partition(" ")
            with contextlib.suppress(ValueError):
                values[name] = float(value)
    return values


async def in_executor(function, *args):
    """Run a blocking call (stopping a database, a subprocess's wait) off the event loop."""
    return await asyncio.get_running_loop().run_in_executor(None, function, *args)


# --- python -m bench reports ---

def assert_consistent(rep):
    """Every invariant the report promises (docs/bench.md, 'Invariants')."""
    c, r = rep["connections"], rep["requests"]
    assert r["sent"] == r["responses_total"] + r["errors_total"]
    assert r["responses_total"] == sum(r["responses"].values())
    assert r["errors_total"] == sum(r["errors"].values())
    assert c["failed_total"] == sum(c["failed"].values())
    assert c["attempted"] == c["established"] + c["failed_total"] + c["cancelled"]
    assert c["established"] == c["closed_by_server"] + c["closed_by_client"] + c["open_at_end"]
    assert rep["latency_ms"]["count"] == r["responses_total"]
    assert sum(e["responses"] for e in rep["timeline"]) == r["responses_total"]
    assert sum(e["sent"] for e in rep["timeline"]) == r["sent"]
    assert sum(e["errors"] for e in rep["timeline"]) == r["errors_total"]


# --- a real Redis server (Debian's redis-server); PostgreSQL's is bench.pgserver.PostgresServer ---

class RedisServer:
    """A redis-server process on a free loopback port, no persistence."""

    def __init__(self, base: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server (apt-get install redis-server)")
        self.binary = binary
        self.base = base
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        base.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        """Start (or restart) Redis on its port; returns when it accepts connections."""
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.base), "--protected-mode", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, 20)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def flush(self) -> None:
        """Empty every database (between tests)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(b"FLUSHALL\r\n")
            assert sock.recv(64).startswith(b"+OK")

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def clients(self) -> int:
        """Connections open to this Redis (INFO clients), not counting the one asking."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(b"INFO clients\r\n")
            data = b""
            while b"connected_clients:" not in data or not data.endswith(b"\r\n"):
                data += sock.recv(65536)
        line = next(line for line in data.decode().splitlines()
                    if line.startswith("connected_clients:"))
        return int(line.split(":")[1]) - 1


def fetchable(value):
    """Whether /api/fetch would open a connection for this URL: decided as the server decides it,
    by urllib.parse.urlsplit's scheme (which lower-cases it, drops leading control characters and
    any tab or newline), so fuzzers can point every such URL at loopback."""
    if not isinstance(value, str):
        return False
    try:
        return urllib.parse.urlsplit(value).scheme in ("http", "https")
    except ValueError:
        return False


def keep_fetches_local(body, local_url):
    """Point every fetchable URL of a /api/fetch body at local_url, in place."""
    if not isinstance(body, dict):
        return
    urls = body.get("urls")
    if isinstance(urls, list):
        body["urls"] = [local_url if fetchable(url) else url for url in urls]
    elif fetchable(urls):
        body["urls"] = local_url
