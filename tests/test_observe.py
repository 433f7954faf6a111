"""Metrics, /api/stats and its stream, request ids, access log lines and trusted proxies."""
import asyncio
import gc
import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers import json_of
from server.metrics import FOLD_BATCH, Metrics

gen_test = pytest.mark.gen_test(timeout=30)


def samples(text, name):
    """{labels-tuple: value} of one metric's samples in a Prometheus exposition."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


async def scrape(api):
    response = await api.get("/metrics")
    assert response.code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return response.body.decode()


@gen_test
async def test_metrics_count_requests_by_route_method_and_status(api):
    key = (("method", "GET"), ("route", "api-hello-name"), ("status", "200"))
    before = samples(await scrape(api), "http_requests_total").get(key, 0)
    for _ in range(3):
        await api.get("/api/hello/metrics")
    await api.get("/api/nope")
    text = await scrape(api)
    counts = samples(text, "http_requests_total")
    assert counts[key] == before + 3
    assert counts[(("method", "GET"), ("route", "api-not-found"), ("status", "404"))] == 1
    latency = samples(text, "http_request_duration_seconds_count")
    assert latency[(("route", "api-hello-name"),)] >= 3
    for gauge in ("http_connections_open", "http_requests_in_flight", "tcp_connections_open",
                  "live_clients", "process_resident_memory_bytes", "process_open_fds",
                  "process_cpu_seconds_total", "event_loop_lag_seconds_count",
                  "python_gc_collections_total", "python_gc_pause_seconds_count"):
        assert samples(text, gauge), gauge
    assert list(samples(text, "http_connections_open").values())[0] >= 1


def test_requests_recorded_in_batches_are_all_counted():
    """Requests wait in a batch for the next fold; every read folds first, and a full batch folds
    by itself, so nothing waits unbounded when nobody reads."""
    metrics = Metrics()
    n = 3 * FOLD_BATCH + 7
    for i in range(n):
        metrics.observe_request("r", "GET", 503 if i % 10 == 0 else 200, 0.002)
    assert metrics.total_requests >= 3 * FOLD_BATCH  # folded without a read
    route = metrics.summary()["routes"][0]
    assert (route["route"], route["count"], route["errors"]) == ("r", n, len(range(0, n, 10)))
    counts = samples(metrics.prometheus_text().decode(), "http_requests_total")
    assert counts[(("method", "GET"), ("route", "r"), ("status", "200"))] == n - route["errors"]
    assert counts[(("method", "GET"), ("route", "r"), ("status", "503"))] == route["errors"]
    assert metrics.summary()["requests"]["total"] == n  # a second read counts nothing twice


def test_workers_metrics_merge_into_one_valid_exposition():
    """--processes N: every worker's samples under one family each, labelled worker="<slot>",
    written by prometheus_client (help text with a backslash or a newline, +Inf, _created)."""
    from server.cluster import relabel
    metrics = Metrics()
    metrics.observe_request("r", "GET", 200, 0.002)
    metrics.observe_outbound("ok", 0.01)
    metrics.gauge("odd_gauge", "a help text with \\ and\na newline", lambda: float("inf"))
    text = metrics.prometheus_text().decode()
    merged = relabel({1: text, 0: text}).decode()
    families = list(text_string_to_metric_families(merged))
    assert len({family.name for family in families}) == len(families)  # one block per family
    single = {(s.name, tuple(sorted(s.labels.items())), s.value)
              for family in text_string_to_metric_families(text) for s in family.samples}
    for worker in ("0", "1"):
        assert {(s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "worker")),
                 s.value) for family in families for s in family.samples
                if s.labels["worker"] == worker} == single
    odd = next(family for family in families if family.name == "odd_gauge")
    assert odd.documentation == "a help text with \\ and\na newline"
    assert samples(merged, "odd_gauge") == {(("worker", "0"),): float("inf"),
                                            (("worker", "1"),): float("inf")}
    assert samples(merged, "outbound_requests_total")[(("result", "ok"), ("worker", "1"))] == 1


def test_garbage_collection_pauses_are_timed_while_started():
    def pauses(metrics):
        text = metrics.prometheus_text().decode()
        full = (("generation", "2"),)
        return (samples(text, "python_gc_pause_seconds_count")[full],
                samples(text, "python_gc_pause_seconds_sum")[full])

    async def main():
        metrics = Metrics()
        await metrics.start()
        garbage = [[i] for i in range(100_000)]  # something for a full collection to walk
        before = pauses(metrics)
        gc.collect()
        during = pauses(metrics)
        await metrics.close()
        gc.collect()
        return before, during, pauses(metrics), garbage

    (count0, sum0), (count1, sum1), after_close, _ = asyncio.run(main())
    assert count1 == count0 + 1 and sum1 > sum0  # that collection, and the time it took
    assert after_close == (count1, sum1)  # not timed once closed


def test_the_lag_task_folds_waiting_requests():
    async def main():
        metrics = Metrics()
        await metrics.start(interval=0.01)
        for _ in range(5):
            metrics.observe_request("r", "GET", 200, 0.001)
        await asyncio.sleep(0.2)
        folded = metrics.total_requests  # no read in between: the periodic task folded them
        await metrics.close()
        return folded

    assert asyncio.run(main()) == 5


@gen_test
async def test_database_cache_and_outbound_calls_are_timed(api, upstream):
    await api.post("/api/messages", {"name": "M", "text": "timed"})
    await api.get("/api/messages?before=99")
    await api.post("/api/fetch", {"urls": [upstream + "/page", "http://10.1.2.3/"]})
    text = await scrape(api)
    db = samples(text, "db_call_duration_seconds_count")
    assert db[(("operation", "write"), ("result", "ok"))] >= 1
    assert db[(("operation", "read"), ("result", "ok"))] >= 1
    outbound = samples(text, "outbound_requests_total")
    assert outbound[(("result", "ok"),)] == 1
    assert outbound[(("result", "refused"),)] == 1


@gen_test
@pytest.mark.server_settings(outbound_timeout=0.5, outbound_max_bytes=64 * 1024)
async def test_each_way_a_fetch_ends_is_counted_under_its_label(api, upstream):
    await api.post("/api/fetch", {"urls": [
        upstream + "/missing", upstream + "/sleep?s=3", "ftp://127.0.0.1/file",
        "http://127.0.0.1:1/", upstream + "/big", upstream + "/reset"]})
    outbound = samples(await scrape(api), "outbound_requests_total")
    assert {labels[0][1]: count for labels, count in outbound.items()} == {
        "http_error": 1, "timeout": 1, "invalid": 1, "connect_error": 1, "too_large": 1, "error": 1}


@gen_test
async def test_stats_summarise_the_same(api):
    for _ in range(5):
        await api.get("/api/hello/stats")
    stats = json_of(await api.get("/api/stats"))
    assert stats["requests"]["total"] >= 5
    route = next(r for r in stats["routes"] if r["route"] == "api-hello-name")
    assert route["count"] == 5 and route["errors"] == 0 and route["p99_ms"] > 0
    assert stats["connections"]["http"] >= 1
    assert stats["process"]["rss_bytes"] > 10 * 1024 * 1024 and stats["process"]["open_fds"] > 0
    assert stats["event_loop_lag_ms"] >= 0
    assert stats["latency_ms"]["p50"] is not None
    assert isinstance(stats["timeline"], list)


@pytest.mark.server_settings(stats_interval=0.2)
@gen_test
async def test_stats_stream_sends_events(http_client, base_url):
    events = []

    def on_chunk(chunk):
        for block in chunk.decode().split("\n\n"):
            if block.startswith("data: "):
                events.append(json.loads(block[len("data: "):]))

    fetch = http_client.fetch(base_url + "/api/stats/stream", streaming_callback=on_chunk,
                              request_timeout=60, raise_error=False)
    for _ in range(50):
        if len(events) >= 3:
            break
        await asyncio.sleep(0.1)
    assert len(events) >= 3
    assert events[-1]["uptime_s"] > events[0]["uptime_s"]
    fetch.cancel()


@gen_test
async def test_request_ids(api):
    given = await api.get("/api/hello/x", headers={"X-Request-ID": "req-42.abc:1"})
    assert given.headers["X-Request-ID"] == "req-42.abc:1"
    for bad in ("has spaces", "x" * 200, "semi;colon"):
        response = await api.get("/api/hello/x", headers={"X-Request-ID": bad})
        assert re.fullmatch(r"[0-9a-f]{16}", response.headers["X-Request-ID"])
    generated = {(await api.get(path)).headers["X-Request-ID"]
                 for path in ("/api/hello", "/nope", "/static/css/site.css", "/api/nope")}
    assert len(generated) == 4


@pytest.mark.server_settings(post_rate=(1, 60.0), trusted_proxies=("127.0.0.0/8",))
@gen_test
async def test_forwarded_client_address_from_a_trusted_proxy(api):
    first = await api.post("/api/messages", {"name": "A", "text": "1"},
                           headers={"X-Forwarded-For": "203.0.113.7"})
    other = await api.post("/api/messages", {"name": "B", "text": "2"},
                           headers={"X-Forwarded-For": "198.51.100.9, 127.0.0.1"})
    again = await api.post("/api/messages", {"name": "A", "text": "3"}, headers={"X-Real-IP": "203.0.113.7"})
    assert (first.code, other.code, again.code) == (201, 201, 429)


@pytest.mark.server_settings(post_rate=(1, 60.0))
@gen_test
async def test_forwarded_headers_from_untrusted_peers_are_ignored(api):
    first = await api.post("/api/messages", {"name": "A", "text": "1"},
                           headers={"X-Forwarded-For": "203.0.113.7"})
    spoofed = await api.post("/api/messages", {"name": "B", "text": "2"},
                             headers={"X-Forwarded-For": "198.51.100.9"})
    assert (first.code, spoofed.code) == (201, 429)



BEHIND_TLS_PROXY = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}


@pytest.mark.server_settings(trusted_proxies=("127.0.0.0/8",))
@gen_test
async def test_hsts_when_a_trusted_proxy_terminated_tls(api):
    # nginx in docs/deploy sends both headers; HSTS then tells the browser to stay on HTTPS
    for path in ("/", "/api/hello", "/api/no/such"):
        response = await api.get(path, headers=BEHIND_TLS_PROXY)
        assert response.headers["Strict-Transport-Security"].startswith("max-age="), path
    plain = await api.get("/", headers={**BEHIND_TLS_PROXY, "X-Forwarded-Proto": "http"})
    assert "Strict-Transport-Security" not in plain.headers


@gen_test
async def test_no_hsts_when_an_untrusted_peer_claims_tls(api):
    response = await api.get("/", headers=BEHIND_TLS_PROXY)
    assert response.code == 200 and "Strict-Transport-Security" not in response.headers

def _get(url, headers=None):
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_json_access_log_lines_parse_and_carry_the_request_id(live_server_factory):
    server = live_server_factory("--access-log", "json", "--trusted-proxies", "127.0.0.1/32")
    _get(server.url + "/api/hello/log?x=1", {"X-Request-ID": "trace-json-1", "User-Agent": "pytest-agent"})
    _get(server.url + "/missing", {"X-Request-ID": "trace-json-2", "X-Forwarded-For": "192.0.2.44"})
    server.signal(signal.SIGTERM)
    assert server.wait() == 0
    lines = [json.loads(line) for line in server.stderr.splitlines() if line.startswith("{")]
    first = next(line for line in lines if line["request_id"] == "trace-json-1")
    assert first["method"] == "GET" and first["path"] == "/api/hello/log?x=1" and first["status"] == 200
    assert first["bytes"] == len(b'{"message":"Hello, log"}') and first["duration_ms"] >= 0
    assert first["client"] == "127.0.0.1" and first["user_agent"] == "pytest-agent"
    assert first["pid"] == server.proc.pid and first["time"].endswith("Z")
    second = next(line for line in lines if line["request_id"] == "trace-json-2")
    assert second["status"] == 404 and second["client"] == "192.0.2.44"


def test_combined_access_log_format(live_server_factory):
    server = live_server_factory("--access-log", "combined")
    _get(server.url + "/api/hello/combined", {"X-Request-ID": "trace-combined", "Referer": "http://r/",
                                              "User-Agent": 'agent "quoted"'})
    server.signal(signal.SIGTERM)
    assert server.wait() == 0
    line = next(line for line in server.stderr.splitlines() if "trace-combined" in line)
    match = re.fullmatch(r'(\S+) - - \[([^\]]+)\] "([^"]*)" (\d{3}) (\d+) '
                         r'"([^"]*)" "([^"]*)" ([\d.]+) (\S+)', line)
    assert match, line
    client, stamp, request_line, status, size, referer, agent, seconds, request_id = match.groups()
    assert client == "127.0.0.1" and request_line == "GET /api/hello/combined HTTP/1.1"
    assert status == "200" and int(size) == len(b'{"message":"Hello, combined"}')
    assert referer == "http://r/" and agent == "agent \\x22quoted\\x22" and request_id == "trace-combined"
    assert re.fullmatch(r"\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000", stamp)


def test_access_log_off_and_metrics_off(live_server_factory):
    server = live_server_factory("--access-log", "off", "--no-metrics")
    _get(server.url + "/api/hello/quiet", {"X-Request-ID": "trace-off"})
    with urllib.request.urlopen(server.url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    assert not samples(text, "http_requests_total")
    assert samples(text, "process_resident_memory_bytes")
    server.signal(signal.SIGTERM)
    assert server.wait() == 0
    assert "trace-off" not in server.stderr


def test_access_lines_waiting_for_their_batch_are_written_at_shutdown(live_server_factory):
    # a 30 s batch interval: only the shutdown flush can have written these lines
    server = live_server_factory("--access-log", "combined", "--access-log-flush", "30")
    for i in range(3):
        _get(server.url + f"/api/hello/batch{i}", {"X-Request-ID": f"trace-batch-{i}"})
    server.signal(signal.SIGTERM)
    assert server.wait() == 0
    assert all(f"trace-batch-{i}" in server.stderr for i in range(3)), server.stderr[-2000:]


WRITER = """
import asyncio, sys
from server.accesslog import AccessLogWriter
async def main(tag):
    writer = AccessLogWriter(0.01)
    for i in range(20000):
        writer.write(f"{tag} {i:05d} " + "x" * (97 + i % 200) + " end")
        if i % 100 == 0:
            await asyncio.sleep(0)
    writer.flush()
