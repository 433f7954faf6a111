"""Request smuggling (issue 14): no engine frames a message differently from h11, and nginx in
front of the fast engine passes it no request that nginx did not answer as one.

A corpus of framing cases (CL.TE, TE.CL, TE.TE obfuscations, odd Content-Lengths, chunk-size
tricks, bare CR/LF, obs-fold, request-line oddities, Expect, pipelining...), most of them followed
in the same bytes by a smuggled ``GET /api/hello/smuggled``. The reference is h11: the requests it
accepts from the bytes (method, target, body) before it refuses them. Each case goes, on its own
connection, to ``python -m server --app framing:make_app`` (tests/apps/framing.py answers every
request with what it was given), on both engines. The engine may refuse where h11 accepts (it is
deliberately stricter); it may never accept a request h11 does not, nor frame a body differently,
unless the case is listed in LAXER with its RFC 9112 reason and the view allowed instead.

Then nginx (a minimal config with docs/deploy/nginx.conf's proxying: HTTP/1.1, keep-alive
upstream) in front of the fast engine gets every case: each request in the backend's access log
must be one whose answer reached the client as a response of its own (the smuggled GET
included), and nothing is left on the upstream connections.
"""
import asyncio
import json
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

import h11
import pytest

from bench.ports import free_port, wait_port
from helpers import PROJECT_ROOT, LiveServer, RawClient, nginx_binary, require

pytestmark = pytest.mark.hardening

APP_ARGS = ("--app-dir", str(PROJECT_ROOT / "tests" / "apps"), "--app", "framing:make_app")
SMUGGLED = b"GET /api/hello/smuggled HTTP/1.1\r\nHost: t\r\n\r\n"
CHUNKED_BODY = b"5\r\nhello\r\n0\r\n\r\n"
CONCURRENCY = 12
# how the engines' own refusals begin (server/refusals.html_page); nginx's pages begin otherwise
BACKEND_PAGE = b"<!doctype html><title>"
READ_TIMEOUT = 4.0  # per response; the servers close idle connections after 1 s


def post(headers, body, target=b"/echo", method=b"POST", version=b"HTTP/1.1"):
    """A request with these raw header lines (Host first) and this body, as bytes."""
    return method + b" " + target + b" " + version + b"\r\nHost: t\r\n" + headers + b"\r\n" + body


def te(value):
    """A Transfer-Encoding header line with this raw value."""
    return b"Transfer-Encoding: " + value + b"\r\n"


def cl(value):
    """A Content-Length header line with this raw value."""
    return b"Content-Length: " + value + b"\r\n"


def te_cases():
    """TE.TE obfuscations, each alone and with a Content-Length that covers the smuggled request."""
    obfuscated = {
        "plain": te(b"chunked"),
        "xchunked": te(b"xchunked"),
        "chunk": te(b"chunk"),
        "leading-space": te(b" chunked"),
        "trailing-tab": te(b"chunked\t"),
        "trailing-space": te(b"chunked "),
        "chunked-identity": te(b"chunked, identity"),
        "identity-chunked": te(b"identity, chunked"),
        "gzip-chunked": te(b"gzip, chunked"),
        "chunked-chunked": te(b"chunked, chunked"),
        "comma-chunked": te(b", chunked"),
        "quoted": te(b'"chunked"'),
        "uppercase-value": te(b"CHUNKED"),
        "mixed-case-value": te(b"cHuNkEd"),
        "lowercase-name": b"transfer-encoding: chunked\r\n",
        "uppercase-name": b"TRANSFER-ENCODING: chunked\r\n",
        "vtab": b"Transfer-Encoding:\x0bchunked\r\n",
        "formfeed": b"Transfer-Encoding:\x0cchunked\r\n",
        "nul-after": te(b"chunked\x00"),
        "nul-in-name": b"Transfer-\x00Encoding: chunked\r\n",
        "two-headers": te(b"chunked") + te(b"chunked"),
        "two-headers-identity-last": te(b"chunked") + te(b"identity"),
        "two-headers-identity-first": te(b"identity") + te(b"chunked"),
        "obs-fold": b"Transfer-Encoding:\r\n chunked\r\n",
        "obs-fold-tab": b"Transfer-Encoding: identity\r\n\t,chunked\r\n",
        "space-before-colon": b"Transfer-Encoding : chunked\r\n",
        "tab-before-colon": b"Transfer-Encoding\t: chunked\r\n",
        "underscore-name": b"Transfer_Encoding: chunked\r\n",
        "bare-cr-before": b"X-A: a\rTransfer-Encoding: chunked\r\n",
        "leading-space-line": b" Transfer-Encoding: chunked\r\n",
    }
    body = CHUNKED_BODY + SMUGGLED
    for name, header in obfuscated.items():
        yield f"te-{name}", post(header, body)
        yield f"cl-te-{name}", post(cl(b"%d" % len(body)) + header, body)


