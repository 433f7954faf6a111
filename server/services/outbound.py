"""Outbound HTTP: one app-owned AsyncHTTPClient, fan-out with a global limit, and an SSRF guard."""
from __future__ import annotations

import asyncio
import enum
import http.client
import ipaddress
import re
import socket
import ssl
import time
import urllib.parse
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

from tornado import httputil
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.netutil import DefaultLoopResolver, Resolver
from tornado.simple_httpclient import HTTPStreamClosedError, HTTPTimeoutError

from .. import __version__
from ..rules import is_digits, response_framing_problem
from .errors import Invalid

TITLE_SCAN_BYTES = 64 * 1024  # a <title> lives in the head; never keep more than this per URL
MAX_TITLE_CHARS = 300
INVALID_RESPONSE = "invalid response from the upstream"
REPORTED_HEADERS = ("Content-Type", "Content-Length", "Server", "Last-Modified", "ETag", "Location")


class OutboundRefused(Exception):
    """The SSRF guard refused to connect to an address."""


class ResponseTooLarge(httputil.HTTPInputError):
    """Raised from the body callback to stop reading; an HTTPInputError so Tornado closes quietly."""


# NAT64 prefixes carry an IPv4 address in their last 32 bits: that address decides
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
# IPv4-compatible addresses (::a.b.c.d, deprecated): ::7f00:1 is a spelling of 127.0.0.1
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def is_public_address(address: str) -> bool:
    """True for globally routable unicast addresses; loopback, private, link-local etc. are not.

    An IPv6 address that wraps an IPv4 one (mapped, NAT64, 6to4, Teredo, IPv4-compatible) is
    public only if the IPv4 address inside is.
    """
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return _is_public(ip.ipv4_mapped)
        if any(ip in network for network in _NAT64):
            return _is_public(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if ip in _IPV4_COMPATIBLE:
            return False
        if ip.sixtofour is not None and not _is_public(ip.sixtofour):
            return False
        if ip.teredo is not None and not all(_is_public(v4) for v4 in ip.teredo):
            return False
    return _is_public(ip)


def _is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return (ip.is_global and not ip.is_multicast and not ip.is_reserved
            and not ip.is_unspecified and not ip.is_loopback and not ip.is_link_local)


class GuardedResolver(Resolver):
    """Resolves names, then drops non-public addresses unless the host or address is allowed.

    The HTTP client connects only to addresses this returns, so the check holds for the address
    actually used (no DNS-rebinding gap between checking and connecting), redirects included.
    """

    def initialize(self, allow: frozenset[str]) -> None:
        self._inner: Resolver = DefaultLoopResolver()  # Configurable.__new__ is typed as Any
        self._allow = allow

    async def resolve(self, host: str, port: int,
                      family: socket.AddressFamily = socket.AF_UNSPEC) -> list[tuple[int, Any]]:
        addresses = await self._inner.resolve(host, port, family)
        if host.lower().strip("[]") in self._allow:
            return addresses
        usable = [(fam, addr) for fam, addr in addresses
                  if is_public_address(addr[0]) or addr[0] in self._allow]
        if not usable:
            shown = ", ".join(sorted({addr[0] for _, addr in addresses}))
            raise OutboundRefused(f"{host} resolves to a non-public address ({shown}); "
                                  "allow it with --outbound-allow")
        return usable


class _TitleParser(HTMLParser):
    """Collects the text of the first <title> element."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.in_title = False
        self.done = False
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag == "title" and not self.done:
            self.in_title = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "title" and self.in_title:
            self.in_title = False
            self.done = True

    def handle_data(self, data: str) -> None:
        if self.in_title:
            self.parts.append(data)


def extract_title(body: bytes, content_type: str | None) -> str | None:
    """The page title of an HTML body, whitespace collapsed, or None."""
    if not body or not content_type or "html" not in content_type.lower():
        return None
    charset = "utf-8"
    match = re.search(r"charset=([\w.-]+)", content_type, re.I)
    if match:
        charset = match.group(1)
    try:
        text = body.decode(charset, errors="replace")
    except LookupError:
        text = body.decode("utf-8", errors="replace")
    parser = _TitleParser()
    try:
        parser.feed(text)
    except Exception:  # a broken page has no title worth reporting; never fail the fetch for it
        return None
    if not parser.parts:
        return None
    title = " ".join("".join(parser.parts).split())
    return title[:MAX_TITLE_CHARS] or None


class FetchKind(enum.Enum):
    """How the fetch of one URL ended: a fixed set, so no caller reads the error's text."""

    OK = "ok"                                # an HTTP response, status below 400
    HTTP_ERROR = "http_error"                # an HTTP response, status 400 or above
    BAD_URL = "bad_url"                      # not an http(s) URL with a host and a valid port
    REFUSED = "refused"                      # the SSRF guard: a non-public address
    TOO_LARGE = "too_large"                  # more than max_bytes, declared or sent
    TIMEOUT = "timeout"
    CONNECTION_REFUSED = "connection_refused"
    CONNECTION_RESET = "connection_reset"
    CONNECTION_CLOSED = "connection_closed"  # closed before a complete response
    UNRESOLVABLE = "unresolvable"            # the host name does not resolve
    TLS_ERROR = "tls_error"
    NETWORK_ERROR = "network_error"          # any other failure the HTTP client reports (599)
    INVALID_RESPONSE = "invalid_response"    # a head whose body cannot be framed
    OTHER = "other"                          # another OS error or exception


# the label of each kind in the outbound metrics (a small, fixed set of series)
METRIC_LABELS = {FetchKind.OK: "ok", FetchKind.HTTP_ERROR: "http_error",
                 FetchKind.REFUSED: "refused", FetchKind.TIMEOUT: "timeout",
                 FetchKind.TOO_LARGE: "too_large", FetchKind.CONNECTION_REFUSED: "connect_error",
                 FetchKind.UNRESOLVABLE: "dns_error", FetchKind.BAD_URL: "invalid"}


@dataclass
class FetchResult:
    """What happened to one URL."""

    url: str
    ok: bool
    kind: FetchKind
    status: int | None = None
    reason: str | None = None
    time_ms: float = 0.0
    size: int = 0
    final_url: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    title: str | None = None
    error: str | None = None


def _check_url(url: Any) -> str | None:
    """Return why a URL cannot be fetched, or None when it can be tried."""
    if not isinstance(url, str) or not url:
        return "not a URL"
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return "only http and https URLs can be fetched"
    if not parts.hostname:
        return "the URL has no host"
    try:
        _ = parts.port  # read for its check: urlsplit parses the port only when asked, raising ValueError
    except ValueError:
        return "the URL has an invalid port"
    return None


def classify_failure(exc: BaseException) -> tuple[FetchKind, str]:
    """The kind of a failed fetch and a short, human-readable reason, without internals."""
    if isinstance(exc, OutboundRefused):
        return FetchKind.REFUSED, f"refused: {exc}"
    if isinstance(exc, HTTPTimeoutError) or isinstance(exc, asyncio.TimeoutError):
        return FetchKind.TIMEOUT, "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return FetchKind.CONNECTION_REFUSED, "connection refused"
    if isinstance(exc, ConnectionResetError):
        return FetchKind.CONNECTION_RESET, "connection reset"
    if isinstance(exc, socket.gaierror):
        return FetchKind.UNRESOLVABLE, "cannot resolve host"
    if isinstance(exc, ssl.SSLError):
        return FetchKind.TLS_ERROR, f"TLS error: {exc.reason or exc}"
    if isinstance(exc, HTTPStreamClosedError):
        return FetchKind.CONNECTION_CLOSED, "connection closed before a complete response"
    if isinstance(exc, HTTPClientError) and exc.code == 599:
        return FetchKind.NETWORK_ERROR, exc.message or "network error"
    if isinstance(exc, OSError):
        return FetchKind.OTHER, exc.strerror or type(exc).__name__
    return FetchKind.OTHER, type(exc).__name__


class OutboundService:
    """Fetches many URLs concurrently through one owned client, bounded in count, time and size."""

    def __init__(self, max_clients: int, timeout: float, allow: tuple[str, ...], max_urls: int,
                 max_bytes: int, metrics: Any = None) -> None:
        self.metrics = metrics
        self.timeout = timeout
        self.max_urls = max_urls
        self.max_bytes = max_bytes
        self._slots = asyncio.Semaphore(max_clients)
        # force_instance: the shared per-loop singleton would cap us at 10 and count queue time
        # against request_timeout; our semaphore keeps requests out of Tornado's queue entirely.
        # bodies go to a streaming callback that stops at max_bytes, so Tornado buffers none of them
        self.client = AsyncHTTPClient(
            force_instance=True, max_clients=max_clients,
            resolver=GuardedResolver(allow=frozenset(allow)),
            defaults={"user_agent": f"tornado-hps/{__version__}"},
        )

    async def fetch_all(self, urls: list[str], method: str) -> list[FetchResult]:
        """Fetch every URL at once (within the global limit); one result per URL, in order."""
        if method not in ("GET", "HEAD"):
            raise Invalid("method", "must be GET or HEAD")
        if not urls:
            raise Invalid("urls", "must list at least one URL")
        if len(urls) > self.max_urls:
            raise Invalid("urls", f"must list at most {self.max_urls} URLs")
        return list(await asyncio.gather(*(self.fetch_one(url, method) for url in urls)))

    async def fetch_one(self, url: str, method: str) -> FetchResult:
        """Fetch one URL; every failure is described in the result, never raised."""
        result = await self._fetch_one(url, method)
        if self.metrics is not None:
            self.metrics.observe_outbound(METRIC_LABELS.get(result.kind, "error"),
                                          result.time_ms / 1000)
        return result

    async def _fetch_one(self, url: str, method: str) -> FetchResult:
        problem = _check_url(url)
        if problem:
            return FetchResult(url=url, ok=False, kind=FetchKind.BAD_URL, error=problem)
        kept = bytearray()
        seen: dict[str, Any] = {"size": 0, "declared": None, "head": {}, "invalid": None}

        def on_chunk(chunk: bytes) -> None:
            seen["size"] += len(chunk)
            if seen["size"] > self.max_bytes:
                raise ResponseTooLarge(f"more than {self.max_bytes} bytes")
            if len(kept) < TITLE_SCAN_BYTES:
                kept.extend(chunk[: TITLE_SCAN_BYTES - len(kept)])

        def on_header(line: str) -> None:
            if line.startswith("HTTP/"):  # a redirect starts a new response
                seen["declared"] = None
                seen["size"] = 0
                seen["head"] = {}
                kept.clear()
            elif line in ("\r\n", "\n"):  # the head is complete: can its body be framed?
                seen["invalid"] = response_framing_problem(seen["head"])
            elif ":" in line:
                name, value = (part.strip() for part in line.split(":", 1))
                seen["head"].setdefault(name.title(), []).append(value)
                if name.lower() == "content-length":
                    # "²" passes str.isdigit() but not int(); Tornado then refuses the response
                    seen["declared"] = int(value) if is_digits(value) else None

        request = HTTPRequest(
            url, method=method, connect_timeout=self.timeout, request_timeout=self.timeout,
            follow_redirects=True, max_redirects=5, decompress_response=True,
            streaming_callback=on_chunk, header_callback=on_header,
        )
        started = time.perf_counter()
        async with self._slots:
            try:
                response = await self.client.fetch(request, raise_error=False)
                failure = None
            except Exception as exc:
                failure = exc
        elapsed = (time.perf_counter() - started) * 1000
        declared = seen["declared"]
        if (declared is not None and declared > self.max_bytes) or seen["size"] > self.max_bytes:
            return FetchResult(url=url, ok=False, kind=FetchKind.TOO_LARGE, time_ms=round(elapsed, 3),
                               size=seen["size"], error=f"response larger than {self.max_bytes} bytes")
        if failure is not None:
            # Tornado closes on a head whose body it cannot frame and says only "Connection closed"
            kind, error = ((FetchKind.INVALID_RESPONSE, f"{INVALID_RESPONSE}: {seen['invalid']}")
                           if seen["invalid"] is not None else classify_failure(failure))
            return FetchResult(url=url, ok=False, kind=kind, time_ms=round(elapsed, 3),
                               size=seen["size"], error=error)
        headers = {name: response.headers[name] for name in REPORTED_HEADERS if name in response.headers}
        ok = 200 <= response.code < 400
        return FetchResult(
            url=url, ok=ok, kind=FetchKind.OK if ok else FetchKind.HTTP_ERROR, status=response.code,
            reason=response.reason or http.client.responses.get(response.code, ""),
            time_ms=round(elapsed, 3), size=seen["size"], final_url=response.effective_url,
            headers=headers,
            title=(extract_title(bytes(kept), response.headers.get("Content-Type"))
                   if method == "GET" else None),
        )

    async def close(self) -> None:
        """Close the owned client (its connections and resolver)."""
        self.client.close()
