"""Security headers on every kind of response, XSRF on every form post, the admin token and the
post rate limit against bypass attempts."""
import inspect
import re
import stat
import urllib.parse
import urllib.request

import pytest
import tornado.web

from handlers.base import ApiHandler, PageHandler
from handlers.guestbook import MessageHandler
from helpers import PROJECT_ROOT, json_of, raw_http, run_server

pytestmark = pytest.mark.hardening
gen_test = pytest.mark.gen_test(timeout=60)

SECURITY = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "strict-origin-when-cross-origin",
}


def assert_secure_headers(headers, what):
    for name, value in SECURITY.items():
        assert headers.get(name) == value, (what, name, dict(headers.get_all()))
    csp = headers.get("Content-Security-Policy", "")
    for directive in ("default-src 'self'", "script-src 'self'", "connect-src 'self'",
                      "frame-ancestors 'none'", "object-src 'none'"):
        assert directive in csp, (what, csp)
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp, (what, csp)
    assert "Server" not in headers, (what, headers.get("Server"))
    assert "Strict-Transport-Security" not in headers, what  # plain HTTP: no HSTS


def parse_head(raw):
    """The status and headers of a raw HTTP response."""
    head = raw.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    headers = tornado.httputil.HTTPHeaders()
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers.add(name.strip(), value.strip())
    return int(head[0].split()[1]), headers


@gen_test
@pytest.mark.server_settings(files=PROJECT_ROOT / "docs")
async def test_every_kind_of_response_carries_the_security_headers(api, http_port, reliability):
    reliability.describe("security headers (CSP, nosniff, frame, referrer; no Server version; "
                         "no HSTS on plain HTTP) on every kind of response", area="security")
    checks = [
        ("GET", "/", 200), ("GET", "/hello?name=x", 200), ("GET", "/guestbook", 200),
        ("GET", "/dashboard", 200), ("GET", "/api/docs", 200), ("GET", "/api/openapi.json", 200),
        ("GET", "/api/hello", 200), ("GET", "/api/messages", 200), ("GET", "/healthz", 200),
        ("GET", "/no/such/page", 404), ("GET", "/api/no/such", 404), ("DELETE", "/api/hello", 405),
        ("OPTIONS", "/hello", 405), ("POST", "/api/messages", 415), ("GET", "/static/css/site.css", 200),
        ("GET", "/static/nope.css", 404), ("GET", "/files/", 200), ("GET", "/files/deploy/nginx.conf", 200),
        ("GET", "/files", 301), ("GET", "/metrics", 200), ("GET", "/api/stats", 200),
        ("GET", "/guestbook/live", 400),  # a WebSocket endpoint asked without an Upgrade
    ]
    for method, path, status in checks:
        body = b"x" if method == "POST" else None
        response = await api.call(method, path, body=body, follow_redirects=False)
        assert response.code == status, (method, path, response.code)
        assert_secure_headers(response.headers, f"{method} {path}")
    # the answers the engine writes itself from the request head
    raw = await raw_http(http_port, b"POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n")
    status, headers = parse_head(raw)
    assert status == 413
    assert_secure_headers(headers, "413 from the head")
    reliability.figure(f"{len(checks) + 1} response kinds checked (pages, JSON, 404/405/413/415, "
                       "static, /files/, /metrics, WebSocket 400): all carry the headers")


@gen_test
async def test_every_form_post_needs_the_xsrf_token(api, http_server, reliability):
    reliability.describe("every route that takes a form post without the XSRF token", area="security")
    app = http_server.http.request_callback
    checked = []
    for rule in app.wildcard_router.rules:
        handler = rule.target
        if not (isinstance(handler, type) and issubclass(handler, tornado.web.RequestHandler)):
            continue
        for method in ("post", "put", "patch", "delete"):
            if getattr(handler, method) is getattr(tornado.web.RequestHandler, method):
                continue
            path = re.sub(r"\([^)]*\)", "1", rule.matcher.regex.pattern.rstrip("$"))
            form = urllib.parse.urlencode({"name": "Mallory", "text": "forged"}).encode()
            response = await api.call(method.upper(), path, body=form, headers={
                "Content-Type": "application/x-www-form-urlencoded"}, follow_redirects=False)
            if issubclass(handler, ApiHandler):
                # no XSRF on the API: a cross-site form cannot send JSON, so a form body is refused
                # (or, for DELETE, the Bearer token is missing)
                assert response.code in (401, 403, 415), (method, path, response.code)
            else:
                assert issubclass(handler, PageHandler)
                assert response.code == 403 and b"_xsrf" in response.body, (method, path)
            checked.append(f"{method.upper()} {path}")
    assert "POST /guestbook" in checked and "POST /api/messages" in checked
    assert json_of(await api.get("/api/messages"))["count"] == 0
    reliability.figure(f"{len(checked)} state-changing routes probed with a forged form: "
                       "all refused, nothing stored")


# --- the admin token ---