def cl_cases():
    """Content-Length variants; the body is "hello" and the smuggled request follows it."""
    values = {
        "5": b"5", "5-6": b"5, 6", "5-5": b"5, 5", "5-5-no-space": b"5,5", "plus": b"+5",
        "leading-zero": b"05", "negative": b"-1", "hex": b"0x5", "huge": b"9" * 30,
        "fullwidth-digit": "５".encode(), "arabic-digit": "٥".encode(), "empty": b"",
        "trailing-space": b"5 ", "trailing-tab": b"5\t", "inner-space": b"5 5", "letter": b"5a",
        "decimal": b"5.0", "underscore": b"0_5", "nul": b"5\x00", "vtab": b"5\x0b",
        "exponent": b"5e0", "comma-only": b",", "trailing-comma": b"5,",
    }
    body = b"hello" + SMUGGLED
    for name, value in values.items():
        yield f"cl-{name}", post(cl(value), body)
    yield "cl-two-headers-differ", post(cl(b"5") + cl(b"6"), body)
    yield "cl-two-headers-same", post(cl(b"5") + cl(b"5"), body)
    yield "cl-space-before-colon", post(b"Content-Length : 5\r\n", body)
    yield "cl-obs-fold", post(b"Content-Length:\r\n 5\r\n", body)
    yield "cl-obs-fold-second-value", post(b"Content-Length: 5\r\n 6\r\n", body)
    yield "cl-zero-with-body", post(cl(b"0"), body)
    yield "cl-covers-smuggled", post(cl(b"%d" % len(body)), body)
    yield "cl-longer-than-sent", post(cl(b"500"), body)
    yield "cl-name-space", post(b"Content Length: 5\r\n", body)


