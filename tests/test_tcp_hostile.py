"""The TCP greeting service against hostile clients: garbage, overlong lines, half-closes, silence.

One `python -m server --tcp-port 0` subprocess per module, with a 64-byte --tcp-max-line and a
1 s --tcp-idle-timeout; plain blocking sockets with timeouts, so nothing here can hang.
"""
import random
import socket
import struct
import time

import pytest

from helpers import LiveServer

pytestmark = pytest.mark.hardening

MAX_LINE = 64
IDLE = 1.0


@pytest.fixture(scope="module")
def tcp_server():
    """The whole server with the TCP greeting service on a free port."""
    server = LiveServer("--tcp-port", "0", "--tcp-max-line", str(MAX_LINE),
                        "--tcp-idle-timeout", str(IDLE), "--log-level", "warning",
                        "--access-log", "off").wait_ready()
    assert server.tcp_port, server.lines
    yield server
    server.stop()


def connect(server, timeout=5.0):
    sock = socket.create_connection(("127.0.0.1", server.tcp_port), timeout=timeout)
    return sock


def read_all(sock, timeout=5.0):
    """Everything the server sends until it closes (a reset counts as a close)."""
    sock.settimeout(timeout)
    chunks = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    else:
        raise AssertionError("the server did not close the connection in time")
    return b"".join(chunks)


def read_lines(sock, count, timeout=5.0):
    sock.settimeout(timeout)
    data = b""
    while data.count(b"\n") < count:
        chunk = sock.recv(65536)
        assert chunk, f"closed after {data!r}"
        data += chunk
    return data.split(b"\n")[:count]


def converse(server, payload, half_close=True):
    """Send payload, optionally half-close (shutdown(SHUT_WR)), read until the server closes."""
    with connect(server) as sock:
        sock.sendall(payload)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        return read_all(sock)


def greeted(server, name="probe"):
    """A normal client still gets its greeting."""
    with connect(server) as sock:
        sock.sendall(name.encode() + b"\n")
        return read_lines(sock, 1)[0] == f"Hello, {name}".encode()


# (id, bytes sent then half-closed, exact answer)
HALF_CLOSED = [
    ("line-then-fin", b"name\n", b"Hello, name\n"),
    ("crlf-line-then-fin", b"ada\r\n", b"Hello, ada\n"),
    ("unterminated-last-line", b"grace", b"Hello, grace\n"),
    ("lines-and-unterminated-last", b"a\nb\nc", b"Hello, a\nHello, b\nHello, c\n"),
    ("empty-line", b"\n", b"Hello, Anonymous\n"),
    ("nothing", b"", b""),
    ("nul-byte", b"a\x00b\n", b"Error: name: must not contain control characters\n"),
    ("invalid-utf8", b"\xff\xfe\xc3(\n", "Hello, \ufffd\ufffd\ufffd(\n".encode()),
    ("overlong-utf8-nul", b"\xc0\x80\n", "Hello, \ufffd\ufffd\n".encode()),
    ("lone-surrogate-utf8", b"\xed\xa0\x80\n", "Hello, \ufffd\ufffd\ufffd\n".encode()),
    ("escape-sequence", b"\x1b[2J\n", b"Error: name: must not contain control characters\n"),
    ("bare-cr", b"a\rb\n", b"Error: name: must not contain control characters\n"),
    ("overlong-line", b"x" * 200 + b"\n", f"Error: line longer than {MAX_LINE} bytes\n".encode()),
    ("overlong-unterminated", b"y" * 200, f"Error: line longer than {MAX_LINE} bytes\n".encode()),
    ("ok-then-overlong", b"ok\n" + b"z" * 100 + b"\nnever\n",
     f"Hello, ok\nError: line longer than {MAX_LINE} bytes\n".encode()),
    ("exactly-max-line", b"m" * MAX_LINE + b"\n", b"Hello, " + b"m" * MAX_LINE + b"\n"),
    ("http-request", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
     b"Hello, GET / HTTP/1.1\nHello, Host: x\nHello, Anonymous\n"),
    ("tls-client-hello", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
     b"Error: name: must not contain control characters\n"),
]


@pytest.mark.parametrize("payload, answer", [case[1:] for case in HALF_CLOSED],
                         ids=[case[0] for case in HALF_CLOSED])
