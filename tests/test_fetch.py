"""POST /api/fetch against a real upstream server on loopback: results, limits and the SSRF guard."""
import time

import pytest

from helpers import json_of

pytestmark = pytest.mark.gen_test(timeout=60)


async def fetch(api, urls, method="GET"):
    response = await api.post("/api/fetch", {"urls": urls, "method": method})
    assert response.code == 200, response.body
    return json_of(response)["results"]


async def test_fetch_reports_status_size_headers_and_title(api, upstream):
    [page, plain, missing] = await fetch(api, [upstream + "/page", upstream + "/plain",
                                               upstream + "/missing"])
    assert page["ok"] and page["status"] == 200 and page["reason"] == "OK"
    assert page["title"] == "Upstream & Co"
    assert page["size"] > 100
    assert page["headers"]["Content-Type"].startswith("text/html")
    assert page["time_ms"] > 0 and page["error"] is None
    assert plain["title"] is None and plain["size"] == len("just text")
    assert missing["ok"] is False and missing["status"] == 404 and missing["error"] is None


async def test_fetch_head_and_redirects(api, upstream):
    [head] = await fetch(api, [upstream + "/page"], method="HEAD")
    assert head["status"] == 200 and head["size"] == 0 and head["title"] is None
    [redirected] = await fetch(api, [upstream + "/redirect-page"])
    assert redirected["status"] == 200
    assert redirected["final_url"] == upstream + "/page"
    assert redirected["title"] == "Upstream & Co"


async def test_fetches_run_concurrently(api, upstream):
    started = time.monotonic()
    results = await fetch(api, [upstream + "/sleep?s=0.8"] * 10)
    elapsed = time.monotonic() - started
    assert all(r["status"] == 200 for r in results)
    assert elapsed < 4.0, f"10 fetches of 0.8 s took {elapsed:.1f} s: not concurrent"


@pytest.mark.server_settings(outbound_timeout=0.5)
async def test_per_url_errors_are_in_the_result(api, upstream):
    results = await fetch(api, [
        upstream + "/sleep?s=3",
        "ftp://127.0.0.1/file",
        "not a url",
        upstream + "/reset",
        "http://127.0.0.1:1/",
        upstream + "/page",
    ])
    errors = [r["error"] for r in results]
    assert errors[0] == "timeout"
    assert errors[1] == "only http and https URLs can be fetched"
    assert errors[2] == "only http and https URLs can be fetched"
    assert "closed" in errors[3] or "reset" in errors[3]
    assert errors[4] == "connection refused"
    assert errors[5] is None and results[5]["status"] == 200
    assert all(r["ok"] is False for r in results[:5])


@pytest.mark.server_settings(outbound_timeout=0.5)
async def test_a_gateway_error_when_every_upstream_fails(api, upstream):
    """Every URL failing upstream is the upstream's failure: 504 with a timeout among them, else 502."""
    hanging = await api.post("/api/fetch", {"urls": [upstream + "/sleep?s=3", "http://127.0.0.1:1/"]})
    assert hanging.code == 504
    message = json_of(hanging)["error"]["message"]
    assert "timeout" in message and "connection refused" in message and upstream in message
    reset = await api.post("/api/fetch", {"urls": [upstream + "/reset"]})
    assert reset.code == 502
    assert json_of(reset)["error"]["status"] == 502
    # one good answer among them, or failures that are ours (bad URL), keep it a 200 with results
    mixed = await api.post("/api/fetch", {"urls": [upstream + "/reset", upstream + "/page"]})
    assert mixed.code == 200
    ours = await api.post("/api/fetch", {"urls": ["ftp://127.0.0.1/file", upstream + "/reset"]})
    assert ours.code == 200


@pytest.mark.server_settings(outbound_max_bytes=64 * 1024)
async def test_response_size_cap(api, upstream):
    big, chunked, page = await fetch(api, [upstream + "/big", upstream + "/big-chunked", upstream + "/page"])
    assert big["error"] == "response larger than 65536 bytes"
    assert chunked["error"] == "response larger than 65536 bytes"
    assert page["ok"]


@pytest.mark.server_settings(outbound_max_urls=3)
async def test_input_validation(api, upstream):
    too_many = await api.post("/api/fetch", {"urls": [upstream + "/page"] * 4})
    assert too_many.code == 422 and json_of(too_many)["error"]["field"] == "urls"
    empty = await api.post("/api/fetch", {"urls": []})
    assert empty.code == 422
    bad_method = await api.post("/api/fetch", {"urls": [upstream + "/page"], "method": "POST"})
    assert bad_method.code == 422 and json_of(bad_method)["error"]["field"] == "method"
    not_list = await api.post("/api/fetch", {"urls": upstream + "/page"})
    assert not_list.code == 422


@pytest.mark.server_settings(outbound_allow=())
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "10.0.0.1", "192.168.1.1", "169.254.169.254",
                                  "[::1]", "0.0.0.0", "[::ffff:127.0.0.1]", "100.64.0.1"])
async def test_ssrf_guard_refuses_non_public_addresses(api, upstream, host):
    port = upstream.rsplit(":", 1)[1]
    [result] = await fetch(api, [f"http://{host}:{port}/page"])
    assert result["ok"] is False and result["status"] is None
    assert result["error"].startswith("refused: "), result


@pytest.mark.server_settings(outbound_allow=())
async def test_ssrf_guard_checks_the_resolved_address_not_the_name(api, upstream):
    # 'localhost' is not an IP literal: only resolving it shows it is loopback
    port = upstream.rsplit(":", 1)[1]
    [result] = await fetch(api, [f"http://localhost:{port}/page"])
    assert "resolves to a non-public address" in result["error"]


async def test_ssrf_guard_applies_to_redirects(api, upstream):
    # 127.0.0.1 is allowed in tests, the private address it redirects to is not
    [result] = await fetch(api, [upstream + "/redirect-private"])
    assert result["error"].startswith("refused: 10.255.255.1 resolves to a non-public address")


@pytest.mark.server_settings(outbound_allow=("localhost",))
async def test_allow_list_by_host_name(api, upstream):
    port = upstream.rsplit(":", 1)[1]
    [result] = await fetch(api, [f"http://localhost:{port}/page"])
    assert result["status"] == 200
