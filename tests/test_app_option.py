"""``python -m server --app MODULE:ATTR``: a foreign Tornado application with every launcher feature.

The applications are in tests/apps (written as Tornado's demos write them); each test starts the
launcher as a subprocess and talks to it over loopback with real clients.
"""
import hashlib
import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from bench.ports import free_port
from helpers import PROJECT_ROOT

APPS = str(PROJECT_ROOT / "tests" / "apps")
ENGINES = ["fast", "tornado"]


def app_args(spec, *extra):
    """The launcher's arguments for an application in tests/apps."""
    return ("--app-dir", APPS, "--app", spec, *extra)


def fetch(url, method="GET", body=None, headers=None, timeout=20, context=None):
    """(status, headers, body) of one request."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def stream_upload(port, name, size, piece=256 * 1024):
    """PUT a body of `size` pseudo-random bytes in pieces (chunked); (reply, sha256 sent)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    digest = hashlib.sha256()

    def pieces():
        sent = 0
        block = os.urandom(piece)
        while sent < size:
            data = block[: min(piece, size - sent)]
            digest.update(data)
            sent += len(data)
            yield data
    connection.request("PUT", f"/upload/{name}", body=pieces(), encode_chunked=True)
    response = connection.getresponse()
    reply = json.loads(response.read())
    connection.close()
    return response.status, reply, digest.hexdigest()


@pytest.mark.parametrize("engine", ENGINES)
def test_a_streaming_upload_app(live_server_factory, engine, tmp_path):
    server = live_server_factory(*app_args("upload:make_app", "--engine", engine,
                                           "--max-body-size", "1M"),
                                 env={"UPLOAD_DIR": str(tmp_path)})
    status, reply, sent = stream_upload(server.port, "big.bin", 5 * 1024 * 1024)
    assert (status, reply["bytes"], reply["sha256"]) == (200, 5 * 1024 * 1024, sent)
    assert hashlib.sha256((tmp_path / "big.bin").read_bytes()).hexdigest() == sent
    # the launcher's limits hold for the app's buffered routes
    status, _, body = fetch(server.url + "/form", "POST", b"x" * (2 * 1024 * 1024))
    assert status == 413
    status, _, body = fetch(server.url + "/form", "POST", b"x" * 1000)
    assert (status, json.loads(body)) == (200, {"bytes": 1000})
    server.signal(signal.SIGTERM)
    assert server.wait() == 0
    # the launcher's access log: the app's requests and the refusal, with bytes sent
    log = server.stderr
    assert '"PUT /upload/big.bin HTTP/1.1" 200 ' in log
    assert '"POST /form HTTP/1.1" 413 ' in log
    assert '"POST /form HTTP/1.1" 200 15 ' in log


@pytest.mark.parametrize("engine", ENGINES)
def test_tornados_hello_world_answers_as_under_app_listen(live_server_factory, engine):
    """The README's comparison app: the same answer from app.listen() and from --app."""
    unused_port = free_port()
    listen = subprocess.Popen([sys.executable, os.path.join(APPS, "hello.py"), str(unused_port)])
    try:
        for _ in range(100):
            try:
                own = fetch(f"http://127.0.0.1:{unused_port}/")
                break
            except OSError:
                time.sleep(0.1)
        server = live_server_factory(*app_args("hello:make_app", "--engine", engine))
        ours = fetch(server.url + "/")
    finally:
        listen.terminate()
        listen.wait(10)
    assert own[0] == ours[0] == 200
    assert own[2] == ours[2] == b"Hello, world"
    assert own[1]["Content-Type"] == ours[1]["Content-Type"]


