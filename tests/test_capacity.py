"""Capacity: one server process holds 19,000 keep-alive connections and keeps answering.

The open-file limit's hard ceiling on the machines this runs on is 20,000, so 19,000 client
connections is about what one process can hold; the server raises its soft limit to what
--max-connections needs (up to the hard limit) by itself. The holding client is `python -m bench`
in hold mode (its own process, its own file limit); a probe measures latency meanwhile.
"""
import http.client
import json
import resource
import subprocess
import sys
import time

import pytest

from helpers import PROJECT_ROOT, get_json, open_fds, require, rss_bytes

pytestmark = pytest.mark.soak

HELD = 19_000


def _probe(port, count):
    """Sequential GET /api/hello/probe on one keep-alive connection; latencies in ms."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    latencies = []
    try:
        for _ in range(count):
            start = time.perf_counter()
            connection.request("GET", "/api/hello/probe")
            response = connection.getresponse()
            response.read()
            assert response.status == 200
            latencies.append((time.perf_counter() - start) * 1000)
            time.sleep(0.01)
    finally:
        connection.close()
    return sorted(latencies)


@pytest.mark.parametrize("engine", ["fast"])
def test_one_process_holds_19000_connections(engine, live_server_factory, tmp_path, reliability):
    reliability.describe(f"one server process (--engine {engine}) holds {HELD:,} keep-alive "
                         "connections from python -m bench (hold mode, a HEAD every 5-10 s each) "
                         "while a probe client keeps requesting", area="capacity")
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    require(hard >= HELD + 500, f"an open-file hard limit of at least {HELD + 500} (ulimit -Hn)")
    server = live_server_factory("--engine", engine, "--access-log", "off", "--max-connections",
                                 str(HELD + 200), "--idle-timeout", "120", "--log-level", "warning")
    pid = server.proc.pid
    rss_before = rss_bytes(pid)
    fds_before = open_fds(pid)
    report = tmp_path / "hold.json"
    hold = subprocess.Popen(
        [sys.executable, "-m", "bench", f"{server.url}/healthz", "-c", str(HELD), "--interval", "5-10s",
         "--ramp", "200/10ms", "--duration", "40s", "-t", "20s", "--no-progress", "-q",
         "--json", str(report)],
        cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 35
        while open_fds(pid) - fds_before < HELD and time.monotonic() < deadline:
            assert hold.poll() is None, hold.stderr.read()
            time.sleep(0.5)
        held = open_fds(pid) - fds_before
        assert held >= HELD, f"the server holds only {held:,} connections"
        time.sleep(2)  # let the first requests of every connection settle
        rss_per_connection = (rss_bytes(pid) - rss_before) / held
        latencies = _probe(server.port, 300)
        p99 = latencies[int(len(latencies) * 0.99) - 1]
        open_http = get_json(f"{server.url}/api/stats")["connections"]["http"]
        assert open_http >= HELD
    finally:
        _, errors = hold.communicate(timeout=90)
    result = json.loads(report.read_text())
    failed = result["requests"]["errors_total"] + result["connections"]["failed_total"]
    assert failed == 0, errors
    reliability.figure(f"{held:,} connections held by one process ({open_http:,} in /api/stats), "
                       f"{rss_per_connection:,.0f} B of RSS per connection, probe p99 {p99:.2f} ms "
                       f"over 300 requests, {failed} failed requests of "
                       f"{result['requests']['responses_total']:,} from the holding client")
    assert p99 < 50, f"probe p99 {p99:.1f} ms with {held:,} connections open"