def chunk_cases():
    """Chunk-size and chunk-framing tricks; the smuggled request follows the body."""
    bodies = {
        "plain": CHUNKED_BODY,
        "hex-prefix": b"0x5\r\nhello\r\n0\r\n\r\n",
        "space-ext": b"5 ;ext\r\nhello\r\n0\r\n\r\n",
        "ext": b"5;ext\r\nhello\r\n0\r\n\r\n",
        "quoted-ext": b'5;ext="a"\r\nhello\r\n0\r\n\r\n',
        "quoted-ext-crlf": b'5;ext="a\r\nb"\r\nhello\r\n0\r\n\r\n',
        "empty-ext": b"5;\r\nhello\r\n0\r\n\r\n",
        "leading-zeros": b"0005\r\nhello\r\n0000\r\n\r\n",
        "many-leading-zeros": b"0" * 40 + b"5\r\nhello\r\n0\r\n\r\n",
        "overflow": b"10000000000000005\r\nhello\r\n0\r\n\r\n",
        "overflow-64": b"ffffffffffffffff5\r\nhello\r\n0\r\n\r\n",
        "negative": b"-5\r\nhello\r\n0\r\n\r\n",
        "plus": b"+5\r\nhello\r\n0\r\n\r\n",
        "uppercase-hex": b"A\r\nhellohello\r\n0\r\n\r\n",
        "leading-space": b" 5\r\nhello\r\n0\r\n\r\n",
        "trailing-space": b"5 \r\nhello\r\n0\r\n\r\n",
        "trailing-tab": b"5\t\r\nhello\r\n0\r\n\r\n",
        "bare-lf-size": b"5\nhello\r\n0\r\n\r\n",
        "bare-lf-everywhere": b"5\nhello\n0\n\n",
        "bare-cr-size": b"5\rhello\r\n0\r\n\r\n",
        "no-crlf-after-data": b"5\r\nhello0\r\n\r\n",
        "wrong-bytes-after-data": b"5\r\nhelloXY0\r\n\r\n",
        "bare-lf-after-data": b"5\r\nhello\n0\r\n\r\n",
        "data-longer": b"3\r\nhello\r\n0\r\n\r\n",
        "data-shorter": b"7\r\nhello\r\n0\r\n\r\n",
        "last-chunk-no-final-crlf": b"5\r\nhello\r\n0\r\n",
        "last-chunk-bare-lf": b"5\r\nhello\r\n0\n\n",
        "trailer": b"5\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n",
        "trailer-content-length": b"5\r\nhello\r\n0\r\nContent-Length: 50\r\n\r\n",
        "trailer-transfer-encoding": b"5\r\nhello\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n",
        "trailer-bare-cr": b"5\r\nhello\r\n0\r\nX-T: a\rGET /x HTTP/1.1\r\n\r\n",
        "trailer-obs-fold": b"5\r\nhello\r\n0\r\nX-T: a\r\n b\r\n\r\n",
        "trailer-no-colon": b"5\r\nhello\r\n0\r\nnot a header\r\n\r\n",
        "size-nul": b"5\x00\r\nhello\r\n0\r\n\r\n",
        "ext-bare-cr": b"5;a\rb\r\nhello\r\n0\r\n\r\n",
        "ext-nul": b"5;a\x00\r\nhello\r\n0\r\n\r\n",
        "zero-then-data": b"0\r\nhello\r\n\r\n",
        "empty-size": b"\r\nhello\r\n0\r\n\r\n",
    }
    for name, body in bodies.items():
        yield f"chunk-{name}", post(te(b"chunked"), body + SMUGGLED)


