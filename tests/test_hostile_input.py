"""A battery of malformed and hostile raw HTTP requests against the whole server, on both engines.

Every case is sent over a raw socket. What must hold for each: a 4xx (or, for requests that are
odd but legal, any answer below 500) or a clean close, within a few seconds; never a 5xx, a hang,
a traceback in the log, a second (smuggled) response, or a byte of a file outside the served
trees. One test per case and engine (readable failures), then one test per engine that sends the
whole battery to a single server and checks it still answers normally afterwards.
"""
import asyncio
import json
import os
import re
import time

import pytest

pytestmark = pytest.mark.hardening

SECRET = "top-secret-7f3a9c"  # the content of a file outside every served directory
HOST = b"Host: t\r\n"
JSON = b"Content-Type: application/json\r\n"
CASE_TIMEOUT = 5.0  # seconds a case may take (incomplete requests are cut at idle_timeout = 1 s)

# what a case must get: REJECT = a 4xx or a close without a response; ANY = any answer below 500
# (odd but legal requests) or a close; NO_SECRET = like ANY, and nothing outside the tree leaks
REJECT, ANY, NO_SECRET = "reject", "any", "no-secret"


def req(target=b"/api/hello/x", method=b"GET", version=b"HTTP/1.1", headers=b"", body=b"",
        host=True):
    """A raw request (the Host header first unless host=False)."""
    return (method + b" " + target + b" " + version + b"\r\n" + (HOST if host else b"")
            + headers + b"\r\n" + body)


def post(target, body, headers=JSON, length=True):
    """A POST with a body (and its Content-Length unless length=False)."""
    if length:
        headers += b"Content-Length: %d\r\n" % len(body)
    return req(target, b"POST", headers=headers, body=body)


def chunked(chunks, target=b"/api/echo"):
    return req(target, b"POST", headers=JSON + b"Transfer-Encoding: chunked\r\n", body=chunks)


SMUGGLED = b"GET /api/hello/smuggled HTTP/1.1\r\nHost: t\r\n\r\n"


def smuggle(framing):
    """A POST framed by these headers whose body hides a second request."""
    return (b"POST /api/echo HTTP/1.1\r\nHost: t\r\n" + JSON + framing + b"\r\n"
            + b"3\r\n[1]\r\n0\r\n\r\n" + SMUGGLED)


