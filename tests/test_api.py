"""The JSON API through a real server on a loopback port: answers, error shapes and limits."""
import asyncio
import json
import urllib.parse

import pytest

from handlers.base import ApiHandler
from helpers import json_of, raw_http

pytestmark = pytest.mark.gen_test(timeout=60)


# --- greetings ---

async def test_hello_by_path_and_anonymous(api):
    response = await api.get("/api/hello/ada")
    assert response.code == 200
    assert json_of(response) == {"message": "Hello, ada"}
    assert json_of(await api.get("/api/hello")) == {"message": "Hello, Anonymous"}


async def test_hello_path_name_is_percent_decoded(api):
    response = await api.get("/api/hello/Ada%20Lovelace%20%C3%A9")
    assert json_of(response) == {"message": "Hello, Ada Lovelace é"}


async def test_hello_post(api):
    response = await api.post("/api/hello", {"name": "Grace"})
    assert response.code == 200
    assert json_of(response) == {"message": "Hello, Grace"}


@pytest.mark.parametrize("body, field", [
    ({}, "name"),
    ({"name": 42}, "name"),
    ({"name": "x" * 65}, "name"),
    ({"name": "ok", "extra": 1}, "extra"),
    ([1, 2], "body"),
])
async def test_hello_post_bad_fields_are_422_naming_the_field(api, body, field):
    response = await api.post("/api/hello", body)
    assert response.code == 422
    error = json_of(response)["error"]
    assert error["status"] == 422
    assert error["field"] == field
    assert field in error["message"] or field == "body"


async def test_too_long_name_in_path_is_422(api):
    response = await api.get("/api/hello/" + "x" * 65)
    assert response.code == 422
    assert json_of(response)["error"]["field"] == "name"


@pytest.mark.parametrize("path", ["/api/hello/", "/api/hello/%20%20"])
async def test_an_empty_or_blank_name_in_the_path_greets_anonymous_as_post_does(api, path):
    response = await api.get(path)
    assert response.code == 200, response.body
    assert json_of(response) == {"message": "Hello, Anonymous"}
    posted = await api.post("/api/hello", {"name": urllib.parse.unquote(path[len("/api/hello/"):])})
    assert json_of(posted) == json_of(response)


@pytest.mark.parametrize("path", ["/api/hello/a%00b", "/api/hello/%1B[31m"])
async def test_control_characters_in_the_path_name_are_422(api, path):
    response = await api.get(path)
    assert response.code == 422
    assert json_of(response)["error"]["field"] == "name"


async def test_malformed_json_is_400(api):
    response = await api.post("/api/hello", b'{"name": ', headers={"Content-Type": "application/json"})
    assert response.code == 400
    assert json_of(response)["error"]["message"].startswith("malformed JSON")


async def test_tornado_message_with_a_percent_sign_is_shown_as_sent(api):
    # the path is not UTF-8: Tornado's own 400 quotes its bytes, "%" and all (it showed "100%%")
    response = await api.get("/api/hello/100%25%FF")
    assert response.code == 400
    assert json_of(response) == {"error": {"status": 400,
                                           "message": "Invalid unicode in url: b'100%\\xff'"}}


