"""HTTPS with --tls-cert/--tls-key on both engines: pages, HSTS, wss://, plain HTTP refused, config errors."""
import asyncio
import json
import os
import ssl
import urllib.request

import pytest
import tornado.httpclient
import tornado.websocket

from helpers import make_certificate, raw_http, run_server

pytestmark = pytest.mark.hardening


@pytest.fixture
def server_settings(server_settings, certificate):
    """This module's servers speak HTTPS only."""
    return server_settings.replace(tls_cert=certificate[0], tls_key=certificate[1])


@pytest.fixture
def client_context(certificate):
    """A client TLS context that trusts only the test certificate."""
    return ssl.create_default_context(cafile=str(certificate[0]))


async def raw_https(port, context, data, timeout=5.0):
    """Send raw bytes over TLS and return what comes back until the server closes."""
    return await raw_http(port, data, timeout, ssl_context=context)


async def fetch(url, context, **kwargs):
    client = tornado.httpclient.AsyncHTTPClient(force_instance=True)
    try:
        return await client.fetch(url, ssl_options=context, raise_error=False, **kwargs)
    finally:
        client.close()


@pytest.mark.gen_test(timeout=60)
async def test_pages_and_api_over_https_with_hsts(http_port, client_context, reliability):
    reliability.describe("HTTPS on both engines: page, API, 404 and 413 over TLS; HSTS and "
                         "__Host- XSRF cookie", area="security")
    base = f"https://127.0.0.1:{http_port}"
    page = await fetch(base + "/guestbook", client_context)
    assert page.code == 200 and b"<form" in page.body
    assert page.headers["Strict-Transport-Security"].startswith("max-age=")
    cookie = page.headers["Set-Cookie"]
    assert cookie.startswith("__Host-xsrf=") and "Secure" in cookie and "Path=/" in cookie
    assert "Domain" not in cookie
    api = await fetch(base + "/api/hello/tls", client_context)
    assert json.loads(api.body) == {"message": "Hello, tls"}
    missing = await fetch(base + "/api/nothing", client_context)
    assert missing.code == 404 and "Strict-Transport-Security" in missing.headers
    assert missing.headers["X-Frame-Options"] == "DENY"
    # the engine's own 413 (written from the request head) also goes out over TLS
    big = await raw_https(http_port, client_context, b"POST /api/echo HTTP/1.1\r\nHost: x\r\n"
                          b"Content-Type: application/json\r\nContent-Length: 99999999\r\n\r\n")
    assert big.startswith(b"HTTP/1.1 413 ") and b"X-Content-Type-Options: nosniff" in big
    reliability.figure("4 responses over TLS with HSTS and the security headers, "
                       "XSRF cookie __Host-xsrf; Secure; Path=/")


@pytest.mark.gen_test(timeout=60)
async def test_the_xsrf_cookie_works_for_the_form_over_https(http_port, client_context):
    base = f"https://127.0.0.1:{http_port}"
    page = await fetch(base + "/guestbook", client_context)
    cookie = page.headers["Set-Cookie"].split(";", 1)[0]
    token = cookie.split("=", 1)[1]
    form = f"_xsrf={token}&name=Tls&text=over+https".replace("|", "%7C")
    posted = await fetch(base + "/guestbook", client_context, method="POST", body=form,
                         headers={"Cookie": cookie}, follow_redirects=False)
    assert posted.code == 303
    # the plain _xsrf cookie name does not count on a TLS server
    refused = await fetch(base + "/guestbook", client_context, method="POST", body=form,
                          headers={"Cookie": f"_xsrf={token}"}, follow_redirects=False)
    assert refused.code == 403


@pytest.mark.gen_test(timeout=60)
async def test_untrusted_certificate_is_refused_by_a_verifying_client(http_port):
    with pytest.raises(ssl.SSLError):
        await fetch(f"https://127.0.0.1:{http_port}/", ssl.create_default_context())