asyncio.run(main(sys.argv[1]))
"""


def test_batched_lines_of_several_processes_sharing_a_pipe_stay_whole():
    read_end, write_end = os.pipe()
    root = Path(__file__).resolve().parent.parent
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, tag], cwd=root, stderr=write_end)
               for tag in "ABCD"]
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    assert [w.wait(timeout=60) for w in writers] == [0, 0, 0, 0]
    lines = data.decode().splitlines()
    assert len(lines) == 80000
    pattern = re.compile(r"([ABCD]) (\d{5}) x+ end")
    seen = {tag: [] for tag in "ABCD"}
    for line in lines:
        match = pattern.fullmatch(line)
        assert match, f"a line was cut or interleaved: {line[:200]!r}"
        tag, number = match.groups()
        assert len(line) == 8 + 97 + int(number) % 200 + 4
        seen[tag].append(int(number))
    assert all(numbers == list(range(20000)) for numbers in seen.values())  # none lost, in order


def test_redis_cache_calls_are_timed(live_server_factory, redis_url, tmp_path):
    server = live_server_factory("--data-dir", str(tmp_path / "data"), "--cache-url", redis_url,
                                 "--access-log", "off")
    for _ in range(3):
        assert _get(server.url + "/api/messages") == 200  # a miss and a set, then hits
    with urllib.request.urlopen(server.url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    timed = samples(text, "cache_call_duration_seconds_count")
    assert timed[(("operation", "get"), ("result", "ok"))] >= 3
    assert sum(count for labels, count in timed.items() if ("result", "ok") in labels) >= 4
