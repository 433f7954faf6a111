"""python -m bench against a real local stub server: every mode, and the counts add up exactly."""

import json
import signal
import subprocess
import sys
import time

import pytest

from helpers import assert_consistent


def test_closed_loop_counts_match_the_server(bench_stub, bench_run):
    stub = bench_stub()
    code, rep, out, _ = bench_run(stub.url + "/", "-c", "20", "-d", "1.5s")
    assert code == 0
    assert_consistent(rep)
    r = rep["requests"]
    assert (
        rep["config"]["mode"] == "closed"
        and r["errors_total"] == 0
        and r["responses"] == {"200": r["sent"]}
    )
    assert r["sent"] > 1000
    assert stub.stats()["requests"] == r["sent"]  # the server saw exactly what we counted
    assert rep["connections"]["established"] == 20 and rep["connections"]["open_at_end"] == 20
    assert [round(e["t"]) for e in rep["timeline"]] == [1, 2]
    assert rep["requests_per_s"] == pytest.approx(
        r["responses_total"] / rep["duration_s"], rel=0.01
    )
    assert (
        rep["latency_ms"]["min"]
        <= rep["latency_ms"]["p50"]
        <= rep["latency_ms"]["p99"]
        <= rep["latency_ms"]["max"]
    )
    assert "Requests     sent" in out and "Latency ms" in out and "p99.9" in out


def test_chunked_content_length_and_status_paths(bench_stub, bench_run):
    stub = bench_stub()
    code, rep, _, _ = bench_run(
        stub.url + "/", "-c", "9", "-d", "1s", "-p", "/chunked", "-p", "/", "-p", "/status/404"
    )
    assert code == 0
    assert_consistent(rep)
    responses = rep["requests"]["responses"]
    assert set(responses) == {"200", "404"} and rep["requests"]["errors_total"] == 0
    # round-robin over three paths: one third are 404s (each connection finishes within one request)
    assert abs(responses["404"] - rep["requests"]["sent"] / 3) <= 10
    assert rep["requests"]["non_2xx_3xx"] == responses["404"]


def test_head_requests_end_at_the_headers(bench_stub, bench_run):
    """HEAD answers have Content-Length / chunked headers but no body: nothing may hang."""
    stub = bench_stub()
    code, rep, _, _ = bench_run(
        stub.url + "/",
        "-c",
        "10",
        "-d",
        "1s",
        "-m",
        "HEAD",
        "-p",
        "/",
        "-p",
        "/chunked",
        "--timeout",
        "500ms",
    )
    assert code == 0
    assert_consistent(rep)
    assert rep["requests"]["errors_total"] == 0 and rep["requests"]["sent"] > 500
    assert stub.stats()["methods"] == {"HEAD": rep["requests"]["sent"]}


def test_request_body_and_headers(bench_stub, bench_run):
    stub = bench_stub()
    code, rep, _, _ = bench_run(
        stub.url + "/",
        "-c",
        "5",
        "-d",
        "0.5s",
        "-m",
        "POST",
        "--body",
        "0123456789",
        "-H",
        "X-Test: yes",
    )
    assert code == 0
    assert_consistent(rep)
    stats = stub.stats()
    assert stats["methods"] == {"POST": rep["requests"]["sent"]}
    assert stats["body_bytes"] == 10 * rep["requests"]["sent"]


def test_no_keepalive_opens_a_connection_per_request(bench_stub, bench_run):
    stub = bench_stub()
    code, rep, _, _ = bench_run(stub.url + "/", "-c", "5", "-d", "1s", "--no-keepalive")
    assert code == 0
    assert_consistent(rep)
    c, r = rep["connections"], rep["requests"]
    assert r["errors_total"] == 0 and r["sent"] > 50
    assert c["established"] >= r["sent"] and c["closed_by_server"] >= r["responses_total"]
    assert stub.stats()["connections"] == c["established"] + 1  # + the /__stats request


def test_rate_mode_holds_the_rate(bench_stub, bench_run):
    stub = bench_stub()
    code, rep, out, _ = bench_run(stub.url + "/", "-c", "20", "-d", "2s", "--rate", "500")
    assert code == 0
    assert_consistent(rep)
    assert rep["config"]["mode"] == "rate" and rep["rate"]["target"] == 500
    assert 950 <= rep["requests"]["sent"] <= 1050
    assert rep["rate"]["achieved"] == pytest.approx(500, rel=0.05)
    assert all(abs(e["requests_per_s"] - 500) < 60 for e in rep["timeline"])
    assert rep["requests"]["backlog_at_end"] == 0
    assert "scheduled start" in out