async def message_id(api):
    return json_of(await api.post("/api/messages", {"name": "Ada", "text": "keep me"}))["id"]


@gen_test
@pytest.mark.server_settings(admin_token="s3cret-admin-token")
async def test_admin_delete_cannot_be_had_without_the_token(api, reliability):
    reliability.describe("admin DELETE with no, wrong, partial or misplaced tokens", area="security")
    mid = await message_id(api)
    path = f"/api/messages/{mid}"
    attempts = {
        "no header": ({}, "", 401),
        "wrong token": ({"Authorization": "Bearer nope"}, "", 403),
        "prefix of the token": ({"Authorization": "Bearer s3cret"}, "", 403),
        "token plus more": ({"Authorization": "Bearer s3cret-admin-token-and-more"}, "", 403),
        "empty bearer": ({"Authorization": "Bearer "}, "", 401),  # the trailing space is stripped
        "basic scheme": ({"Authorization": "Basic czNjcmV0LWFkbWluLXRva2Vu"}, "", 401),
        "token in the query": ({}, "?token=s3cret-admin-token", 401),
        "admin_token in the query": ({}, "?admin_token=s3cret-admin-token", 401),
        "access_token in the query": ({}, "?access_token=s3cret-admin-token", 401),
        "token in a cookie": ({"Cookie": "admin_token=s3cret-admin-token"}, "", 401),
        "token in another header": ({"X-Admin-Token": "s3cret-admin-token"}, "", 401),
    }
    for name, (headers, query, status) in attempts.items():
        response = await api.call("DELETE", path + query, headers=headers)
        assert response.code == status, (name, response.code)
        assert json_of(response)["error"]["status"] == status
    # a GET, HEAD or POST to the message never deletes it either
    for method in ("GET", "HEAD", "POST"):
        await api.call(method, path, headers={"Authorization": "Bearer nope"})
    assert (await api.get(path)).code == 200
    ok = await api.call("DELETE", path, headers={"Authorization": "Bearer s3cret-admin-token"})
    assert ok.code == 204
    assert (await api.get(path)).code == 404
    reliability.figure(f"{len(attempts)} bypass attempts refused (401/403), message intact until "
                       "the right token")


async def assert_deleting_is_disabled(api):
    mid = await message_id(api)
    for header in ({"Authorization": "Bearer "}, {"Authorization": "Bearer"}, {}):
        response = await api.call("DELETE", f"/api/messages/{mid}", headers=header)
        assert response.code in (401, 403), (header, response.code)
    assert (await api.get(f"/api/messages/{mid}")).code == 200


@gen_test
@pytest.mark.server_settings(admin_token=None)
async def test_without_an_admin_token_deleting_is_disabled(api):
    await assert_deleting_is_disabled(api)


@gen_test
@pytest.mark.server_settings(admin_token="")
async def test_an_empty_admin_token_also_disables_deleting(api):
    # "Bearer " with nothing after it once matched an empty token
    await assert_deleting_is_disabled(api)


def test_the_admin_token_is_compared_in_constant_time():
    source = inspect.getsource(MessageHandler._require_admin)
    assert "hmac.compare_digest(" in source and "==" not in source.replace("!=", "")


# --- the post rate limit ---

async def post_api(api, text, headers=None):
    return await api.post("/api/messages", {"name": "Rate", "text": text}, headers=headers)