async def test_wrong_content_type_is_415(api):
    response = await api.post("/api/hello", b"name=ada",
                              headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.code == 415
    assert "application/json" in json_of(response)["error"]["message"]


# --- echo ---

@pytest.mark.parametrize("document", [
    {"a": [1, 2.5, None, True], "b": {"c": "é ✓"}},
    [1, "two", {"three": 3}],
    "just a string",
    12345,
])
async def test_echo_returns_the_document(api, document):
    response = await api.post("/api/echo", document)
    assert response.code == 200
    assert json_of(response) == document


async def test_echo_rejects_nan_and_deep_nesting(api):
    response = await api.post("/api/echo", b"[NaN]", headers={"Content-Type": "application/json"})
    assert response.code == 400
    deep = b"[" * 100_000 + b"]" * 100_000
    response = await api.post("/api/echo", deep, headers={"Content-Type": "application/json"})
    assert response.code == 400
    assert "nested too deeply" in json_of(response)["error"]["message"]


@pytest.mark.server_settings(max_body_size=1024)
async def test_body_over_the_limit_is_413_json_and_nothing_is_read(api, http_port):
    response = await api.post("/api/echo", {"data": "x" * 2000})
    assert response.code == 413
    assert json_of(response)["error"]["status"] == 413
    # the answer comes from the head alone: a client that announces a huge body gets it at once
    raw = await raw_http(http_port, b"POST /api/echo HTTP/1.1\r\nHost: x\r\n"
                                    b"Content-Type: application/json\r\n"
                                    b"Content-Length: 999999999\r\n\r\n{")
    assert raw.startswith(b"HTTP/1.1 413 ")
    assert b'"status": 413' in raw


@pytest.mark.server_settings(max_body_size=1024)
async def test_body_at_the_limit_is_accepted(api):
    document = {"data": "x" * (1024 - len('{"data": ""}'))}
    assert len(json.dumps(document)) == 1024
    response = await api.post("/api/echo", document)
    assert response.code == 200
    assert json_of(response) == document


# --- errors ---

async def test_unknown_api_path_is_json_404_for_every_method(api):
    for method in ("GET", "POST", "DELETE"):
        response = await api.call(method, "/api/does/not/exist")
        assert response.code == 404
        assert json_of(response)["error"] == {"status": 404, "message": "no API route /api/does/not/exist"}


async def test_wrong_method_is_json_405_with_allow(api):
    response = await api.call("DELETE", "/api/hello")
    assert response.code == 405
    assert json_of(response)["error"]["status"] == 405
    assert set(response.headers["Allow"].split(", ")) == {"GET", "POST"}
    response = await api.get("/api/echo")
    assert response.code == 405
    assert response.headers["Allow"] == "POST"


class _CrashHandler(ApiHandler):
    async def get(self):
        raise RuntimeError("secret internal detail")


async def test_handler_crash_is_500_without_exception_text(api, http_server):
    http_server.http.request_callback.add_handlers(r".*", [(r"/api/test-crash", _CrashHandler)])
    response = await api.get("/api/test-crash")
    assert response.code == 500
    assert json_of(response) == {"error": {"status": 500, "message": "Internal Server Error"}}
    assert b"secret" not in response.body


# --- slow I/O ---

async def test_slow_waits_the_time_asked(api):
    response = await api.get("/api/slow?ms=200")
    body = json_of(response)
    assert body["requested_ms"] == 200
    assert 195 <= body["waited_ms"] < 1000


@pytest.mark.parametrize("query", ["", "?ms=", "?ms=-5", "?ms=abc", "?ms=30001", "?ms=1.5"])
async def test_slow_rejects_bad_ms(api, query):
    response = await api.get("/api/slow" + query)
    assert response.code == 422
    assert json_of(response)["error"]["field"] == "ms"


async def test_a_thousand_slow_requests_wait_at_the_same_time(api):
    """1,000 simulated 5 s waits are all in flight at once: none holds the loop or a worker.

    How long they take together is measured by `make bench` (the slow scenario), not here.
    """
    waits = [asyncio.ensure_future(api.get("/api/slow?ms=5000")) for _ in range(1000)]
    peak = 0
    while peak <= 1000 and not any(w.done() for w in waits):
        stats = json_of(await api.get("/api/stats"))
        peak = max(peak, stats["requests"]["in_flight"])  # the stats request itself is one
        await asyncio.sleep(0.05)
    responses = await asyncio.gather(*waits)
    assert [r.code for r in responses] == [200] * 1000
    assert peak == 1001, f"at most {peak - 1} of the 1,000 waits were in flight together"


# --- concurrency cap ---

@pytest.mark.server_settings(max_concurrency=3)
async def test_requests_beyond_max_concurrency_get_503_with_retry_after(api):
    slow = [asyncio.ensure_future(api.get("/api/slow?ms=1500")) for _ in range(3)]
    await asyncio.sleep(0.3)
    refused = await api.get("/api/hello/ada")
    assert refused.code == 503
    assert refused.headers["Retry-After"] == "1"
    assert "busy" in json_of(refused)["error"]["message"]
    assert (await api.get("/healthz")).code == 200  # probes are never refused
    assert [r.code for r in await asyncio.gather(*slow)] == [200] * 3
    assert (await api.get("/api/hello/ada")).code == 200  # slots were given back


# --- CPU work off the loop ---

@pytest.mark.parametrize("n, primes", [(0, 0), (1, 0), (2, 1), (100, 25), (1_000_000, 78498)])
async def test_compute_counts_primes(api, n, primes):
    response = await api.post("/api/compute", {"n": n})
    body = json_of(response)
    assert response.code == 200
    assert body["n"] == n and body["primes"] == primes
    assert body["elapsed_ms"] >= body["cpu_ms"] >= 0


@pytest.mark.parametrize("text", ["100.0", "1e2", "1.0E2"])
async def test_compute_takes_a_whole_number_written_as_a_float(api, text):
    """JSON Schema's "integer" (what the document says n is) counts 100.0 and 1e2 as integers."""
    response = await api.post("/api/compute", f'{{"n": {text}}}'.encode(),
                              headers={"Content-Type": "application/json"})
    assert response.code == 200, response.body
    assert json_of(response)["n"] == 100 and json_of(response)["primes"] == 25


@pytest.mark.parametrize("body", [{"n": -1}, {"n": 20_000_001}, {"n": "5"}, {"n": 5.5}, {"n": True},
                                  {"n": -1.0}, {"n": 1e300}, {}])
async def test_compute_rejects_bad_n(api, body):
    response = await api.post("/api/compute", body)
    assert response.code == 422
    assert json_of(response)["error"]["field"] == "n"


@pytest.mark.server_settings(compute_max_n=60_000_000)
async def test_event_loop_answers_while_compute_runs(api):
    """Health probes are answered while a long count runs: it runs off the event loop.

    (Were it on the loop, no probe could be answered before the job is done.)
    """
    job = asyncio.ensure_future(api.post("/api/compute", {"n": 60_000_000}))
    await asyncio.sleep(0.3)
    for _ in range(5):
        assert (await api.get("/healthz")).code == 200
    assert not job.done(), "the compute job finished too fast to show anything"
    result = json_of(await job)
    assert result["primes"] == 3_562_115


@pytest.mark.server_settings(compute_max_pending=1, compute_max_n=60_000_000)
async def test_compute_beyond_pending_cap_is_503(api):
    job = asyncio.ensure_future(api.post("/api/compute", {"n": 60_000_000}))
    await asyncio.sleep(0.3)
    refused = await api.post("/api/compute", {"n": 10})
    assert refused.code == 503
    assert refused.headers["Retry-After"] == "1"
    assert (await job).code == 200


# --- probes ---

async def test_health_and_ready(api, http_server):
    health = json_of(await api.get("/healthz"))
    assert health["status"] == "ok"
    ready = await api.get("/readyz")
    assert ready.code == 200 and json_of(ready)["status"] == "ready"
    http_server.state.draining = True
    try:
        draining = await api.get("/readyz")
        assert draining.code == 503
        assert json_of(draining)["status"] == "draining"
        assert (await api.get("/healthz")).code == 200
    finally:
        http_server.state.draining = False
