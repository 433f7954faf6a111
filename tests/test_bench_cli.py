"""python -m bench: option parsing, validation (exit 2, one line), the open-file limit."""

import resource
import subprocess
import sys

import pytest

from bench.__main__ import main
from bench.cli import UsageError, parse_args, parse_duration, parse_interval, parse_ramp
from bench.runner import ensure_fd_limit

URL = "http://127.0.0.1:9/"


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("10s", 10.0),
        ("500ms", 0.5),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("1.5s", 1.5),
        ("3", 3.0),
        ("250us", 0.00025),
    ],
)
def test_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


def test_ramp_and_interval():
    assert parse_ramp("10/10ms") == (10, 0.010)
    assert parse_ramp("100/s") == (100, 1.0)
    assert parse_interval("1-30s") == (1.0, 30.0)
    assert parse_interval("500ms-2s") == (0.5, 2.0)
    assert parse_interval("200-400ms") == pytest.approx((0.2, 0.4))
    assert parse_interval("5s") == (5.0, 5.0)


def test_modes_are_chosen_by_options():
    assert parse_args([URL]).mode == "closed"
    rate = parse_args([URL, "--rate", "5000"])
    assert rate.mode == "rate" and rate.rate == 5000 and rate.ramp is None
    hold = parse_args([URL, "--interval", "1-30s", "-c", "10000"])
    assert (hold.mode, hold.method, hold.ramp, hold.interval) == (
        "hold",
        "HEAD",
        (10, 0.01),
        (1.0, 30.0),
    )
    assert parse_args([URL, "--mode", "hold"]).interval == (1.0, 30.0)
    seed = parse_args(
        [
            "http://127.0.0.1:8888/",
            "-c",
            "10000",
            "--ramp",
            "10/10ms",
            "--interval",
            "1-30s",
            "--duration",
            "60s",
            "--method",
            "HEAD",
        ]
    )
    assert (seed.connections, seed.duration, seed.keepalive) == (10000, 60.0, True)


def test_request_options(tmp_path):
    paths = tmp_path / "paths.txt"
    paths.write_text("# comment\n/a\n\n/b?x=1\n")
    cfg = parse_args(
        [
            "http://[::1]:8080/base?q=1",
            "-p",
            "/x",
            "--paths-file",
            str(paths),
            "-H",
            "X-A: 1",
            "-m",
            "post",
            "--body",
            "hi",
            "--no-keepalive",
            "-w",
            "1",
            "--timeout",
            "2s",
        ]
    )
    assert cfg.host == "::1" and cfg.port == 8080 and cfg.host_header == "[::1]:8080"
    assert cfg.paths == ("/x", "/a", "/b?x=1") and cfg.method == "POST" and cfg.body == b"hi"
    assert cfg.headers == (("X-A", "1"),) and cfg.keepalive is False and cfg.timeout == 2.0
    assert parse_args(["http://127.0.0.1:8080/base?q=1"]).paths == ("/base?q=1",)


@pytest.mark.parametrize(
    "argv, fragment",
    [
        ([URL, "-c", "0"], "-c/--connections"),
        ([URL, "-c", "abc"], "invalid int"),
        ([URL, "--duration=-1s"], "not a duration"),
        ([URL, "--duration", "0s"], "--duration"),
        ([URL, "--duration", "soon"], "not a duration"),
        ([URL, "--rate", "0"], "--rate"),
        ([URL, "--rate", "10", "--interval", "1-2s"], "different modes"),
        ([URL, "--interval", "30-1s"], "LOW-HIGH"),
        ([URL, "--interval", "1-2s", "--no-keepalive"], "--no-keepalive"),
        ([URL, "--ramp", "fast"], "COUNT/PERIOD"),
        ([URL, "--ramp", "10/0ms"], "--ramp period"),
        ([URL, "--workers", "0"], "--workers"),
        ([URL, "-c", "2", "--workers", "3"], "every worker needs a connection"),
        ([URL, "--max-error-rate", "2"], "--max-error-rate"),
        ([URL, "--timeout", "0s"], "--timeout"),
        ([URL, "--paths-file", "/nonexistent/paths"], "--paths-file"),
        ([URL, "-H", "no colon"], "Name: value"),
        ([URL, "-m", "GE T"], "method"),
        ([URL, "-p", "no-slash"], "must start with '/'"),
        ([URL, "-m", "HEAD", "--body", "x"], "HEAD"),
        ([URL, "--json", "/nonexistent/dir/out.json"], "does not exist"),
        (["https://127.0.0.1/"], "only http://"),
        (["127.0.0.1:8888"], "only http://"),
        (["http://no-such-host.invalid/"], "cannot resolve"),
        ([], "required"),
        ([URL, "--bogus"], "unrecognized"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, fragment, capsys):
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and fragment in err and "Traceback" not in err


def test_bad_input_from_the_command_line():
    proc = subprocess.run(
        [sys.executable, "-m", "bench", URL, "-c", "-5"], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert (
        proc.stderr.strip().startswith("tornado-hps-bench: error:") and proc.stderr.count("\n") == 1
    )
    help_ = subprocess.run(
        [sys.executable, "-m", "bench", "--help"], capture_output=True, text=True, timeout=30
    )
    assert help_.returncode == 0 and "--max-error-rate" in help_.stdout


def test_usage_error_type():
    with pytest.raises(UsageError):
        parse_args([URL, "--warmup", "x"])


def test_open_file_limit_is_raised_then_reported():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        assert ensure_fd_limit(1000, 1) is None
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= 1000
        if hard != resource.RLIM_INFINITY:
            warning = ensure_fd_limit(hard * 2, 1)
            assert warning and "hard limit" in warning
            assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == hard
            assert ensure_fd_limit(hard * 2, 4) is None or hard * 2 // 4 + 64 > hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_too_few_files_is_said_before_starting_and_classified(bench_stub, tmp_path):
    """Hard limit of 64 files: -c 100 warns first, and the surplus connects fail as fd_limit."""
    stub = bench_stub()
    report = tmp_path / "r.json"
    code = (
        "import resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64)); "
        "from bench.__main__ import main; sys.exit(main(sys.argv[1:]))"
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            stub.url + "/",
            "-c",
            "100",
            "-d",
            "0.5s",
            "--json",
            str(report),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert "warning" in proc.stderr and "open files" in proc.stderr
    import json

    data = json.loads(report.read_text())
    assert data["connections"]["failed"]["fd_limit"] > 0
    assert any("open-file limit" in w or "open files" in w for w in data["warnings"])
    assert (
        data["requests"]["sent"]
        == data["requests"]["responses_total"] + data["requests"]["errors_total"]
    )