def line_cases():
    """Line endings, obs-fold, header names, request-line oddities, Expect, pipelining."""
    body = b"hello" + SMUGGLED
    yield "request-line-bare-lf", b"POST /echo HTTP/1.1\nHost: t\r\nContent-Length: 5\r\n\r\n" + body
    yield "request-line-bare-cr", b"POST /echo HTTP/1.1\rHost: t\r\nContent-Length: 5\r\n\r\n" + body
    yield "headers-bare-lf", b"POST /echo HTTP/1.1\nHost: t\nContent-Length: 5\n\n" + body
    yield "header-end-lf-crlf", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\n\r\n" + body
    yield "header-bare-cr-cl", post(b"X-A: a\rContent-Length: 5\r\n", body)
    yield "header-bare-cr-end", post(cl(b"5") + b"X-A: a\r\r\n", body)
    yield "header-bare-lf-cl", post(b"X-A: a\nContent-Length: 5\r\n", body)
    yield "obs-fold-plain", post(b"X-A: a\r\n folded\r\n" + cl(b"5"), body)
    yield "obs-fold-host", b"POST /echo HTTP/1.1\r\nHost: t\r\n x\r\nContent-Length: 5\r\n\r\n" + body
    yield "obs-fold-first-line", b"POST /echo HTTP/1.1\r\n Content-Length: 5\r\nHost: t\r\n\r\n" + body
    yield "header-name-space", post(b"X A: 1\r\n" + cl(b"5"), body)
    yield "header-name-tab", post(b"X\tA: 1\r\n" + cl(b"5"), body)
    yield "header-no-colon", post(b"Content-Length 5\r\n", body)
    yield "header-double-colon", post(b"Content-Length:: 5\r\n", body)
    yield "header-empty-name", post(b": 5\r\n" + cl(b"5"), body)
    yield "header-nul-value", post(b"X-A: a\x00b\r\n" + cl(b"5"), body)
    yield "request-line-two-spaces", post(cl(b"5"), body, target=b" /echo")
    yield "request-line-two-spaces-version", post(cl(b"5"), body, version=b" HTTP/1.1")
    yield "request-line-trailing-space", post(cl(b"5"), body, version=b"HTTP/1.1 ")
    yield "request-line-tab", b"POST\t/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\n" + body
    yield "http09", b"GET /api/hello/nine\r\n\r\n" + SMUGGLED
    yield "http10-te", post(te(b"chunked"), CHUNKED_BODY + SMUGGLED, version=b"HTTP/1.0")
    yield "http10-cl-keep-alive", post(b"Connection: keep-alive\r\n" + cl(b"5"), body,
                                       version=b"HTTP/1.0")
    yield "http10-cl-close", post(cl(b"5"), body, version=b"HTTP/1.0")
    yield "http12-te", post(te(b"chunked"), CHUNKED_BODY + SMUGGLED, version=b"HTTP/1.2")
    yield "absolute-form-other-host", post(cl(b"5"), body, target=b"http://other/echo")
    yield "absolute-form-get", post(b"", SMUGGLED, b"http://other/api/hello/abs", b"GET")
    yield "leading-crlf", b"\r\n" + post(cl(b"5"), body)
    yield "expect-bad-cl", post(b"Expect: 100-continue\r\n" + cl(b"5, 6"), body)
    yield "expect-negative-cl", post(b"Expect: 100-continue\r\n" + cl(b"-1"), body)
    yield "expect-cl-te", post(b"Expect: 100-continue\r\n" + cl(b"5") + te(b"chunked"),
                               CHUNKED_BODY + SMUGGLED)
    yield "expect-ok", post(b"Expect: 100-continue\r\n" + cl(b"5"), body)
    yield "get-with-cl-body", post(cl(b"5"), body, b"/api/hello/get", b"GET")
    yield "get-with-chunked-body", post(te(b"chunked"), CHUNKED_BODY + SMUGGLED, b"/get", b"GET")
    yield "get-no-length-body", post(b"", body, b"/api/hello/get", b"GET")
    yield "post-no-length-body", post(b"", body)
    yield "delete-with-body", post(cl(b"5"), body, b"/thing", b"DELETE")
    yield "options-with-body", post(cl(b"5"), body, b"/thing", b"OPTIONS")
    yield "connection-close-then-smuggled", post(b"Connection: close\r\n" + cl(b"5"), body)
    yield "upgrade-then-smuggled", post(b"Connection: Upgrade\r\nUpgrade: websocket\r\n",
                                        SMUGGLED, b"/ws", b"GET")
    yield "pipelined-three", post(cl(b"5"), b"hello" + post(cl(b"2"), b"hi") + SMUGGLED)
    yield "cl-te-classic", post(cl(b"%d" % len(b"0\r\n\r\n" + SMUGGLED)) + te(b"chunked"),
                                b"0\r\n\r\n" + SMUGGLED)
    hidden = b"GET /api/hello/smuggled HTTP/1.1\r\nHost: t\r\nX: "
    yield "te-cl-classic", post(te(b"chunked") + cl(b"4"),
                                b"%x\r\n" % len(hidden) + hidden + b"\r\n0\r\n\r\n")


CASES = [*te_cases(), *cl_cases(), *chunk_cases(), *line_cases()]
assert len({name for name, _ in CASES}) == len(CASES), "case names must be unique"