@pytest.mark.gen_test(timeout=60)
async def test_live_guestbook_over_wss(http_port, client_context):
    base = f"https://127.0.0.1:{http_port}"
    request = tornado.httpclient.HTTPRequest(f"wss://127.0.0.1:{http_port}/guestbook/live",
                                             ssl_options=client_context)
    conn = await tornado.websocket.websocket_connect(request)
    posted = await fetch(base + "/api/messages", client_context, method="POST",
                         body=json.dumps({"name": "Wss", "text": "secure push"}),
                         headers={"Content-Type": "application/json"})
    assert posted.code == 201
    event = json.loads(await asyncio.wait_for(conn.read_message(), 5))
    assert event["type"] == "message" and event["message"]["text"] == "secure push"
    conn.close()


@pytest.mark.gen_test(timeout=60)
async def test_plain_http_to_the_tls_port_fails_and_the_server_keeps_serving(
        http_port, client_context, reliability):
    reliability.describe("plain HTTP requests sent to the HTTPS port", area="security")
    answers = []
    for _ in range(5):
        answers.append(await raw_http(http_port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", timeout=5))
    # no HTTP answer in clear text (at most a TLS alert), and nothing of the page leaks
    assert all(not answer.startswith(b"HTTP/") and b"<html" not in answer for answer in answers)
    ok = await fetch(f"https://127.0.0.1:{http_port}/api/hello", client_context)
    assert ok.code == 200
    reliability.figure("5 plain-HTTP requests to the TLS port got no HTTP answer; "
                       "the next HTTPS request was served")


def test_https_subprocess(live_server_factory, certificate):
    cert, key = certificate
    server = live_server_factory("--tls-cert", str(cert), "--tls-key", str(key))
    assert server.url.startswith("https://127.0.0.1:")
    context = ssl.create_default_context(cafile=str(cert))
    with urllib.request.urlopen(server.url + "/api/hello/sub", timeout=20, context=context) as response:
        assert json.loads(response.read()) == {"message": "Hello, sub"}
        assert response.headers["Strict-Transport-Security"].startswith("max-age=")


def test_https_under_the_supervisor(live_server_factory, certificate):
    cert, key = certificate
    server = live_server_factory("--tls-cert", str(cert), "--tls-key", str(key), "--processes", "2",
                                 "--engine", "fast")
    assert server.url.startswith("https://")
    context = ssl.create_default_context(cafile=str(cert))
    for _ in range(4):
        with urllib.request.urlopen(server.url + "/api/hello", timeout=20, context=context) as response:
            assert response.status == 200


def test_tls_configuration_errors_are_one_line_and_exit_2(tmp_path, certificate, reliability):
    reliability.describe("unusable --tls-cert/--tls-key values", area="security")
    cert, key = certificate
    other_cert, other_key = make_certificate(tmp_path, "other")
    not_pem = tmp_path / "notes.txt"
    not_pem.write_text("hello\n")
    unreadable = tmp_path / "secret.key"
    unreadable.write_text("x")
    unreadable.chmod(0)
    cases = {
        "missing file": (["--tls-cert", str(tmp_path / "nope.pem"), "--tls-key", str(key)],
                         "--tls-cert: no such file"),
        "only a cert": (["--tls-cert", str(cert)], "--tls-cert needs --tls-key"),
        "only a key": (["--tls-key", str(key)], "--tls-key needs --tls-cert"),
        "not PEM": (["--tls-cert", str(not_pem), "--tls-key", str(key)], "not a PEM certificate"),
        "key not PEM": (["--tls-cert", str(cert), "--tls-key", str(not_pem)], "not a PEM private key"),
        "key of another cert": (["--tls-cert", str(cert), "--tls-key", str(other_key)],
                                "cannot use them"),
        "a directory": (["--tls-cert", str(tmp_path), "--tls-key", str(key)], "not a file"),
    }
    if os.geteuid() != 0:  # root reads any file
        cases["unreadable"] = (["--tls-cert", str(cert), "--tls-key", str(unreadable)], "cannot read")
    for name, (args, expected) in cases.items():
        result = run_server("--port", "0", *args, "--data-dir", str(tmp_path / "data"))
        assert result.returncode == 2, (name, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], (name, result.stderr)
        assert "Traceback" not in result.stderr
    reliability.figure(f"{len(cases)} unusable TLS settings: exit 2 with one line each")