@pytest.mark.parametrize("spec", ["upload:make_app", "upload:make_app_async", "upload:lifespan"])
def test_every_kind_of_factory(live_server_factory, spec, tmp_path):
    calls = tmp_path / "calls"
    server = live_server_factory(*app_args(spec), env={"APP_CALLS": str(calls)})
    status, _, body = fetch(server.url + "/pid")
    assert status == 200 and json.loads(body)["pid"] == int(server.READY.search(
        "".join(server.lines)).group(2))
    server.signal(signal.SIGTERM)
    assert server.wait() == 0
    recorded = calls.read_text().split()
    if spec == "upload:lifespan":  # opened before serving, closed after the last request
        assert recorded[0::2] == ["open", "make_app", "close"]
    else:
        assert recorded[0::2] == ["make_app"]


@pytest.mark.parametrize("spec,message", [
    ("nosuchmodule:app", "no module named 'nosuchmodule'"),
    ("upload:nope", "upload has no attribute 'nope'"),
    ("upload:NOT_AN_APP", "NOT_AN_APP is a builtins.dict, not a tornado.web.Application"),
    ("upload:failing_factory", "calling it raised RuntimeError: the database is not there"),
    ("broken:app", "importing broken failed: ImportError: this module needs a package"),
    ("upload", "use MODULE:ATTR"),
])
@pytest.mark.parametrize("processes", ["1", "2"])
def test_a_bad_app_is_one_line_and_exit_code_2(spec, message, processes, reliability):
    reliability.describe("a bad --app (module, attribute, type, factory)", area="launcher")
    done = subprocess.run([sys.executable, "-m", "server", "--port", "0", *app_args(spec),
                           "--processes", processes], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=60)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith("python -m server: error:"), \
        done.stderr
    assert "Serving on" not in done.stdout


def test_processes_rolling_restart_and_graceful_drain(live_server_factory, tmp_path):
    calls = tmp_path / "calls"
    server = live_server_factory(*app_args("upload:make_app", "--processes", "2",
                                           "--shutdown-timeout", "10"),
                                 env={"APP_CALLS": str(calls)})
    first = calls.read_text().split()[1::2]
    assert len(first) == 2 and len(set(first)) == 2  # once in each worker, after the fork
    assert str(server.proc.pid) not in first  # never in the supervisor
    server.signal(signal.SIGHUP)  # rolling restart: a new worker per slot, each called once
    deadline = time.monotonic() + 30
    while len(calls.read_text().split()) < 8 and time.monotonic() < deadline:
        assert fetch(server.url + "/pid")[0] == 200  # served all along
        time.sleep(0.2)
    pids = calls.read_text().split()[1::2]
    assert len(pids) == 4 and len(set(pids)) == 4
    # a slow request in flight when SIGTERM arrives still finishes
    result = {}
    worker = threading.Thread(target=lambda: result.update(
        answer=fetch(server.url + "/slow?s=1.5")))
    worker.start()
    time.sleep(0.5)
    server.signal(signal.SIGTERM)
    worker.join(20)
    status, _, body = result["answer"]
    assert status == 200 and json.loads(body)["done"] is True
    assert server.wait() == 0


@pytest.mark.parametrize("engine", ENGINES)
def test_tls_for_a_foreign_app(live_server_factory, engine, certificate):
    cert, key = certificate
    server = live_server_factory(*app_args("upload:make_app", "--engine", engine,
                                           "--tls-cert", str(cert), "--tls-key", str(key)))
    assert server.url.startswith("https://")
    context = ssl.create_default_context(cafile=str(cert))
    status, _, body = fetch(server.url + "/pid", context=context)
    assert status == 200 and "pid" in json.loads(body)


def test_max_connections_holds_for_a_foreign_app(live_server_factory):
    import socket
    server = live_server_factory(*app_args("upload:make_app", "--max-connections", "2"))
    held = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(2)]
    time.sleep(0.3)
    extra = socket.create_connection(("127.0.0.1", server.port))
    extra.settimeout(5)
    extra.sendall(b"GET /pid HTTP/1.1\r\nHost: t\r\n\r\n")
    try:
        assert extra.recv(100) == b""  # closed at accept
    except ConnectionResetError:
        pass  # closed at accept, reset
    for sock in (*held, extra):
        sock.close()
    assert fetch(server.url + "/pid")[0] == 200