def test_half_closed_client_gets_every_answer(tcp_server, payload, answer):
    assert converse(tcp_server, payload) == answer


def test_random_binary_garbage_is_answered_line_by_line(tcp_server):
    rng = random.Random(7)
    with connect(tcp_server) as sock:
        lines = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, MAX_LINE)))
                 .replace(b"\n", b"").rstrip(b"\r") for _ in range(300)]
        lines = [line for line in lines if line]
        sock.sendall(b"".join(line + b"\n" for line in lines))
        answers = read_lines(sock, len(lines))
        assert all(a.startswith(b"Hello, ") or a.startswith(b"Error: ") for a in answers), answers
        # the connection is still usable after all that
        sock.sendall(b"still here\n")
        assert read_lines(sock, 1) == [b"Hello, still here"]


def test_many_lines_in_one_packet(tcp_server):
    answer = converse(tcp_server, b"\n" * 2000 + b"last")
    assert answer == b"Hello, Anonymous\n" * 2000 + b"Hello, last\n"


def test_silent_client_is_cut_at_the_idle_timeout(tcp_server):
    started = time.monotonic()
    with connect(tcp_server) as sock:
        assert read_all(sock, timeout=IDLE + 4) == b"Bye: idle for too long\n"
    assert IDLE * 0.8 <= time.monotonic() - started <= IDLE + 3


def test_slow_trickle_within_the_idle_timeout_is_served(tcp_server):
    with connect(tcp_server) as sock:
        for byte in b"slow":
            sock.sendall(bytes([byte]))
            time.sleep(IDLE / 4)
        sock.sendall(b"\n")
        assert read_lines(sock, 1) == [b"Hello, slow"]


def test_client_that_resets_mid_line_does_not_hurt(tcp_server):
    for _ in range(20):
        sock = connect(tcp_server)
        sock.sendall(b"half a li")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # RST
    assert greeted(tcp_server)


def test_client_that_never_reads_is_cut(tcp_server):
    # it keeps sending lines but never reads the answers: the server stops waiting for it to
    # take them after the idle timeout instead of buffering for ever
    with connect(tcp_server, timeout=0.2) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        deadline = time.monotonic() + IDLE + 6
        closed = False
        while time.monotonic() < deadline:
            try:
                sock.send(b"a\n" * 4096)
            except TimeoutError:
                time.sleep(0.1)
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
        if not closed:  # the socket buffers never filled up to our send: read what is left
            read_all(sock, timeout=IDLE + 4)
    assert greeted(tcp_server)


def test_garbage_clients_do_not_stop_a_normal_client(tcp_server):
    rng = random.Random(11)
    garbage = []
    try:
        for _ in range(100):
            sock = connect(tcp_server)
            # binary bytes with no newline, under the line limit: each client holds a partial line
            sock.sendall(bytes(rng.randrange(11, 256) for _ in range(MAX_LINE // 2)))
            garbage.append(sock)
        assert greeted(tcp_server, "normal")  # within its 5 s read timeout, not timed further
        for sock in garbage[:50]:
            sock.sendall(b"\x00" * (MAX_LINE * 2))  # overlong: answered with an error and closed
        for sock in garbage[:50]:
            assert read_all(sock).startswith(b"Error: line longer than")
        assert greeted(tcp_server, "normal again")
    finally:
        for sock in garbage:
            sock.close()


def test_tcp_battery_summary(tcp_server, reliability):
    reliability.describe("TCP greeting service against hostile clients: half-closes, binary "
                         "garbage, NUL bytes, overlong lines, silent, trickling, resetting and "
                         "non-reading clients, 100 garbage clients beside a normal one",
                         area="bad input")
    cases = len(HALF_CLOSED) + 300 + 2000 + 20 + 100 + 4
    assert greeted(tcp_server, "after the battery")
    tcp_server.signal()  # SIGTERM: drains and exits cleanly, no traceback logged
    assert tcp_server.wait() == 0, tcp_server.stderr
    assert "Traceback" not in tcp_server.stderr, tcp_server.stderr[-5000:]
    reliability.figure(f"{cases} hostile inputs over {len(HALF_CLOSED) + 150} connections: every "
                       f"line answered (half-closed clients too), 0 hangs, 0 tracebacks, normal "
                       f"client greeted in < 1 s beside 100 garbage clients")