# Cases where an engine accepts what h11 refuses, on purpose: RFC 9112 lets a server be this
# lenient and it moves no message boundary. Each gives the view an engine may have instead of
# h11's (or any beginning of it: refusing earlier is still allowed).
BOTH = [("POST", "/echo", "hello"), ("GET", "/api/hello/smuggled", "")]
LAXER = {
    "leading-crlf": (
        ("RFC 9112 2.2: a server SHOULD ignore at least one empty line (CRLF) received before "
         "the request-line; h11 refuses it"), BOTH),
    "chunk-many-leading-zeros": (
        ("RFC 9112 7.1: chunk-size = 1*HEXDIG, any number of digits; h11 takes at most 20. "
         "Forty leading zeros still make 5, as nginx also reads them"), BOTH),
    "http10-cl-keep-alive": (
        ("RFC 9112 9.3 and C.2.2: an HTTP/1.0 request with Connection: keep-alive may persist; "
         "h11 closes every HTTP/1.0 connection. The body is still the 5 bytes of Content-Length"),
        BOTH),
    "request-line-two-spaces": (
        ("RFC 9112 3: recipients MAY parse the request-line on whitespace-delimited word "
         "boundaries (llhttp, the fast engine, does; Tornado refuses); the line still ends at "
         "its CRLF, so no message boundary moves"), BOTH),
    "request-line-two-spaces-version": (
        "RFC 9112 3, as request-line-two-spaces", BOTH),
}


# --- the reference: what h11 reads from the bytes ---

def origin_form(target):
    """The origin-form of a request target (an absolute-form one's path: RFC 9112 3.2.2)."""
    if target.startswith("/"):
        return target
    rest = target.partition("://")[2]
    slash = rest.find("/")
    return rest[slash:] if slash >= 0 else "/"


def h11_view(data):
    """(accepted requests as (method, target, body) text triples, how h11 stopped)."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    accepted, current, body = [], None, []
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            return accepted, f"refused: {exc}"
        if event is h11.NEED_DATA:
            return accepted, "incomplete" if current is not None or conn.trailing_data[0] else "idle"
        if isinstance(event, h11.Request):
            current, body = event, []
        elif isinstance(event, h11.Data):
            body.append(event.data)
        elif isinstance(event, h11.EndOfMessage):
            accepted.append((current.method.decode("latin-1"),
                             origin_form(current.target.decode("latin-1")),
                             b"".join(body).decode("latin-1")))
            current = None
            conn.send(h11.Response(status_code=200, headers=[("Content-Length", "0")]))
            conn.send(h11.EndOfMessage())
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return accepted, "closes"
            conn.start_next_cycle()
        else:
            return accepted, f"stops at {event!r}"


# --- what a server framed, read back from its answers ---

async def server_view(port, data):
    """(requests the application answered, the other final responses as (status, body), how the
    exchange ended). An HTTP/0.9 answer (a body without a status line) has status None."""
    client = await RawClient.connect(port)
    answered, others = [], []
    try:
        client.send(data)
        while True:
            try:
                response = await client.response(timeout=READ_TIMEOUT)
            except TimeoutError:
                return answered, others, "no close"
            except (EOFError, asyncio.IncompleteReadError, ConnectionError):
                return answered, others, "closed"
            except AssertionError as exc:  # RawClient: the first line is not HTTP/1.1's
                first = exc.args[0] if exc.args and isinstance(exc.args[0], bytes) else b""
                if first.startswith(b"HTTP/"):
                    return answered, others, f"unparsable response: {exc!r}"
                others.append((None, first + await client.rest(READ_TIMEOUT)))
                return answered, others, "closed"
            except ValueError as exc:
                return answered, others, f"unparsable response: {exc!r}"
            if response.status < 200:
                continue
            if response.header("X-Framing") == "app":
                seen = response.json()
                answered.append((seen["method"], seen["target"], seen["body"]))
            else:
                others.append((response.status, response.body))
    finally:
        client.close()


async def run_all(port, cases=CASES):
    """server_view of every case, each on its own connection, a few at a time."""
    semaphore = asyncio.Semaphore(CONCURRENCY)

    async def one(data):
        async with semaphore:
            return await server_view(port, data)
    return await asyncio.gather(*(one(data) for _, data in cases))


def compare(name, reference, seen):
    """Why an engine's view of a case is not allowed (None: it is)."""
    if name in LAXER:
        reference = LAXER[name][1]
    if len(seen) > len(reference):
        return f"{name}: accepted {len(seen)} requests where h11 accepts {len(reference)}: {seen}"
    if seen != reference[:len(seen)]:
        return f"{name}: framed {seen} where h11 frames {reference[:len(seen)]}"
    return None