WS_HEADERS = (b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n")

CASES = [
    # --- request lines ---
    ("empty-line-only", b"\r\n\r\n", REJECT),
    ("lf-only", b"\n\n\n", REJECT),
    ("garbage", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\xff" * 40, REJECT),
    ("random-bytes", bytes(range(256)) * 4, REJECT),
    ("method-only", b"GET\r\n\r\n", REJECT),
    ("http09", b"GET /\r\n\r\n", REJECT),
    ("http09-no-blank", b"GET /api/hello/x\r\n", REJECT),
    ("extra-token", b"GET / HTTP/1.1 extra\r\nHost: t\r\n\r\n", REJECT),
    ("leading-space", b" GET / HTTP/1.1\r\nHost: t\r\n\r\n", REJECT),
    # RFC 9112 3: recipients MAY split the request line on whitespace (llhttp does)
    ("double-space", b"GET  / HTTP/1.1\r\nHost: t\r\n\r\n", ANY),
    ("tab-separator", b"GET\t/\tHTTP/1.1\r\nHost: t\r\n\r\n", REJECT),
    ("version-9.9", req(version=b"HTTP/9.9"), REJECT),
    ("version-2.0", req(version=b"HTTP/2.0"), REJECT),
    ("version-1.12", req(version=b"HTTP/1.12"), REJECT),
    ("version-lowercase", req(version=b"http/1.1"), REJECT),
    ("version-no-minor", req(version=b"HTTP/1"), REJECT),
    ("version-garbage", req(version=b"HTTX/1.1"), REJECT),
    ("version-missing", b"GET /api/hello/x \r\nHost: t\r\n\r\n", REJECT),
    ("bare-lf-line-endings", b"GET /api/hello/x HTTP/1.1\nHost: t\n\n", ANY),
    ("leading-crlf", b"\r\n" + req(), ANY),
    ("incomplete-head", b"GET /api/hello/x HTTP/1.1\r\nHost: t\r\n", REJECT),
    ("http2-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", REJECT),
    ("http2-preface-frames", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00",
     REJECT),
    ("h2c-upgrade", req(headers=b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                        b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"), ANY),
    # --- methods ---
    ("method-lowercase", req(method=b"get"), REJECT),
    ("method-unknown", req(method=b"FOO"), REJECT),
    ("method-symbols", req(method=b"G@T"), REJECT),
    ("method-nul", req(method=b"GE\x00T"), REJECT),
    ("method-long", req(method=b"A" * 10000), REJECT),
    ("method-trace", req(method=b"TRACE"), REJECT),
    ("method-connect", b"CONNECT evil:443 HTTP/1.1\r\nHost: evil:443\r\n\r\n", REJECT),
    ("method-options-star", req(b"*", b"OPTIONS"), REJECT),
    ("method-delete-echo", req(b"/api/echo", b"DELETE"), REJECT),
    ("method-propfind", req(b"/", b"PROPFIND"), REJECT),
    ("method-patch-page", req(b"/hello", b"PATCH", headers=b"Content-Length: 0\r\n"), REJECT),
    # --- NUL and control bytes ---
    ("nul-in-target", req(b"/api/hello/a\x00b"), REJECT),
    ("ctl-in-target", req(b"/api/hello/a\x01b"), REJECT),
    ("del-in-target", req(b"/api/hello/a\x7fb"), REJECT),
    ("space-in-target", req(b"/api/hello/a b"), REJECT),
    ("nul-in-header-name", req(headers=b"X-A\x00: 1\r\n"), REJECT),
    ("nul-in-header-value", req(headers=b"X-A: 1\x002\r\n"), REJECT),
    ("ctl-in-header-value", req(headers=b"X-A: 1\x1b2\r\n"), REJECT),
    ("del-in-header-value", req(headers=b"X-A: 1\x7f2\r\n"), ANY),
    ("high-bytes-in-header-value", req(headers=b"X-A: \xff\xfe\xc3(\r\n"), ANY),
    # --- header injection and syntax ---
    ("bare-cr-in-value", req(headers=b"X-A: a\rInjected: 1\r\n"), REJECT),
    ("bare-cr-line-end", req(headers=b"X-A: a\rX-B: b\r\n"), REJECT),
    ("bare-lf-in-value", req(headers=b"X-A: a\nInjected: 1\r\n"), ANY),
    ("obs-fold", req(headers=b"X-A: a\r\n folded\r\n"), REJECT),
    ("obs-fold-tab", req(headers=b"X-A: a\r\n\tfolded\r\n"), REJECT),
    ("fold-first-header", b"GET /api/hello/x HTTP/1.1\r\n folded: x\r\nHost: t\r\n\r\n", REJECT),
    ("no-colon", req(headers=b"Bogus\r\n"), REJECT),
    ("empty-name", req(headers=b": value\r\n"), REJECT),
    ("space-in-name", req(headers=b"Bad Name: x\r\n"), REJECT),
    ("space-before-colon", req(headers=b"Content-Length : 0\r\n"), REJECT),
    ("non-ascii-name", req(headers="X-Ü: x\r\n".encode()), REJECT),
    ("missing-host", req(host=False), REJECT),
    ("two-hosts", req(headers=b"Host: evil\r\n"), ANY),
    ("bad-host", req(host=False, headers=b"Host: a/b\r\n"), REJECT),
    ("host-with-crlf-encoded", req(host=False, headers=b"Host: a%0d%0aX: 1\r\n"), REJECT),
    ("request-id-injection", req(headers=b"X-Request-ID: a\r\n\r\nGET /x HTTP/1.1\r\n"), ANY),
    ("xff-garbage", req(headers=b"X-Forwarded-For: ' OR 1=1 --, ::ffff:999.1.1.1, \xff\r\n"), ANY),
    ("cookie-garbage", req(headers=b"Cookie: =;;;; a==b; \"x\"=\xff; _xsrf=\x00\r\n"), ANY),
    ("cookie-huge-count", req(headers=b"Cookie: " + b"; ".join(b"c%d=v" % i for i in range(2000))
                              + b"\r\n"), ANY),
    ("authorization-garbage", req(b"/api/messages/1", b"DELETE",
                                  headers=b"Authorization: Bearer \xff\xfe" + b"A" * 5000 + b"\r\n"),
     REJECT),
    ("accept-encoding-garbage", req(headers=b"Accept-Encoding: gzip;q=NaN, *;q=-1, \xff\r\n"), ANY),
    ("range-garbage", req(b"/static/css/site.css", headers=b"Range: bytes=99999999999999999999-,-0,"
                          b"5-1,a-b\r\n"), ANY),
    ("if-modified-since-garbage", req(b"/static/css/site.css",
                                      headers=b"If-Modified-Since: Tue, 99 Foo 99999 99:99:99 GMT\r\n"),
     ANY),
    ("if-none-match-garbage", req(b"/static/css/site.css", headers=b"If-None-Match: \"\xff\", W/\r\n"),
     ANY),
    # --- framing and request smuggling ---
    ("cl-te", smuggle(b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n"), REJECT),
    ("te-cl", smuggle(b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n"), REJECT),
    ("te-chunked-chunked", smuggle(b"Transfer-Encoding: chunked, chunked\r\n"), REJECT),
    ("te-two-headers", smuggle(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"),
     REJECT),
    ("te-xchunked", smuggle(b"Transfer-Encoding: xchunked\r\n"), REJECT),
    ("te-chunked-space-name", smuggle(b"Transfer-Encoding : chunked\r\n"), REJECT),
    ("te-identity", smuggle(b"Transfer-Encoding: identity\r\n"), REJECT),
    ("te-gzip-chunked", smuggle(b"Transfer-Encoding: gzip, chunked\r\n"), REJECT),
    ("te-chunked-gzip", smuggle(b"Transfer-Encoding: chunked, gzip\r\n"), REJECT),
    ("te-vertical-tab", smuggle(b"Transfer-Encoding:\x0bchunked\r\n"), REJECT),
    ("te-folded", smuggle(b"Transfer-Encoding:\r\n chunked\r\n"), REJECT),
    ("te-http10", b"POST /api/echo HTTP/1.0\r\nHost: t\r\n" + JSON
     + b"Transfer-Encoding: chunked\r\n\r\n3\r\n[1]\r\n0\r\n\r\n" + SMUGGLED, REJECT),
    ("cl-plus-sign", smuggle(b"Content-Length: +3\r\n"), REJECT),
    ("cl-negative", smuggle(b"Content-Length: -3\r\n"), REJECT),
    ("cl-hex", smuggle(b"Content-Length: 0x3\r\n"), REJECT),
    ("cl-exponent", smuggle(b"Content-Length: 3e0\r\n"), REJECT),
    ("cl-inner-space", smuggle(b"Content-Length: 3 3\r\n"), REJECT),
    ("cl-two-different", smuggle(b"Content-Length: 3\r\nContent-Length: 4\r\n"), REJECT),
    ("cl-comma-list", smuggle(b"Content-Length: 3, 4\r\n"), REJECT),
    ("cl-same-twice-list", smuggle(b"Content-Length: 3, 3\r\n"), ANY),
    ("cl-empty", smuggle(b"Content-Length: \r\n"), REJECT),
    ("cl-overflow", smuggle(b"Content-Length: 99999999999999999999999999\r\n"), REJECT),
    ("cl-unicode-digit", smuggle("Content-Length: ３\r\n".encode()), REJECT),
    ("cl-longer-than-body", post(b"/api/echo", b"[1]", JSON + b"Content-Length: 10\r\n",
                                 length=False), REJECT),
    # a body shorter than what follows is plain pipelining: the second request is answered
    ("cl-shorter-than-body", post(b"/api/echo", b"[1]" + req(b"/api/hello/pipelined"),
                                  JSON + b"Content-Length: 3\r\n", length=False), ANY),
    # --- chunked bodies ---
    ("chunk-bad-hex", chunked(b"zz\r\nabc\r\n0\r\n\r\n"), REJECT),
    ("chunk-negative", chunked(b"-3\r\nabc\r\n0\r\n\r\n"), REJECT),
    ("chunk-size-overflow", chunked(b"ffffffffffffffffffffffff\r\nabc\r\n0\r\n\r\n"), REJECT),
    ("chunk-size-huge", chunked(b"7fffffffffffffff\r\nabc\r\n"), REJECT),
    ("chunk-missing-crlf", chunked(b"3\r\n[1]0\r\n\r\n"), REJECT),
    ("chunk-data-longer", chunked(b"2\r\n[1]\r\n0\r\n\r\n"), REJECT),
    ("chunk-bare-lf", chunked(b"3\n[1]\n0\n\n"), REJECT),
    ("chunk-size-space", chunked(b"3 3\r\n[1]\r\n0\r\n\r\n"), REJECT),
    ("chunk-size-0x", chunked(b"0x3\r\n[1]\r\n0\r\n\r\n"), REJECT),
    ("chunk-ext-abuse", chunked(b"3;" + b"a=b;" * 5000 + b"\r\n[1]\r\n0\r\n\r\n"), REJECT),
    ("chunk-ext-bad-chars", chunked(b"3;\x00\x01\r\n[1]\r\n0\r\n\r\n"), REJECT),
    ("chunk-ext-ok", chunked(b"3;name=value\r\n[1]\r\n0\r\n\r\n"), ANY),
    ("chunk-no-last", chunked(b"3\r\n[1]\r\n"), REJECT),
    ("chunk-trailer-garbage", chunked(b"3\r\n[1]\r\n0\r\nX\x00: \x01\r\n\r\n"), REJECT),
    ("chunk-trailer-smuggle", chunked(b"3\r\n[1]\r\n0\r\nContent-Length: 50\r\n\r\n" + SMUGGLED),
     ANY),
    ("chunk-many-tiny", chunked(b"".join(b"1\r\n \r\n" for _ in range(20000)) + b"1\r\n1\r\n0\r\n\r\n"),
     ANY),
    # --- sizes ---
    ("huge-target", req(b"/api/hello/" + b"a" * 70000), REJECT),
    ("huge-query", req(b"/api/hello/x?q=" + b"q" * 70000), REJECT),
    ("huge-header-value", req(headers=b"X-Big: " + b"b" * 70000 + b"\r\n"), REJECT),
    ("huge-header-name", req(headers=b"X" * 70000 + b": 1\r\n"), REJECT),
    ("many-headers-over-limit", req(headers=b"".join(b"X-H%d: v\r\n" % i for i in range(10000))),
     REJECT),
    ("many-headers-under-limit", req(headers=b"".join(b"X-H%d: v\r\n" % i for i in range(500))), ANY),
    ("same-header-many-times", req(headers=b"X-A: 1\r\n" * 1500), ANY),
    ("body-over-limit", post(b"/api/echo", b"[" + b"1," * 600000 + b"1]"), REJECT),
    ("long-target-under-limit", req(b"/api/hello/" + b"a" * 8000), ANY),
    # --- targets ---
    ("target-star", req(b"*"), REJECT),
    ("target-absolute-evil", req(b"http://evil/"), ANY),
    ("target-absolute-self", req(b"http://t/api/hello/x"), ANY),
    ("target-absolute-https-path", req(b"https://evil/api/hello/x"), ANY),
    ("target-authority", req(b"evil:80"), REJECT),
    ("target-double-slash", req(b"//x"), ANY),
    ("target-double-slash-api", req(b"//api/hello/x"), ANY),
    ("target-empty", b"GET  HTTP/1.1\r\nHost: t\r\n\r\n", REJECT),
    ("target-relative", req(b"api/hello/x"), REJECT),
    ("target-query-only", req(b"?a=b"), REJECT),
    ("target-fragment", req(b"/api/hello/x#frag"), ANY),
    ("target-backslashes", req(b"/\\\\evil\\api"), ANY),
    ("target-percent-alone", req(b"/api/hello/%"), ANY),
    ("target-percent-bad-hex", req(b"/api/hello/%zz%g1"), ANY),
    ("target-percent-nul", req(b"/api/hello/%00"), REJECT),
    ("target-percent-crlf", req(b"/hello/a%0d%0aSet-Cookie:%20x=1"), ANY),
    ("target-dots-api", req(b"/api/../api/hello/x"), ANY),
    ("target-many-slashes", req(b"/" * 5000), ANY),
    ("target-redirect-open", req(b"/files//evil.example/"), ANY),
    # --- path traversal on /static/ and /files/ ---
    ("static-dotdot", req(b"/static/../server/config.py"), NO_SECRET),
    ("static-encoded-dotdot", req(b"/static/%2e%2e/%2e%2e/server/config.py"), NO_SECRET),
    ("static-encoded-slash", req(b"/static/..%2f..%2fserver%2fconfig.py"), NO_SECRET),
    ("static-backslash", req(b"/static/..\\..\\setup.cfg"), NO_SECRET),
    ("static-absolute", req(b"/static//etc/passwd"), NO_SECRET),
    ("static-double-encoded", req(b"/static/%252e%252e/%252e%252e/setup.cfg"), NO_SECRET),
    ("static-overlong-utf8-dot", req(b"/static/%c0%ae%c0%ae/setup.cfg"), NO_SECRET),
    ("static-nul", req(b"/static/css/site.css%00.txt"), NO_SECRET),
    ("files-dotdot", req(b"/files/../secret.txt"), NO_SECRET),
    ("files-dotdot-deep", req(b"/files/sub/../../secret.txt"), NO_SECRET),
    ("files-encoded-dotdot", req(b"/files/%2e%2e/secret.txt"), NO_SECRET),
    ("files-mixed-dotdot", req(b"/files/.%2e/secret.txt"), NO_SECRET),
    ("files-encoded-slash", req(b"/files/..%2fsecret.txt"), NO_SECRET),
    ("files-encoded-backslash", req(b"/files/..%5csecret.txt"), NO_SECRET),
    ("files-all-encoded", req(b"/files/%2e%2e%2fsecret.txt"), NO_SECRET),
    ("files-double-encoded", req(b"/files/%252e%252e%252fsecret.txt"), NO_SECRET),
    ("files-slashes-dotdot", req(b"/files//..//secret.txt"), NO_SECRET),
    ("files-backslash", req(b"/files/..\\secret.txt"), NO_SECRET),
    ("files-symlink-out", req(b"/files/link-out.txt"), NO_SECRET),
    ("files-symlink-dir-out", req(b"/files/dir-out/secret.txt"), NO_SECRET),
    ("files-dotfile", req(b"/files/.hidden"), NO_SECRET),
    ("files-nul", req(b"/files/inside.txt%00.png"), NO_SECRET),
    ("files-absolute-secret", req(b"/files//tmp/secret.txt"), NO_SECRET),
    ("files-range-garbage", req(b"/files/inside.txt", headers=b"Range: bytes=-99999999999999999999\r\n"),
     NO_SECRET),
    # --- invalid UTF-8 and percent-encoding ---
    ("utf8-invalid-path", req(b"/api/hello/%ff%fe"), ANY),
    ("utf8-truncated-path", req(b"/api/hello/%c3"), ANY),
    ("utf8-overlong-path", req(b"/api/hello/%c0%af"), ANY),
    ("utf8-surrogate-path", req(b"/api/hello/%ed%a0%80"), ANY),
    ("utf8-raw-bytes-path", req(b"/api/hello/\xff\xfe"), ANY),
    ("utf8-page-path", req(b"/hello/%ff"), ANY),
    ("utf8-query-name", req(b"/api/messages?%ff=%fe&limit=%ff"), ANY),
    ("query-limit-garbage", req(b"/api/messages?limit=1e3&before=-1"), ANY),
    ("query-slow-huge", req(b"/api/slow?ms=99999999999999999999999999999"), ANY),
    ("query-slow-unicode-digits", req("/api/slow?ms=١٢".encode()), ANY),
    ("query-many-params", req(b"/api/hello/x?" + b"&".join(b"a%d=%d" % (i, i) for i in range(3000))),
     ANY),
    ("message-id-garbage", req(b"/api/messages/%ff%00"), ANY),
    ("message-id-huge", req(b"/api/messages/" + b"9" * 5000), ANY),
    ("json-invalid-utf8", post(b"/api/echo", b'["\xff\xfe"]'), REJECT),
    ("json-utf16", post(b"/api/echo", '["x"]'.encode("utf-16")), ANY),  # json.loads detects it
    ("json-bom", post(b"/api/echo", b'\xef\xbb\xbf["x"]'), ANY),
    ("json-lone-surrogate", post(b"/api/echo", b'["\\ud800"]'), ANY),
    ("json-surrogate-name", post(b"/api/hello", b'{"name": "\\udfff\\ud800"}'), ANY),
    ("json-nan", post(b"/api/echo", b"[NaN, Infinity, -Infinity]"), ANY),
    ("json-huge-exponent", post(b"/api/echo", b"[1e999999]"), ANY),
    ("json-huge-integer", post(b"/api/echo", b"[" + b"9" * 100000 + b"]"), ANY),
    ("json-huge-integer-compute", post(b"/api/compute", b'{"n": ' + b"9" * 5000 + b"}"), ANY),
    ("json-deep-arrays-echo", post(b"/api/echo", b"[" * 100000), REJECT),
    ("json-deep-arrays-closed-echo", post(b"/api/echo", b"[" * 50000 + b"]" * 50000), ANY),
    ("json-deep-objects-echo", post(b"/api/echo", b'{"a":' * 50000 + b"1" + b"}" * 50000), ANY),
    ("json-deep-hello", post(b"/api/hello", b'{"name":' + b"[" * 100000), REJECT),
    ("json-deep-closed-hello", post(b"/api/hello", b'{"name":' + b"[" * 50000 + b"]" * 50000 + b"}"),
     REJECT),
    ("json-deep-messages", post(b"/api/messages", b"[" * 100000), REJECT),
    ("json-deep-closed-messages", post(b"/api/messages",
                                       b'{"name":"a","text":' + b"[" * 50000 + b"]" * 50000 + b"}"),
     REJECT),
    ("json-deep-compute", post(b"/api/compute", b'{"n":' + b"{" * 100000), REJECT),
    ("json-deep-fetch", post(b"/api/fetch", b'{"urls":' + b"[" * 50000 + b"]" * 50000 + b"}"), ANY),
    ("json-duplicate-keys", post(b"/api/hello", b'{"name": "a", "name": {"x": 1}}'), ANY),
    ("json-trailing-garbage", post(b"/api/echo", b"[1] [2]"), REJECT),
    ("json-empty", post(b"/api/echo", b""), REJECT),
    ("json-whitespace", post(b"/api/echo", b" \t\r\n"), REJECT),
    ("json-nul", post(b"/api/echo", b"[1]\x00"), REJECT),
    ("json-wrong-types-messages", post(b"/api/messages", b'{"name": 1, "text": [null]}'), REJECT),
    ("json-huge-string-messages", post(b"/api/messages", json.dumps(
        {"name": "n", "text": "t" * 500000}).encode()), REJECT),
    ("json-form-guestbook", post(b"/guestbook", b"name=a&text=b",
                                 b"Content-Type: application/x-www-form-urlencoded\r\n"), REJECT),
    # --- content types ---
    ("ctype-text", post(b"/api/echo", b"[1]", b"Content-Type: text/plain\r\n"), REJECT),
    ("ctype-missing", post(b"/api/echo", b"[1]", b""), REJECT),
    ("ctype-multipart-no-boundary", post(b"/api/echo", b"[1]", b"Content-Type: multipart/form-data\r\n"),
     REJECT),
    ("ctype-multipart-garbage", post(b"/api/echo", b"--x\r\n\xff\r\n--x--",
                                     b"Content-Type: multipart/form-data; boundary=x\r\n"), REJECT),
    ("ctype-json-latin1", post(b"/api/echo", b'["\xe9"]', b"Content-Type: application/json; "
                               b"charset=latin-1\r\n"), REJECT),
    ("ctype-jsonx", post(b"/api/echo", b"[1]", b"Content-Type: application/jsonx\r\n"), REJECT),
    ("ctype-many-params", post(b"/api/echo", b"[1]", b"Content-Type: application/json" +
                               b"; a=b" * 3000 + b"\r\n"), ANY),
    ("ctype-garbage", post(b"/api/echo", b"[1]", b"Content-Type: \xff/\x01;;;=\r\n"), REJECT),
    ("content-encoding-gzip-garbage", post(b"/api/echo", b"not gzip at all",
                                           JSON + b"Content-Encoding: gzip\r\n"), REJECT),
    ("content-encoding-unknown", post(b"/api/echo", b"[1]", JSON + b"Content-Encoding: br\r\n"), ANY),
    # --- HTTP/1.0 ---
    ("http10-plain", req(version=b"HTTP/1.0", host=False), ANY),
    ("http10-keep-alive", req(version=b"HTTP/1.0", headers=b"Connection: keep-alive\r\n"), ANY),
    ("http10-post-no-length", req(b"/api/echo", b"POST", b"HTTP/1.0", JSON, b"[1]"), ANY),
    ("http10-absolute", req(b"http://evil/", version=b"HTTP/1.0"), ANY),
    ("http10-connection-garbage", req(version=b"HTTP/1.0",
                                      headers=b"Connection: \xff, close, keep-alive, ,,\r\n"), ANY),
    ("connection-header-abuse", req(headers=b"Connection: Host, Content-Length, X-Request-ID\r\n"),
     ANY),
    # --- Expect ---
    ("expect-100-no-body", req(headers=b"Expect: 100-continue\r\n"), ANY),
    ("expect-unknown", post(b"/api/echo", b"[1]", JSON + b"Expect: 200-ok\r\n"), ANY),
    ("expect-100-huge", req(b"/api/echo", b"POST", headers=JSON + b"Expect: 100-continue\r\n"
                            b"Content-Length: 999999999999\r\n"), REJECT),
    ("expect-100-twice", post(b"/api/echo", b"[1]", JSON + b"Expect: 100-continue\r\n"
                              b"Expect: 100-continue\r\n"), ANY),
    ("expect-100-garbage", post(b"/api/echo", b"[1]", JSON + b"Expect: 100-continue\xff\r\n"), ANY),
    # --- WebSocket upgrade abuse ---
    ("ws-no-key", req(b"/guestbook/live", headers=b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                      b"Sec-WebSocket-Version: 13\r\n"), REJECT),
    ("ws-bad-version", req(b"/guestbook/live", headers=WS_HEADERS.replace(b": 13", b": 99")), REJECT),
    ("ws-post", req(b"/guestbook/live", b"POST", headers=WS_HEADERS + b"Content-Length: 0\r\n"),
     REJECT),
    ("ws-with-body", req(b"/guestbook/live", headers=WS_HEADERS + b"Content-Length: 5\r\n",
                         body=b"hello"), ANY),
    ("ws-to-api", req(headers=WS_HEADERS), ANY),
    ("ws-to-unknown", req(b"/nope", headers=WS_HEADERS), REJECT),
    ("ws-garbage-frames", req(b"/guestbook/live", headers=WS_HEADERS + b"Origin: http://t\r\n")
     + b"\xff\xff" + b"\x00" * 64, ANY),
    ("ws-bad-origin", req(b"/guestbook/live", headers=WS_HEADERS + b"Origin: http://evil\r\n"), ANY),
    ("ws-upgrade-garbage", req(b"/guestbook/live", headers=b"Upgrade: \xff\x00\r\nConnection: Upgrade\r\n"),
     ANY),
    # --- pipelining a bad request behind a good one ---
    ("pipelined-good-then-bad", req() + b"GET /\x00 HTTP/1.1\r\n\r\n", ANY),
    ("pipelined-many", req() * 200, ANY),
]
# a tuple without an expectation means REJECT
CASES = [case if len(case) == 3 else (*case, REJECT) for case in CASES]
assert len({case[0] for case in CASES}) == len(CASES), "case ids must be unique"


# --- sending a case and reading the answer ---

STATUS = re.compile(rb"HTTP/1\.[01] (\d{3})[^\r\n]*\r\n")


def first_response_end(data):
    """The offset just past the first complete final response in data, or None (unknown yet)."""
    start = 0
    while True:
        head_end = data.find(b"\r\n\r\n", start)
        if head_end < 0:
            return None
        match = STATUS.match(data, start)
        if match is None:
            return len(data)  # not HTTP: nothing more to wait for
        status = int(match.group(1))
        body_start = head_end + 4
        if 100 <= status < 200 and status != 101:
            start = body_start  # 100 Continue: the final response follows
            continue
        if status == 101:
            return body_start
        head = data[start:head_end].lower()
        length = re.search(rb"\r\ncontent-length:\s*(\d+)", head)
        if length:
            end = body_start + int(length.group(1))
            return end if len(data) >= end else None
        if b"transfer-encoding: chunked" in head:
            end = data.find(b"\r\n0\r\n\r\n", body_start - 2)
            return end + 7 if end >= 0 else None
        return None  # the body ends when the server closes


async def exchange(port, data, timeout=CASE_TIMEOUT, settle=0.0):
    """Send data; read until the first response is complete and a little more, or the close.

    Returns (bytes received, closed, seconds). Raises AssertionError on a hang.
    """
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    received = b""
    closed = False
    try:
        try:
            writer.write(data)
            await asyncio.wait_for(writer.drain(), timeout)
        except (TimeoutError, ConnectionError):
            pass  # the server refused and closed while we were still sending: fine
        deadline = started + timeout
        settle_after, settle = settle, None  # after a complete response, wait for a second one
        while True:
            now = time.monotonic()
            limit = deadline if settle is None else min(settle, deadline)
            if now >= limit:
                break
            try:
                chunk = await asyncio.wait_for(reader.read(65536), limit - now)
            except TimeoutError:
                break
            except ConnectionError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            received += chunk
            if settle is None and first_response_end(received) is not None:
                settle = time.monotonic() + settle_after
        if settle is None and not closed:
            raise AssertionError(f"hang: no complete response and no close within {timeout} s; "
                                 f"got {received[:200]!r}")
    finally:
        writer.close()
    return received, closed, time.monotonic() - started


def statuses(received):
    return [int(m.group(1)) for m in re.finditer(rb"(?:^|\r\n)HTTP/1\.[01] (\d{3}) ", received)]


def verdict(case_id, expectation, received, closed):
    """None when the answer is acceptable for the case, otherwise why not."""
    codes = [c for c in statuses(received) if c != 100]
    if received and not received.startswith(b"HTTP/1."):
        return f"{case_id}: not an HTTP response: {received[:120]!r}"
    if any(code >= 500 for code in codes):
        return f"{case_id}: 5xx: {received[:300]!r}"
    if b"smuggled" in received:
        return f"{case_id}: a smuggled request was answered: {received[:600]!r}"
    if SECRET.encode() in received or b"class Settings" in received or b"root:x:0:0" in received \
            or b"[metadata]" in received:
        return f"{case_id}: leaked a file outside the served directory: {received[:300]!r}"
    if expectation == REJECT and codes and not 400 <= codes[0] < 500:
        return f"{case_id}: expected a 4xx or a close, got {codes[0]}: {received[:300]!r}"
    if not codes and not closed:
        return f"{case_id}: neither an answer nor a close"
    return None


# --- fixtures: a served tree with a secret outside, and the server's error log ---

@pytest.fixture
def server_settings(server_settings, tmp_path):
    """Short timeouts (incomplete requests are cut within a second), --files with a secret outside."""
    shared = tmp_path / "shared"
    (shared / "sub").mkdir(parents=True)
    (shared / "inside.txt").write_text("inside\n")
    (shared / ".hidden").write_text(SECRET)
    (tmp_path / "secret.txt").write_text(SECRET)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_text(SECRET)
    os.symlink(tmp_path / "secret.txt", shared / "link-out.txt")
    os.symlink(tmp_path / "outside", shared / "dir-out")
    return server_settings.replace(files=shared, idle_timeout=1.0, body_timeout=1.0,
                                   max_header_size=16 * 1024, max_body_size=256 * 1024)


async def hello_is_answered(port):
    received, _, _ = await exchange(port, req(headers=b"Connection: close\r\n"))
    return statuses(received)[:1] == [200] and b"Hello, x" in received


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize("data, expectation", [case[1:] for case in CASES],
                         ids=[case[0] for case in CASES])
async def test_hostile_request(http_port, server_errors, data, expectation, request):
    case_id = request.node.callspec.id
    received, closed, _ = await exchange(http_port, data,
                                         settle=0.1 if b"smuggled" in data else 0)
    problem = verdict(case_id, expectation, received, closed)
    assert problem is None, problem
    assert server_errors() == []
    assert await hello_is_answered(http_port)


@pytest.mark.gen_test(timeout=60)
async def test_whole_battery_on_one_server(http_port, server_errors, engine, reliability):
    reliability.describe(f"{len(CASES)} malformed and hostile raw HTTP requests ({engine} engine): "
                         "bad request lines and methods, control bytes, header injection, request "
                         "smuggling, bad chunking, oversized heads, odd targets, path traversal, "
                         "bad UTF-8, 100k-deep JSON, WebSocket abuse; all sent to one server",
                         area="bad input")
    semaphore = asyncio.Semaphore(16)
    slowest = [0.0]

    async def run(case_id, data, expectation):
        async with semaphore:
            try:
                received, closed, seconds = await exchange(
                    http_port, data, settle=0.1 if b"smuggled" in data else 0)
            except AssertionError as exc:
                return f"{case_id}: {exc}", "hang"
            slowest[0] = max(slowest[0], seconds)
            return verdict(case_id, expectation, received, closed), statuses(received)[:1]

    results = await asyncio.gather(*(run(*case) for case in CASES))
    problems = [problem for problem, _ in results if problem]
    firsts = [first[0] if isinstance(first, list) and first else first for _, first in results]
    hangs = firsts.count("hang")
    five = sum(isinstance(code, int) and code >= 500 for code in firsts)
    rejected = sum(isinstance(code, int) and 400 <= code < 500 for code in firsts)
    closed_silently = firsts.count([])
    assert await hello_is_answered(http_port)
    errors = server_errors()
    reliability.figure(f"{len(CASES)} cases: {rejected} answered 4xx, {closed_silently} closed "
                       f"without an answer, {five} 5xx, {hangs} hangs, {len(errors)} logged errors, "
                       f"slowest {slowest[0]:.1f} s; GET /api/hello/x 200 afterwards")
    assert not problems, "\n".join(problems)
    assert errors == []