async def post_form(api, text, headers=None):
    page = await api.get("/guestbook")
    token = re.search(r'name="_xsrf" value="([^"]+)"', page.body.decode()).group(1)
    cookie = page.headers["Set-Cookie"].split(";", 1)[0]
    form = urllib.parse.urlencode({"_xsrf": token, "name": "Rate", "text": text}).encode()
    return await api.post("/guestbook", form, follow_redirects=False, headers={
        "Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie, **(headers or {})})


@gen_test
@pytest.mark.server_settings(post_rate=(3, 600.0))
async def test_the_rate_limit_cannot_be_bypassed(api, reliability):
    reliability.describe("posting past --post-rate with spoofed forwarding headers, other paths, "
                         "methods and the page form", area="security")
    assert (await post_api(api, "one")).code == 201
    assert (await post_form(api, "two")).code == 303       # the form shares the API's budget
    assert (await post_api(api, "three")).code == 201
    attempts = [
        post_api(api, "spoof XFF", {"X-Forwarded-For": "203.0.113.7"}),
        post_api(api, "spoof XRI", {"X-Real-IP": "203.0.113.8"}),
        post_api(api, "spoof both", {"X-Forwarded-For": "198.51.100.1, 203.0.113.9",
                                     "X-Real-IP": "203.0.113.9", "Forwarded": "for=203.0.113.9"}),
        post_form(api, "form XFF", {"X-Forwarded-For": "203.0.113.10"}),
        post_form(api, "form"),
        post_api(api, "plain"),
    ]
    refused = 0
    for attempt in attempts:
        response = await attempt
        assert response.code == 429, response.code
        assert int(response.headers["Retry-After"]) >= 1
        refused += 1
    # other spellings of the route do not post at all
    for method, path in (("POST", "/API/messages"), ("POST", "/api/messages/"), ("POST", "/Guestbook"),
                         ("POST", "/guestbook/"), ("PUT", "/api/messages"), ("PATCH", "/api/messages"),
                         ("HEAD", "/api/messages"), ("POST", "/api//messages")):
        response = await api.call(method, path, body={"name": "Rate", "text": "side door"})
        assert response.code in (403, 404, 405), (method, path, response.code)
    assert json_of(await api.get("/api/messages"))["count"] == 3
    reliability.figure(f"3 posts allowed, {refused} over-limit posts refused (429) despite spoofed "
                       "X-Forwarded-For/X-Real-IP and the form; 8 other paths/methods stored nothing")


@gen_test
@pytest.mark.server_settings(post_rate=(2, 600.0), trusted_proxies=("127.0.0.1/32",))
async def test_behind_a_trusted_proxy_one_ipv6_client_cannot_rotate_addresses(api):
    # the proxy is trusted: each X-Forwarded-For is a client; one /64 is one client
    for n, client in enumerate(["2001:db8:1:2::1", "2001:db8:1:2::ffff"]):
        assert (await post_api(api, f"v6 {n}", {"X-Forwarded-For": client})).code == 201
    rotated = await post_api(api, "v6 rotated", {"X-Forwarded-For": "2001:db8:1:2:dead:beef:0:1"})
    assert rotated.code == 429
    other = await post_api(api, "another /64", {"X-Forwarded-For": "2001:db8:1:3::1"})
    assert other.code == 201
    # an IPv4 client is the same client when written as an IPv4-mapped IPv6 address
    assert (await post_api(api, "v4", {"X-Forwarded-For": "203.0.113.5"})).code == 201
    assert (await post_api(api, "v4", {"X-Forwarded-For": "203.0.113.5"})).code == 201
    mapped = await post_api(api, "mapped", {"X-Forwarded-For": "::ffff:203.0.113.5"})
    assert mapped.code == 429


@gen_test
@pytest.mark.server_settings(post_rate=(1, 600.0), trusted_proxies=("10.0.0.0/8",))
async def test_forwarding_headers_from_an_untrusted_peer_are_ignored(api):
    # the loopback peer is not in --trusted-proxies, so its X-Forwarded-For means nothing
    assert (await post_api(api, "first", {"X-Forwarded-For": "203.0.113.1"})).code == 201
    assert (await post_api(api, "second", {"X-Forwarded-For": "203.0.113.2"})).code == 429
    assert (await post_api(api, "third", {"X-Forwarded-For": "10.0.0.1"})).code == 429


# --- the cookie secret ---

def test_the_cookie_secret_file_is_generated_private_and_shared(live_server_factory, tmp_path,
                                                                 reliability):
    reliability.describe("the generated cookie secret file: mode, sharing, refusal when exposed",
                         area="security")
    data = tmp_path / "data"
    first = live_server_factory("--data-dir", str(data))
    secret_file = data / "cookie_secret"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    secret = secret_file.read_text().strip()
    assert len(secret) >= 32
    # a second instance pointed at the same file signs with the same secret: its XSRF cookie
    # is accepted by the first
    second = live_server_factory("--data-dir", str(tmp_path / "other"), "--cookie-secret-file",
                                 str(secret_file))
    with urllib.request.urlopen(second.url + "/guestbook", timeout=20) as response:
        page = response.read().decode()
        cookie = response.headers["Set-Cookie"].split(";", 1)[0]
    token = re.search(r'name="_xsrf" value="([^"]+)"', page).group(1)
    form = urllib.parse.urlencode({"_xsrf": token, "name": "Shared", "text": "secret"}).encode()
    request = urllib.request.Request(first.url + "/guestbook", data=form, headers={"Cookie": cookie})
    with urllib.request.urlopen(request, timeout=20) as response:
        assert response.status == 200 and "Shared" in response.read().decode()
    assert secret_file.read_text().strip() == secret  # never rewritten
    # exposed to group/others: refused, one line, exit 2
    exposed = tmp_path / "exposed"
    exposed.write_text(secret + "\n")
    modes = [0o640, 0o604, 0o660, 0o644]
    for mode in modes:
        exposed.chmod(mode)
        result = run_server("--port", "0", "--data-dir", str(tmp_path / "d3"),
                            "--cookie-secret-file", str(exposed))
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1 and "chmod 600" in result.stderr, result.stderr
    short = tmp_path / "short"
    short.write_text("abc")
    short.chmod(0o600)
    result = run_server("--port", "0", "--data-dir", str(tmp_path / "d4"), "--cookie-secret-file", str(short))
    assert result.returncode == 2 and "shorter than" in result.stderr
    reliability.figure(f"secret generated with mode 0600 and shared by 2 instances; "
                       f"{len(modes)} exposed modes and a short secret refused with exit 2")
