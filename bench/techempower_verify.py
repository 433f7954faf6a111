"""TFB's verification of the seven test types, against any server: lists of rule violations.

``verify(base_url, db_url)`` runs every check and returns what broke (an empty list: all rules
hold); ``CHECKS`` has one function per test type. ``tests/test_techempower.py`` and the bench's
verification pass (``bench/suite_techempower.py``) both call these, on every server measured.
The rules are those of TFB's "Framework Tests Overview" and its toolset's verifier: status 200;
``Server`` and ``Date`` headers (a current HTTP date); ``Content-Length`` equal to the body's;
the Content-Type of each type; the body's shape; query counts clamped to 1..500 (missing or not a
number: 1); updates persisted; fortunes escaped, with the added row, sorted, in TFB's markup;
plaintext answered 16-deep pipelined, in order.

``python -m bench.techempower_verify URL [DB_URL]`` prints the violations (exit 1 if any).
"""
from __future__ import annotations

import asyncio
import email.utils
import html.parser
import json
import re
import socket
import sys
import time
import urllib.parse
from dataclasses import dataclass

from .techempower import (
    ADDED_FORTUNE,
    FORTUNES,
    HELLO,
    MAX_QUERIES,
    WORLD_ROWS,
    asyncpg_dsn,
    sorted_fortunes,
)

PIPELINE_DEPTH = 16
DATE_SKEW_S = 60
TIMEOUT_S = 20
# TFB's toolset (verifications.verify_headers): the Content-Type each test type may answer with
CONTENT_TYPES = {"json": r"^application/json(; ?charset=(UTF|utf)-8)?$",
                 "plaintext": r"^text/plain(; ?charset=(UTF|utf)-8)?$",
                 "html": r"^text/html; ?charset=(UTF|utf)-8$"}
# (query string value, count expected); None: the parameter left out
CLAMPS = ((None, 1), ("", 1), ("foo", 1), ("0", 1), ("-1", 1), ("1", 1), ("20", 20),
          ("500", MAX_QUERIES), ("501", MAX_QUERIES))


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # names lower-cased
    body: bytes


