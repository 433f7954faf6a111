"""The launcher as a user runs it: `python -m server` in a subprocess, settings, signals, drain."""
import dataclasses
import http.client
import json
import signal
import socket
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from helpers import free_port, run_server
from server.config import Settings


def get(url, timeout=30):
    """(status, parsed JSON or text) of a GET on a new connection."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = response.read()
            status = response.status
            ctype = response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        body, status, ctype = exc.read(), exc.code, exc.headers.get("Content-Type", "")
    return status, (json.loads(body) if ctype.startswith("application/json") else body.decode())


def test_starts_serves_and_stops_cleanly(live_server_factory):
    server = live_server_factory("--tcp-port", "0")
    assert get(server.url + "/api/hello/ada") == (200, {"message": "Hello, ada"})
    status, html = get(server.url + "/")
    assert status == 200 and "<form" in html
    with socket.create_connection(("127.0.0.1", server.tcp_port), timeout=5) as tcp:
        tcp.sendall(b"launcher\n")
        assert tcp.makefile("rb").readline() == b"Hello, launcher\n"
    server.signal(signal.SIGTERM)
    assert server.wait() == 0
    assert "Traceback" not in server.stderr


def test_help_documents_every_setting():
    result = run_server("--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for field in dataclasses.fields(Settings):
        assert "--" + field.name.replace("_", "-") in text, field.name
        assert "SERVER_" + field.name.upper() in text, field.name


@pytest.mark.parametrize("args, env, expected", [
    (["--port", "70000"], {}, "--port: port must be between 0 and 65535"),
    (["--port", "abc"], {}, "--port: not a port number"),
    (["--loop", "tokio"], {}, "--loop: must be one of auto, asyncio, uvloop"),
    (["--idle-timeout", "-1"], {}, "--idle-timeout: must be a finite number"),
    (["--shutdown-timeout", "nan"], {}, "--shutdown-timeout: must be a finite number"),
    (["--max-body-size", "0"], {}, "--max-body-size: must be greater than 0"),
    (["--max-body-size", "12parsecs"], {}, "--max-body-size: not a size"),
    (["--files", "/no/such/dir"], {}, "--files: no such directory: /no/such/dir"),
    ([], {"SERVER_PORT": "-3"}, "SERVER_PORT: port must be between 0 and 65535"),
    ([], {"SERVER_DEBUG": "maybe"}, "SERVER_DEBUG: not a yes/no value"),
    (["--no-such-option"], {}, "unrecognized arguments: --no-such-option"),
])
def test_bad_settings_exit_2_with_one_line(args, env, expected):
    result = run_server(*args, env=env)
    assert result.returncode == 2, result
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_port_in_use_exits_2():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_server("--port", str(port), "--address", "127.0.0.1")
    assert result.returncode == 2
    assert result.stderr.strip() == (f"python -m server: error: cannot listen on 127.0.0.1:{port}: "
                                     "address already in use")


def test_environment_settings_and_command_line_precedence(live_server_factory):
    from_env = live_server_factory(env={"SERVER_MAX_NAME_LENGTH": "3"})
    assert get(from_env.url + "/api/hello/abcd")[0] == 422
    assert get(from_env.url + "/api/hello/abc")[0] == 200
    cli_wins = live_server_factory("--max-name-length", "10", env={"SERVER_MAX_NAME_LENGTH": "3"})
    assert get(cli_wins.url + "/api/hello/abcd")[0] == 200


def test_uvloop_event_loop(live_server_factory):
    server = live_server_factory("--loop", "uvloop")
    assert get(server.url + "/api/slow?ms=10")[0] == 200
    server.signal(signal.SIGINT)
    assert server.wait() == 0


@pytest.mark.parametrize("level", ["debug", "info", "warning", "error"])
@pytest.mark.parametrize("processes", ["1", "2"])
def test_ready_line_is_printed_at_every_log_level(live_server_factory, level, processes):
    # tools wait for this line: it is the server's promise that it is ready, whatever is logged
    server = live_server_factory("--log-level", level, "--processes", processes)
    ready = [line for line in server.lines if line.startswith("Serving on ")]
    assert len(ready) == 1, server.lines
    assert get(server.url + "/api/hello/x")[0] == 200
    server.signal(signal.SIGTERM)
    assert server.wait() == 0


def test_sigterm_drains_in_flight_requests_and_refuses_new_connections(live_server_factory):
    server = live_server_factory("--shutdown-timeout", "20")
    # an idle keep-alive connection must not hold the shutdown up
    idle = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    idle.request("GET", "/healthz")
    assert idle.getresponse().read()
    with ThreadPoolExecutor(max_workers=30) as pool:
        in_flight = [pool.submit(get, server.url + "/api/slow?ms=2000") for _ in range(30)]
        time.sleep(0.8)  # every request has reached the server and is waiting
        signalled = time.monotonic()
        server.signal(signal.SIGTERM)
        time.sleep(0.3)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", server.port), timeout=2)
        results = [f.result(timeout=30) for f in in_flight]
    assert [status for status, _ in results] == [200] * 30
    assert all(body["requested_ms"] == 2000 for _, body in results)
    assert server.wait() == 0
    assert time.monotonic() - signalled < 10
    # the idle keep-alive connection was closed by the server
    idle.request("GET", "/healthz")
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError, http.client.BadStatusLine)):
        idle.getresponse()
    idle.close()


def test_readiness_turns_503_during_drain_grace(live_server_factory):
    server = live_server_factory("--drain-grace", "1.5")
    status, body = get(server.url + "/readyz")
    assert status == 200 and body["status"] == "ready"
    server.signal(signal.SIGTERM)
    time.sleep(0.3)
    status, body = get(server.url + "/readyz")
    assert status == 503 and body["status"] == "draining"
    assert get(server.url + "/healthz")[0] == 200
    assert server.wait() == 0


def test_shutdown_timeout_cuts_off_and_exits_nonzero(live_server_factory):
    server = live_server_factory("--shutdown-timeout", "0.5")
    with ThreadPoolExecutor(max_workers=1) as pool:
        slow = pool.submit(get, server.url + "/api/slow?ms=10000")
        time.sleep(0.5)
        started = time.monotonic()
        server.signal(signal.SIGTERM)
        assert server.wait() == 1
        assert time.monotonic() - started < 5
        with pytest.raises(Exception):
            slow.result(timeout=10)
    assert "shutdown timeout" in server.stderr


def test_second_signal_forces_exit(live_server_factory):
    server = live_server_factory("--shutdown-timeout", "60")
    with ThreadPoolExecutor(max_workers=1) as pool:
        slow = pool.submit(get, server.url + "/api/slow?ms=20000")
        time.sleep(0.5)
        started = time.monotonic()
        server.signal(signal.SIGTERM)
        time.sleep(0.5)
        assert server.proc.poll() is None, "still draining after the first signal"
        server.signal(signal.SIGINT)
        assert server.wait() == 1
        assert time.monotonic() - started < 5
        with pytest.raises(Exception):
            slow.result(timeout=10)
    assert "forcing exit" in server.stderr


def test_unreachable_database_at_start_exits_1_with_one_line():
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nothing"
    started = time.monotonic()
    result = run_server("--port", "0", "--db-url", url, "--db-startup-wait", "1")
    assert result.returncode == 1
    assert "cannot open the database postgresql+asyncpg://postgres@127.0.0.1" in result.stderr
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 15


def _started_under_soft_file_limit(live_server_factory, soft_limit, *args):
    """A server started while this process's soft open-file limit is soft_limit; its own soft limit."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft_limit, hard))  # the child inherits it
    try:
        server = live_server_factory(*args)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    with open(f"/proc/{server.proc.pid}/limits") as limits:
        line = next(line for line in limits if line.startswith("Max open files"))
    assert get(server.url + "/api/hello/x")[0] == 200
    return int(line.split()[3])


def test_open_file_limit_is_raised_for_max_connections(live_server_factory):
    """Started under `ulimit -n 1024`, the server raises its soft limit to what --max-connections needs."""
    import resource
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 6000:
        pytest.skip(f"the hard open-file limit ({hard}) is below what this test asks for")
    assert _started_under_soft_file_limit(live_server_factory, 1024, "--max-connections", "5000") >= 5100


def test_connection_cap_defaults_to_what_the_open_file_limit_allows(live_server_factory):
    """No --max-connections: the soft open-file limit goes up to the hard one (cap = hard - 256)."""
    import resource
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY or hard < 2048:
        pytest.skip(f"needs a finite hard open-file limit of at least 2048 (have {hard})")
    assert _started_under_soft_file_limit(live_server_factory, 1024) == hard