@pytest.fixture
def framing_server(engine):
    """The framing app on the engine under test, idle connections closed after 1 s."""
    server = LiveServer("--engine", engine, *APP_ARGS, "--access-log", "off",
                        "--idle-timeout", "1", "--header-timeout", "1", "--body-timeout", "1")
    try:
        yield server.wait_ready()
    finally:
        server.stop()


@pytest.mark.gen_test(timeout=80)
async def test_no_engine_frames_a_request_unlike_h11(framing_server, engine, reliability):
    reliability.describe(f"{len(CASES)} request smuggling and message framing cases (CL.TE, "
                         "TE.CL, TE.TE obfuscations, odd Content-Lengths, chunk-size tricks, bare "
                         "CR/LF, obs-fold, request-line oddities, Expect, pipelining) sent to the "
                         f"{engine} engine; every request it framed compared with h11's reading",
                         area="smuggling")
    started = time.monotonic()
    views = await run_all(framing_server.port)
    problems, same, stricter, lenient, smuggled_answered = [], 0, 0, 0, 0
    for (name, data), (seen, _, ending) in zip(CASES, views, strict=True):
        reference, _ = h11_view(data)
        problem = compare(name, reference, seen)
        if ending.startswith("unparsable"):
            problem = f"{name}: {ending}"
        if problem:
            problems.append(problem)
        elif seen == reference:
            same += 1
        elif len(seen) > len(reference) or seen != reference[:len(seen)]:
            lenient += 1  # as LAXER lists it
        else:
            stricter += 1
        smuggled_answered += ("GET", "/api/hello/smuggled", "") in seen
    reliability.figure(f"{len(CASES)} cases, {same} framed as h11 frames them, {stricter} refused "
                       f"earlier than h11 (stricter), {lenient} accepted as a listed RFC 9112 leniency, "
                       f"{len(problems)} disagreements; the smuggled GET answered in "
                       f"{smuggled_answered} cases, each one where h11 reads it as a request too; "
                       f"{time.monotonic() - started:.1f} s")
    assert not problems, f"{len(problems)} cases disagree with h11:\n" + "\n".join(problems)


# --- nginx in front of the fast engine ---

NGINX_CONF = """
user root;
worker_processes 1;
pid {base}/nginx.pid;
error_log {base}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {base}/body;
    proxy_temp_path {base}/proxy;
    fastcgi_temp_path {base}/fastcgi;
    uwsgi_temp_path {base}/uwsgi;
    scgi_temp_path {base}/scgi;
    # docs/deploy/nginx.conf's proxying for one instance: HTTP/1.1 and keep-alive upstream
    upstream backend {{
        server 127.0.0.1:{backend} max_fails=0;
        keepalive 8;
        keepalive_timeout 20s;
    }}
    server {{
        listen 127.0.0.1:{port};
        # incomplete requests and idle client connections are cut after a second
        client_header_timeout 1s;
        client_body_timeout 1s;
        keepalive_timeout 1s;
        lingering_timeout 1s;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header Connection "";
            # a retried request would reach the backend twice: every attempt counts here
            proxy_next_upstream off;
            proxy_read_timeout 5s;
        }}
    }}
}}
"""


@pytest.fixture(scope="module")
def nginx_front():
    """(backend LiveServer on the fast engine with a JSON access log, nginx's port)."""
    require(nginx_binary() is not None, "nginx (apt-get install nginx)")
    base = Path(tempfile.mkdtemp(prefix="hps-smuggle-nginx-"))
    base.chmod(0o755)
    # idle upstream connections outlive nginx's keepalive_timeout: nginx never reuses a closed one
    backend = LiveServer("--engine", "fast", *APP_ARGS, "--access-log", "json",
                         "--access-log-flush", "0", "--idle-timeout", "30")
    nginx = None
    try:
        backend.wait_ready()
        port = free_port()
        (base / "nginx.conf").write_text(NGINX_CONF.format(base=base, backend=backend.port,
                                                           port=port))
        nginx = subprocess.Popen([nginx_binary(), "-c", str(base / "nginx.conf"),
                                  "-g", "daemon off;"], stderr=subprocess.PIPE)
        wait_port(port, 10)
        yield backend, port
    finally:
        if nginx is not None:
            nginx.terminate()
            nginx.communicate(timeout=10)
        backend.stop()
        shutil.rmtree(base, ignore_errors=True)


