"""Errors are classified right, and rate mode does not let a stalled server hide its stall."""

import pytest

from bench.stats import merge_encoded
from helpers import assert_consistent


def test_refused_port(bench_free_port, bench_run):
    code, rep, out, _ = bench_run(
        f"http://127.0.0.1:{bench_free_port}/", "-c", "5", "-d", "0.5s", "--max-error-rate", "0"
    )
    assert code == 1
    assert_consistent(rep)
    c = rep["connections"]
    assert c["established"] == 0 and c["failed"]["refused"] == c["failed_total"] >= 5
    assert rep["requests"]["sent"] == 0 and rep["errors"] == {"refused": c["failed_total"]}
    assert rep["error_rate"] == 1.0 and "refused" in out


def test_server_that_never_answers_times_out(bench_stub, bench_run):
    stub = bench_stub("--stall")
    code, rep, _, _ = bench_run(stub.url + "/", "-c", "5", "-d", "1s", "--timeout", "300ms")
    assert code == 0
    assert_consistent(rep)
    r, c = rep["requests"], rep["connections"]
    assert r["responses_total"] == 0 and r["sent"] >= 10
    assert r["errors"]["timeout"] == r["sent"] and r["errors_total"] == r["sent"]
    # a timed-out connection cannot be trusted (the answer may still come): closed and replaced
    assert c["closed_by_client"] == r["sent"] and c["failed_total"] == 0
    assert stub.stats()["requests"] == r["sent"]


def test_in_flight_at_the_end_is_cancelled_not_lost(bench_stub, bench_run):
    stub = bench_stub("--stall")
    code, rep, _, _ = bench_run(stub.url + "/", "-c", "3", "-d", "0.3s", "--timeout", "5s")
    assert code == 0
    assert_consistent(rep)
    assert rep["requests"]["errors"]["cancelled"] == rep["requests"]["sent"] == 3
    assert rep["duration_s"] < 3  # the drain after --duration is bounded


def test_server_closing_connections_mid_request(bench_stub, bench_run):
    stub = bench_stub("--close-after", "3")
    code, rep, _, _ = bench_run(stub.url + "/", "-c", "4", "-d", "1s")
    assert code == 0
    assert_consistent(rep)
    r, c = rep["requests"], rep["connections"]
    assert r["errors"]["closed"] > 10 and r["errors_total"] == r["errors"]["closed"]
    assert c["closed_by_server"] == r["errors"]["closed"]
    # every connection: 3 answers, then the 4th request is dropped by the server closing
    assert abs(r["responses_total"] - 3 * r["errors"]["closed"]) <= 3 * 4
    assert stub.stats()["requests"] == r["responses_total"]


def test_server_resetting_connections(bench_stub, bench_run):
    stub = bench_stub("--reset-after", "2")
    code, rep, _, _ = bench_run(stub.url + "/", "-c", "4", "-d", "1s")
    assert_consistent(rep)
    r = rep["requests"]
    assert r["errors"]["reset"] > 10 and r["errors_total"] == r["errors"]["reset"]
    assert rep["connections"]["closed_by_server"] == r["errors"]["reset"]


def test_connection_close_answers_are_not_errors(bench_stub, bench_run):
    stub = bench_stub("--connection-close")
    code, rep, _, _ = bench_run(stub.url + "/", "-c", "4", "-d", "1s", "--max-error-rate", "0")
    assert code == 0
    assert_consistent(rep)
    assert rep["requests"]["errors_total"] == 0
    assert rep["connections"]["closed_by_server"] >= rep["requests"]["responses_total"] > 50


def test_garbage_is_a_parse_error(bench_stub, bench_run):
    stub = bench_stub("--garbage")
    code, rep, _, _ = bench_run(stub.url + "/", "-c", "3", "-d", "0.5s")
    assert_consistent(rep)
    r = rep["requests"]
    assert (
        r["sent"] > 3
        and r["errors"]["parse"] == r["errors_total"] == r["sent"] - r["errors"]["cancelled"]
    )
    assert r["responses_total"] == 0


def _count_at_least(rep, ms):
    """How many responses took at least ``ms`` milliseconds (from the merged HDR histogram)."""
    hist = merge_encoded([rep["latency_histogram"]])
    return sum(
        item.count_at_value_iterated_to
        for item in hist.get_recorded_iterator()
        if item.value_iterated_to >= ms * 1000
    )


def test_rate_mode_latency_includes_a_stall(bench_stub, bench_run):
    """The whole server freezes for 1 s: requests scheduled in that second must show the wait."""
    stub = bench_stub("--pause-at", "0.8", "--pause-for", "1.0")
    code, rep, _, _ = bench_run(stub.url + "/", "-c", "10", "-d", "3s", "--rate", "200")
    assert code == 0
    assert_consistent(rep)
    lat = rep["latency_ms"]
    assert lat["max"] >= 900
    # ~200 requests were due during the pause; those scheduled in its first half waited >= 500 ms
    assert _count_at_least(rep, 500) >= 60
    assert lat["p90"] >= 300
    assert rep["requests"]["responses_total"] == pytest.approx(600, abs=15)


def test_closed_loop_would_hide_the_same_stall(bench_stub, bench_run):
    """Contrast: closed loop records the pause only once per connection (coordinated omission)."""
    stub = bench_stub("--pause-at", "0.8", "--pause-for", "1.0")
    code, rep, _, _ = bench_run(stub.url + "/", "-c", "10", "-d", "3s")
    assert code == 0
    assert rep["latency_ms"]["max"] >= 900
    assert _count_at_least(rep, 500) <= 10
    assert rep["latency_ms"]["p90"] < 100
