"""Property-based fuzzing of the JSON API from its own OpenAPI document (schemathesis 4).

Every documented operation of a real `python -m server` (each HTTP engine) gets generated
requests, valid and invalid ones, and every answer must conform to /api/openapi.json: no 5xx
(beyond those the document lists for that operation and only if the check allows them), a
documented status code, the documented content type, headers and body schema.

Two runs: the Python API with five response checks (make test, a minute), and the `st` command
line with every check (`--checks all`: also valid data accepted, invalid data refused, 405s with
Allow, auth not ignored, deleted resources gone, ...) and all four phases (the document's
examples, coverage of each constraint's edges, fuzzing, and stateful sequences that follow the
document's links) for a bounded time per engine (make soak). Not fuzzed, in both:
GET /api/stats/stream, an endless Server-Sent Events stream (no request to it ever completes).
Documented false positives: none; every failure fails the test.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from bench.ports import free_port
from helpers import keep_fetches_local

pytestmark = pytest.mark.hardening

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]
MAX_EXAMPLES = 30  # per operation and generation mode
ADMIN_TOKEN = "fuzz-admin-token"
# an endless Server-Sent Events stream: a request to it never completes, nothing to fuzz
NOT_FUZZED = {"GET /api/stats/stream"}
# the handler bounds: generated values beyond them get a documented 422, not a long wait
SERVER_ARGS = ["--log-level", "warning", "--access-log", "off", "--slow-max-ms", "50",
               "--compute-max-n", "100000", "--compute-workers", "1", "--post-rate", "off",
               "--admin-token", ADMIN_TOKEN, "--outbound-timeout", "2"]
# the command line run: its time budget per engine (fuzzing and stateful repeat until it is spent)
CLI_MAX_TIME = 150
CLI_EXAMPLES = 20  # per operation and phase
ST = Path(sys.executable).with_name("st")  # schemathesis' command, installed beside this Python
TESTS = Path(__file__).resolve().parent


def fuzz_operation(operation, mode, base_url, session, port, counter):
    """Run up to MAX_EXAMPLES generated cases of one operation; returns an error text or None."""
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"} if operation.method.upper() == "DELETE" else None

    @hypothesis.settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
                         derandomize=True, phases=[Phase.explicit, Phase.generate],
                         suppress_health_check=list(HealthCheck), report_multiple_bugs=False)
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
    def run(case):
        if operation.path == "/api/fetch":
            keep_fetches_local(case.body, f"http://127.0.0.1:{port}/fuzz")
        counter[0] += 1
        case.call_and_validate(base_url=base_url, session=session, headers=headers,
                               checks=CHECKS, timeout=15)

    try:
        run()
    except Unsatisfiable:
        return None  # no invalid input exists for this operation (nothing to send in this mode)
    except Exception as exc:  # a failed check: keep going, report every operation at the end
        return f"{operation.label} ({mode.value}): {type(exc).__name__}: {exc}"
    return None


def test_api_conforms_to_its_openapi_document(engine, live_server_factory, reliability):
    reliability.describe(f"schemathesis fuzzing of every documented API operation from "
                         f"/api/openapi.json ({engine} engine), valid and invalid inputs",
                         area="bad input")
    server = live_server_factory(*SERVER_ARGS, "--engine", engine)
    schema = schemathesis.openapi.from_url(server.url + "/api/openapi.json")
    port = free_port()  # nothing listens: outbound fetches to it are refused at once
    counter = [0]
    failures, operations = [], []
    with requests.Session() as session:
        for result in schema.get_all_operations():
            operation = result.ok()
            if operation.label in NOT_FUZZED:
                continue
            operations.append(operation.label)
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                failure = fuzz_operation(operation, mode, server.url, session, port, counter)
                if failure:
                    failures.append(failure)
        # the server is still healthy and logged no traceback for anything it was sent
        assert session.get(server.url + "/api/hello/x", timeout=10).status_code == 200
    reliability.figure(f"{len(operations)} operations, {counter[0]} generated requests, "
                       f"{len(failures)} non-conforming")
    assert len(operations) >= 15, operations
    assert counter[0] >= 10 * len(operations)
    assert not failures, "\n\n".join(failures)
    server.signal()  # SIGTERM: a clean drain and exit
    assert server.wait() == 0, server.stderr
    log = server.stderr
    assert "Traceback" not in log and "Uncaught exception" not in log, log[-5000:]


@pytest.mark.soak
def test_every_check_and_phase_of_the_schemathesis_command_line(engine, live_server_factory,
                                                               reliability, tmp_path):
    reliability.describe(f"schemathesis command line, every check (--checks all) and phase "
                         f"(examples, coverage, fuzzing, stateful), {CLI_MAX_TIME} s "
                         f"({engine} engine)", area="bad input")
    server = live_server_factory(*SERVER_ARGS, "--engine", engine)
    env = dict(os.environ, SCHEMATHESIS_HOOKS="schemathesis_hooks",
               SCHEMATHESIS_LOOPBACK_PORT=str(free_port()),  # nothing listens there
               PYTHONPATH=os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))
    argv = [str(ST), "run", server.url.rstrip("/") + "/api/openapi.json", "--checks", "all",
            "--phases", "examples,coverage,fuzzing,stateful", "--max-examples", str(CLI_EXAMPLES),
            "--seed", "1", "--max-time", str(CLI_MAX_TIME), "--request-timeout", "15",
            "--header", f"Authorization: Bearer {ADMIN_TOKEN}",
            *[arg for label in NOT_FUZZED for arg in ("--exclude-path", label.split()[1])],
            "--generation-database", "none", "--no-color", "--report", "junit",
            "--report-dir", str(tmp_path)]
    done = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=CLI_MAX_TIME + 180)  # cwd: st keeps a .schemathesis cache there
    out = done.stdout + done.stderr
    generated = re.search(r"(\d+) generated", out)
    tested = re.search(r"Tested: (\d+)", out)
    failures = re.search(r"(\d+) unique failures", out)
    reliability.figure(f"{tested.group(1) if tested else '?'} operations, "
                       f"{generated.group(1) if generated else '?'} generated requests, "
                       f"{failures.group(1) if failures else 0} failures")
    assert done.returncode == 0, out[-20000:]
    assert generated and int(generated.group(1)) >= 1000, out[-5000:]
    assert tested and int(tested.group(1)) >= 15, out[-5000:]
    for phase in ("Examples", "Coverage", "Fuzzing", "Stateful"):
        assert f"✅ {phase}" in out, out[-5000:]
    with requests.Session() as session:  # still healthy after all of it
        assert session.get(server.url.rstrip("/") + "/api/hello/x", timeout=10).status_code == 200
    server.signal()  # SIGTERM: a clean drain and exit
    assert server.wait() == 0, server.stderr
    assert "Traceback" not in server.stderr and "Uncaught exception" not in server.stderr, \
        server.stderr[-5000:]
