"""The SSRF guard of /api/fetch against every spelling of a private address, names and redirects.

Each refused URL points at a loopback listener; the test asserts the listener saw no connection at
all, so "refused" means the guard stopped it before connecting, not that the target was closed.
"""
import asyncio
import socket
import urllib.parse

import pytest
import tornado.httpserver
import tornado.web
from tornado.netutil import bind_sockets

from helpers import json_of

pytestmark = [pytest.mark.hardening, pytest.mark.gen_test(timeout=60)]

# every way to write 127.0.0.1 / ::1 / "this host" / a private range that getaddrinfo accepts
SPELLINGS = [
    "127.0.0.1", "127.1", "127.0.1", "127.000.000.001",
    "2130706433",                      # decimal
    "0177.0.0.1", "017700000001",      # octal
    "0x7f.1", "0x7f.0.0.1", "0x7f000001",  # hex
    "0.0.0.0", "0",                    # "this host" reaches loopback on Linux
    "[::1]", "[0000::1]", "[::]",
    "[::ffff:127.0.0.1]", "[::ffff:7f00:1]",  # IPv4-mapped
    "[::127.0.0.1]",                   # IPv4-compatible (deprecated)
    "[64:ff9b::7f00:1]",               # NAT64 of 127.0.0.1
    "[2002:7f00:1::1]",                # 6to4 of 127.0.0.1
    "10.0.0.1", "172.16.0.1", "192.168.0.1", "100.64.0.1",
    "169.254.169.254",                 # cloud metadata (link-local)
    "[fe80::1]", "[fd00::1]", "[fc00::1]",  # link-local, ULA
    "224.0.0.1", "255.255.255.255",
]
# names that resolve to loopback through /etc/hosts (those that do not resolve here are left out)
NAMES = ["localhost", "LOCALHOST", "ip6-localhost", "ip6-loopback"]


def resolvable(name):
    try:
        return bool(socket.getaddrinfo(name, 80, 0, socket.SOCK_STREAM))
    except socket.gaierror:
        return False


class Trap:
    """Listeners on 127.0.0.1:PORT and [::1]:PORT that count every connection they accept."""

    def __init__(self):
        self.connections = 0
        self.servers = []
        self.port = None

    async def start(self):
        sock = bind_sockets(0, "127.0.0.1", family=socket.AF_INET)[0]
        self.port = sock.getsockname()[1]
        socks = [sock]
        try:
            socks += bind_sockets(self.port, "::1", family=socket.AF_INET6)
        except OSError:
            pass  # no IPv6 loopback here: [::1] URLs then cannot connect anyway
        for s in socks:
            self.servers.append(await asyncio.start_server(self._accepted, sock=s))
        return self

    async def _accepted(self, reader, writer):
        self.connections += 1
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: close\r\n\r\nreached")
        await writer.drain()
        writer.close()

    async def close(self):
        for server in self.servers:
            server.close()
            await server.wait_closed()


async def fetch_each(api, urls):
    """The /api/fetch result of every URL (in batches the default --outbound-max-urls allows)."""
    results = []
    for start in range(0, len(urls), 20):
        response = await api.post("/api/fetch", {"urls": urls[start:start + 20]})
        assert response.code == 200, response.body
        results += json_of(response)["results"]
    return results


def assert_refused(results):
    for result in results:
        assert result["ok"] is False and result["status"] is None, result
        assert result["error"].startswith("refused: "), result
        assert result["error"].endswith("allow it with --outbound-allow"), result


@pytest.mark.server_settings(outbound_allow=())
async def test_every_spelling_of_a_private_address_is_refused(api, reliability):
    reliability.describe("/api/fetch of private addresses in every spelling (decimal, octal, hex, "
                         "short, IPv4-mapped/compatible, NAT64, 6to4, ULA, link-local, names)",
                         area="security")
    trap = await Trap().start()
    try:
        names = [name for name in NAMES if resolvable(name)]
        hosts = SPELLINGS + names
        urls = [f"http://{host}:{trap.port}/secret" for host in hosts]
        urls += [f"https://{host}:{trap.port}/secret" for host in ("127.1", "[::1]", "localhost")]
        # userinfo and fragments must not change which host is asked
        urls += [f"http://example.com@127.0.0.1:{trap.port}/", f"http://127.0.0.1:{trap.port}#@example.com/"]
        results = await fetch_each(api, urls)
        assert_refused(results)
        await asyncio.sleep(0.1)
        assert trap.connections == 0
    finally:
        await trap.close()
    reliability.figure(f"{len(urls)} URLs ({len(hosts)} host spellings) refused, "
                       f"{trap.connections} connections reached the loopback listener")


class Redirector(tornado.web.RequestHandler):
    """GET /?to=URL: a 302 to URL (or 307/301 with &code=)."""

    def get(self):
        self.redirect(self.get_query_argument("to"), status=int(self.get_query_argument("code", "302")))


@pytest.mark.server_settings(outbound_allow=("localhost",))
async def test_redirects_to_private_addresses_are_refused(api, reliability):
    reliability.describe("an allowed upstream that redirects to private addresses", area="security")
    trap = await Trap().start()
    sock = bind_sockets(0, "127.0.0.1", family=socket.AF_INET)[0]
    upstream = tornado.httpserver.HTTPServer(tornado.web.Application([(r"/", Redirector)]))
    upstream.add_sockets([sock])
    try:
        base = f"http://localhost:{sock.getsockname()[1]}/"
        # the allowed name itself works, so a refusal below is the redirect's target
        [first] = await fetch_each(api, [base + "?to=/elsewhere"])
        assert first["error"] is None and first["status"] == 404, first  # followed, then answered
        targets = ["127.0.0.1", "2130706433", "0x7f000001", "127.1", "[::1]", "[::ffff:127.0.0.1]",
                   "0.0.0.0", "169.254.169.254", "[fd00::1]"]
        urls = []
        for code in ("302", "301", "307"):
            for host in targets:
                to = urllib.parse.quote(f"http://{host}:{trap.port}/after-redirect", safe="")
                urls.append(f"{base}?code={code}&to={to}")
        results = await fetch_each(api, urls)
        assert_refused(results)
        await asyncio.sleep(0.1)
        assert trap.connections == 0
    finally:
        upstream.stop()
        await upstream.close_all_connections()
        await trap.close()
    reliability.figure(f"{len(urls)} redirects (301/302/307) to private addresses refused, "
                       "0 connections reached the listener")


@pytest.mark.server_settings(outbound_allow=())
async def test_a_refusal_is_reported_in_the_documented_shape(api):
    response = await api.post("/api/fetch", {"urls": ["http://2130706433/"]})
    assert response.code == 200
    [result] = json_of(response)["results"]
    assert result["error"] == ("refused: 2130706433 resolves to a non-public address (127.0.0.1); "
                               "allow it with --outbound-allow")


async def test_the_allow_list_still_lets_an_allowed_address_through(api):
    # the test settings allow 127.0.0.1: the trap is reached, so the checks above can see a connection
    trap = await Trap().start()
    try:
        [result] = await fetch_each(api, [f"http://127.0.0.1:{trap.port}/"])
        assert result["status"] == 200
        assert trap.connections == 1
    finally:
        await trap.close()