class Connection:
    """One keep-alive HTTP/1.1 connection: requests written (pipelined or not), answers parsed."""

    def __init__(self, base_url: str) -> None:
        url = urllib.parse.urlsplit(base_url)
        self.host = url.hostname or "127.0.0.1"
        self.sock = socket.create_connection((self.host, url.port or 80), timeout=TIMEOUT_S)
        self.file = self.sock.makefile("rb")

    def send(self, paths: list[str]) -> None:
        self.sock.sendall(b"".join(f"GET {p} HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode()
                                   for p in paths))

    def read(self) -> Response:
        status_line = self.file.readline()
        if not status_line:
            raise ConnectionError("the server closed the connection")
        status = int(status_line.split()[1])
        headers: dict[str, str] = {}
        while (line := self.file.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while size := int(self.file.readline().split(b";")[0], 16):
                body += self.file.read(size)
                self.file.readline()
            while self.file.readline() not in (b"\r\n", b"\n", b""):
                pass
        else:
            body = self.file.read(int(headers.get("content-length", 0)))
        return Response(status, headers, body)

    def get(self, path: str) -> Response:
        self.send([path])
        return self.read()

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def check_response(name: str, r: Response, kind: str) -> list[str]:
    """The rules every test type's answer follows: status, Server, Date, Content-Length, type."""
    out = []
    if r.status != 200:
        out.append(f"{name}: status {r.status}, not 200")
    if not r.headers.get("server"):
        out.append(f"{name}: no Server header")
    date = r.headers.get("date")
    try:
        when = email.utils.parsedate_to_datetime(date).timestamp() if date else None
    except (TypeError, ValueError):
        when = None
    if when is None:
        out.append(f"{name}: no valid Date header ({date!r})")
    elif abs(when - time.time()) > DATE_SKEW_S:
        out.append(f"{name}: Date {date!r} is not the current time")
    length = r.headers.get("content-length")
    if length is None:
        out.append(f"{name}: no Content-Length header")
    elif length != str(len(r.body)):
        out.append(f"{name}: Content-Length {length} but {len(r.body)} body bytes")
    content_type = r.headers.get("content-type", "")
    if not re.match(CONTENT_TYPES[kind], content_type):
        out.append(f"{name}: Content-Type {content_type!r} is not {kind}")
    return out


def json_body(name: str, r: Response) -> tuple[object, list[str]]:
    try:
        return json.loads(r.body), []
    except ValueError:
        return None, [f"{name}: body is not JSON: {r.body[:100]!r}"]


def check_world(name: str, value) -> list[str]:
    """A World object: exactly ``id`` and ``randomNumber``, integers 1..10,000."""
    if not isinstance(value, dict) or set(value) != {"id", "randomNumber"}:
        return [f"{name}: {value!r} is not an object with exactly id and randomNumber"]
    bad = [k for k, v in value.items()
           if not (type(v) is int and 1 <= v <= WORLD_ROWS)]
    return [f"{name}: {k} {value[k]!r} is not an integer 1..{WORLD_ROWS}" for k in bad]


def check_json(conn: Connection, db_url: str | None = None) -> list[str]:
    r = conn.get("/json")
    out = check_response("/json", r, "json")
    value, bad = json_body("/json", r)
    if not bad and value != {"message": HELLO}:
        bad = [f"/json: body {value!r} is not {{'message': {HELLO!r}}}"]
    return out + bad


def check_plaintext(conn: Connection, db_url: str | None = None) -> list[str]:
    """One request, then 16 pipelined in one write, then 16 alternating with /json (the order)."""
    out = []
    for depth in (1, PIPELINE_DEPTH):
        conn.send(["/plaintext"] * depth)
        for i in range(depth):
            r = conn.read()
            name = f"/plaintext ({i + 1} of {depth} pipelined)"
            out += check_response(name, r, "plaintext")
            if r.body != HELLO.encode():
                out.append(f"{name}: body {r.body[:100]!r} is not {HELLO!r}")
    paths = ["/plaintext" if i % 2 == 0 else "/json" for i in range(PIPELINE_DEPTH)]
    conn.send(paths)
    answers = [conn.read() for _ in paths]
    kinds = ["plaintext" if r.body == HELLO.encode() else "json" for r in answers]
    if kinds != [p[1:] for p in paths]:
        out.append(f"/plaintext pipelined with /json: answered out of order ({kinds})")
    return out


def check_db(conn: Connection, db_url: str | None = None) -> list[str]:
    r = conn.get("/db")
    value, bad = json_body("/db", r)
    return check_response("/db", r, "json") + (bad or check_world("/db", value))


def _clamped(conn: Connection, path: str, param: str, worlds=None) -> list[str]:
    """Every clamp case of a list test type: a JSON array of the expected count of Worlds."""
    out = []
    for text, expected in CLAMPS:
        url = path if text is None else f"{path}?{param}={urllib.parse.quote(text)}"
        r = conn.get(url)
        out += check_response(url, r, "json")
        value, bad = json_body(url, r)
        if not bad and not isinstance(value, list):
            bad = [f"{url}: {type(value).__name__}, not a JSON array"]
        elif not bad and len(value) != expected:
            bad = [f"{url}: {len(value)} objects, not {expected}"]
        for item in value if not bad else []:
            if problems := check_world(url, item):
                bad += problems
                break
        out += bad
        if worlds is not None and not bad:
            worlds += value
    return out


def check_queries(conn: Connection, db_url: str | None = None) -> list[str]:
    return _clamped(conn, "/queries", "queries")


def check_cached_queries(conn: Connection, db_url: str | None = None) -> list[str]:
    return _clamped(conn, "/cached-queries", "count")


def check_updates(conn: Connection, db_url: str | None = None) -> list[str]:
    """The clamps, then (with ``db_url``) each answered row's number is the one in the database."""
    worlds: list[dict] = []
    out = _clamped(conn, "/updates", "queries", worlds)
    if db_url and worlds:
        answered = {w["id"]: w["randomNumber"] for w in worlds}  # the last answer for each id
        stored = asyncio.run(_read_worlds(db_url, sorted(answered)))
        lost = [i for i, n in answered.items() if stored.get(i) != n]
        if lost:
            out.append(f"/updates: {len(lost)} of {len(answered)} rows not persisted, e.g. id "
                       f"{lost[0]}: answered {answered[lost[0]]}, stored {stored.get(lost[0])}")
    return out


async def _read_worlds(db_url: str, ids: list[int]) -> dict[int, int]:
    import asyncpg  # only the update check reads the database

    conn = await asyncpg.connect(asyncpg_dsn(db_url))
    try:
        rows = await conn.fetch("SELECT id, randomnumber FROM world WHERE id = ANY($1::int[])", ids)
    finally:
        await conn.close()
    return {r[0]: r[1] for r in rows}


class _Tokens(html.parser.HTMLParser):
    """The page as (kind, value) tokens: tags, text (entities decoded), the doctype."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tokens: list[tuple[str, str]] = []

    def handle_decl(self, decl: str) -> None:
        self.tokens.append(("decl", decl.lower()))

    def handle_starttag(self, tag, attrs) -> None:
        self.tokens.append(("start", tag if not attrs else f"{tag} {attrs}"))

    def handle_endtag(self, tag) -> None:
        self.tokens.append(("end", tag))

    def handle_data(self, data) -> None:
        if data.strip():  # TFB's verifier ignores whitespace between tags
            self.tokens.append(("data", data))


def _tokens(page: str) -> list[tuple[str, str]]:
    parser = _Tokens()
    parser.feed(page)
    parser.close()
    return parser.tokens


def expected_fortunes_page() -> str:
    """TFB's fortunes page for its 12 rows, escaped by hand (the reference for the tokens)."""
    import html as html_module

    rows = "".join(f"<tr><td>{i}</td><td>{html_module.escape(m)}</td></tr>"
                   for i, m in sorted_fortunes(FORTUNES))
    return ("<!DOCTYPE html><html><head><title>Fortunes</title></head><body><table>"
            f"<tr><th>id</th><th>message</th></tr>{rows}</table></body></html>")


def check_fortunes(conn: Connection, db_url: str | None = None) -> list[str]:
    r = conn.get("/fortunes")
    out = check_response("/fortunes", r, "html")
    try:
        page = r.body.decode("utf-8")
    except UnicodeDecodeError:
        return out + ["/fortunes: body is not UTF-8"]
    if "<script>" in page:
        out.append("/fortunes: the <script> fortune is not HTML-escaped")
    got, want = _tokens(page), _tokens(expected_fortunes_page())
    if got != want:
        # the first token that differs; when one is a prefix of the other, where the shorter ends
        first = next((i for i, (g, w) in enumerate(zip(got, want, strict=False)) if g != w),
                     min(len(got), len(want)))
        out.append(f"/fortunes: markup differs from TFB's at token {first}: "
                   f"{got[first:first + 3]} instead of {want[first:first + 3]}")
    if ("data", ADDED_FORTUNE[1]) not in got:
        out.append("/fortunes: the fortune added at request time is missing")
    return out


CHECKS = {"json": check_json, "plaintext": check_plaintext, "db": check_db,
          "queries": check_queries, "fortunes": check_fortunes, "updates": check_updates,
          "cached-queries": check_cached_queries}


def verify(base_url: str, db_url: str | None = None, types=tuple(CHECKS)) -> list[str]:
    """Every rule violation of the server at ``base_url`` (one connection per test type)."""
    out = []
    for name in types:
        try:
            conn = Connection(base_url)
        except OSError as exc:
            out.append(f"{name}: cannot connect to {base_url}: {exc}")
            continue
        try:
            out += CHECKS[name](conn, db_url)
        except (OSError, ValueError, IndexError) as exc:
            out.append(f"{name}: {type(exc).__name__}: {exc}")
        finally:
            conn.close()
    return out


if __name__ == "__main__":
    problems = verify(sys.argv[1].rstrip("/"), sys.argv[2] if len(sys.argv) > 2 else None)
    print("\n".join(problems) or "every rule holds")
    sys.exit(1 if problems else 0)
