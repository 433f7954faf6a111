"""python -m bench against the project's own server (`python -m server --port 0`)."""

from helpers import assert_consistent


def test_closed_loop_against_the_project_server(bench_project_server, bench_run):
    url = bench_project_server.url
    code, rep, _, _ = bench_run(
        url + "/healthz",
        "-c",
        "20",
        "-d",
        "1.5s",
        "-p",
        "/healthz",
        "-p",
        "/api/hello/bench",
        "--max-error-rate",
        "0",
    )
    assert code == 0, rep["requests"]
    assert_consistent(rep)
    assert (
        rep["requests"]["responses"] == {"200": rep["requests"]["sent"]}
        and rep["requests"]["sent"] > 100
    )
    assert rep["connections"]["established"] == 20 and rep["connections"]["closed_by_server"] == 0


def test_hold_mode_against_the_project_server(bench_project_server, bench_run):
    code, rep, _, _ = bench_run(
        bench_project_server.url + "/healthz",
        "-c",
        "200",
        "--ramp",
        "50/10ms",
        "--interval",
        "300ms-600ms",
        "-d",
        "2s",
        "-m",
        "GET",
        "--max-error-rate",
        "0",
    )
    assert code == 0, rep["errors"]
    assert_consistent(rep)
    assert rep["connections"]["open_at_end"] == 200 and rep["requests"]["errors_total"] == 0
    assert rep["requests"]["sent"] >= 200 * 3


def test_rate_mode_against_the_project_server(bench_project_server, bench_run):
    code, rep, _, _ = bench_run(
        bench_project_server.url + "/api/hello/rate",
        "-c",
        "20",
        "--rate",
        "300",
        "-d",
        "2s",
        "--max-error-rate",
        "0",
    )
    assert code == 0
    assert_consistent(rep)
    assert 570 <= rep["requests"]["responses"]["200"] <= 630