def test_hold_mode_keeps_connections_open_with_sparse_requests(bench_stub, bench_run):
    stub = bench_stub()
    code, rep, _, _ = bench_run(
        stub.url + "/",
        "-c",
        "200",
        "--ramp",
        "50/10ms",
        "--interval",
        "200-400ms",
        "-d",
        "2s",
        "--seed",
        "7",
    )
    assert code == 0
    assert_consistent(rep)
    c, r = rep["connections"], rep["requests"]
    assert rep["config"]["mode"] == "hold" and rep["config"]["method"] == "HEAD"
    assert c["established"] == 200 and c["open_at_end"] == 200 and c["peak_open"] == 200
    assert all(e["open_connections"] == 200 for e in rep["timeline"])
    # each connection: one request at connect, then one every 200-400 ms for 2 s -> 5 to 11 requests
    assert 200 * 5 <= r["sent"] <= 200 * 11 and r["errors_total"] == 0
    assert stub.stats()["methods"]["HEAD"] == r["sent"]
    assert rep["cpu"]["max_percent"] < 50


def test_ramp_opens_connections_gradually(bench_stub, bench_run):
    stub = bench_stub()
    code, rep, _, _ = bench_run(stub.url + "/", "-c", "40", "--ramp", "10/500ms", "-d", "2.5s")
    assert code == 0
    assert_consistent(rep)
    opened = [e["open_connections"] for e in rep["timeline"]]
    assert 10 <= opened[0] <= 30 and opened[-1] == 40
    assert rep["connections"]["attempted"] == 40


def test_warmup_is_not_counted(bench_stub, bench_run):
    stub = bench_stub()
    code, rep, _, _ = bench_run(stub.url + "/", "-c", "5", "--warmup", "1s", "-d", "1s")
    assert code == 0
    assert_consistent(rep)
    assert len(rep["timeline"]) == 1 and rep["duration_s"] < 1.5
    served = stub.stats()["requests"]
    assert served > rep["requests"]["sent"] * 1.5  # the warm-up second was served but not counted


def test_workers_merge_counts_and_histograms(bench_stub, bench_run):
    stub = bench_stub()
    code, rep, _, _ = bench_run(stub.url + "/", "-c", "10", "-w", "2", "-d", "1.5s")
    assert code == 0
    assert_consistent(rep)
    assert [w["index"] for w in rep["cpu"]["workers"]] == [0, 1]
    assert rep["connections"]["established"] == 10
    assert stub.stats()["requests"] == rep["requests"]["sent"]
    assert len(rep["timeline"]) == 2


def test_max_error_rate_gates_the_exit_code(bench_stub, bench_run):
    stub = bench_stub()
    code, rep, out, _ = bench_run(
        stub.url + "/status/500", "-c", "2", "-d", "0.3s", "--max-error-rate", "10%"
    )
    assert code == 1 and rep["exit_code"] == 1 and rep["error_rate"] == 1.0 and "FAIL" in out
    code, rep, _, _ = bench_run(
        stub.url + "/status/500", "-c", "2", "-d", "0.3s", "--max-error-rate", "1"
    )
    assert code == 0
    code, rep, _, _ = bench_run(stub.url + "/", "-c", "2", "-d", "0.3s", "--max-error-rate", "0")
    assert code == 0 and rep["error_rate"] == 0


@pytest.mark.parametrize("workers", ["1", "2"])
def test_ctrl_c_still_prints_the_report(bench_stub, tmp_path, workers):
    stub = bench_stub()
    out = tmp_path / "r.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench",
            stub.url + "/",
            "-c",
            "4",
            "-w",
            workers,
            "-d",
            "60s",
            "--json",
            str(out),
            "--progress",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(2.5)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 130, stderr
    assert "[INTERRUPTED]" in stdout and "Latency ms" in stdout and "Traceback" not in stderr
    assert "req/s" in stderr  # the progress line
    rep = json.loads(out.read_text())
    assert rep["interrupted"] is True and rep["duration_s"] < 10
    assert_consistent(rep)
    assert rep["requests"]["responses_total"] > 0


def test_progress_is_quiet_when_not_a_tty(bench_stub):
    stub = bench_stub()
    proc = subprocess.run(
        [sys.executable, "-m", "bench", stub.url + "/", "-c", "2", "-d", "1.2s"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0 and proc.stderr == ""
    assert "Throughput" in proc.stdout
    quiet = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            stub.url + "/",
            "-c",
            "2",
            "-d",
            "1.2s",
            "-q",
            "--progress",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert quiet.stdout == "" and quiet.stderr.count("req/s") >= 1
