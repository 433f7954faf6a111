"""Property-based fuzzing of the JSON API from its own OpenAPI document (schemathesis 4).

Every documented operation of a real `python -m server` (each HTTP engine) gets generated
requests, valid and invalid ones, and every answer must conform to /api/openapi.json: no 5xx
(beyond those the document lists for that operation and only if the check allows them), a
documented status code, the documented content type, headers and body schema.
"""
import re

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance,
                                               response_headers_conformance,
                                               response_schema_conformance,
                                               status_code_conformance)

from bench.ports import free_port

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
HTTP_URL = re.compile(r"^\s*https?:", re.IGNORECASE)


def keep_fetches_local(case, port: int) -> None:
    """/api/fetch: any generated http(s) URL is pointed at 127.0.0.1 (no traffic leaves the host)."""
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("urls"), list):
        body["urls"] = [f"http://127.0.0.1:{port}/fuzz" if isinstance(u, str) and HTTP_URL.match(u)
                        else u for u in body["urls"]]


def fuzz_operation(operation, mode, base_url, session, port, counter):
    """Run up to MAX_EXAMPLES generated cases of one operation; returns an error text or None."""
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"} if operation.method.upper() == "DELETE" else None

    @hypothesis.settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
                         derandomize=True, phases=[Phase.explicit, Phase.generate],
                         suppress_health_check=list(HealthCheck), report_multiple_bugs=False)
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
    def run(case):
        if operation.path == "/api/fetch":
            keep_fetches_local(case, port)
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