def access_log(server):
    """The requests in a server's JSON access log so far, as dicts."""
    return [json.loads(line) for line in list(server.stderr_lines) if line.startswith("{")]


async def settled_access_log(server, quiet=0.5, timeout=10.0):
    """The access log once no line has been added for `quiet` seconds."""
    deadline = time.monotonic() + timeout
    lines = access_log(server)
    while time.monotonic() < deadline:
        await asyncio.sleep(quiet)
        now = access_log(server)
        if len(now) == len(lines):
            break
        lines = now
    return lines


@pytest.mark.gen_test(timeout=80)
async def test_nginx_in_front_passes_no_request_it_did_not_answer(nginx_front, reliability):
    backend, port = nginx_front
    reliability.describe(f"the same {len(CASES)} smuggling cases sent to nginx (HTTP/1.1 and "
                         "keep-alive to the upstream, as docs/deploy/nginx.conf proxies) in front "
                         "of the fast engine: every request in the backend's access log is one "
                         "nginx answered to the client as a request of its own",
                         area="smuggling")
    started = time.monotonic()
    before = len(access_log(backend))
    views = await run_all(port)
    logged = (await settled_access_log(backend))[before:]
    answered = Counter((method, target) for seen, _, _ in views for method, target, _ in seen)
    backend_saw = Counter((line["method"], line["path"]) for line in logged
                          if line["status"] == 200)
    problems = []
    unanswered = backend_saw - answered
    if unanswered:
        problems.append(f"the backend served requests no client got an answer to: {unanswered}")
    if answered - backend_saw:
        problems.append(f"answers without a backend access log line: {answered - backend_saw}")
    # a request nginx passed and the backend refused: its refusal page must reach the client
    refusals = [line for line in logged if line["status"] != 200]
    pages = [body for _, others, _ in views for _, body in others if body.startswith(BACKEND_PAGE)]
    if len(refusals) != len(pages):
        problems.append(f"{len(refusals)} backend refusals, {len(pages)} reached the client: "
                        f"{refusals}")
    problems += [f"{name}: {ending}" for (name, _), (_, _, ending) in zip(CASES, views, strict=True)
                 if ending.startswith("unparsable")]
    # nginx's framing of each case, for the figure (nginx is its own judge of leniency)
    refused = sum(not seen for seen, _, _ in views)
    # where nginx itself reads more requests than h11 (its own leniency, not the backend's)
    nginx_laxer = sum(len(seen) > len(h11_view(data)[0])
                      for (_, data), (seen, _, _) in zip(CASES, views, strict=True))
    smuggled = answered[("GET", "/api/hello/smuggled")]
    refused_what = {f"{line['method']} {line['path']} {line['status']}" for line in refusals}
    # the upstream connections carry no leftover bytes: a plain request is framed as sent
    after, _, _ = await server_view(port, post(b"Connection: close\r\n" + cl(b"5"), b"hello"))
    if after != [("POST", "/echo", "hello")]:
        problems.append(f"a plain POST after the battery was framed as {after}")
    reliability.figure(f"{len(CASES)} cases through nginx: {sum(answered.values())} requests "
                       f"answered by the backend, {len(logged)} in its access log, "
                       f"{sum(unanswered.values())} it served unseen by the client, "
                       f"{len(refusals)} it refused ({', '.join(sorted(refused_what))}) whose "
                       f"page reached the client; nginx passed nothing of {refused} cases and read more "
                       f"requests than h11 in {nginx_laxer}; the smuggled GET answered {smuggled} times, "
                       f"each as a pipelined request of its own; "
                       f"{time.monotonic() - started:.1f} s")
    assert not problems, "\n".join(problems)
