"""The live dashboard in headless Chromium while `python -m bench` loads the server."""
import signal
import subprocess
import sys
import time

import pytest

from helpers import PROJECT_ROOT, free_port

pytestmark = pytest.mark.browser


def number(page, selector):
    text = page.inner_text(selector).strip()
    return float(text) if text not in ("", "–") else 0.0


def test_dashboard_charts_move_under_load(page, live_server, artifacts_dir):
    page.set_viewport_size({"width": 1280, "height": 1100})
    page.goto(live_server.url + "/dashboard")
    page.wait_for_selector("#live-status[data-state=live]", timeout=5000)
    assert page.locator(".uplot").count() == 4  # the vendored charting library drew four charts
    total_before = number(page, "#stat-total")
    load = subprocess.Popen(
        [sys.executable, "-m", "bench", live_server.url + "/api/hello/dashboard", "-c", "20",
         "--duration", "4s", "--no-progress", "-q"],
        cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # the numbers on the page climb while the load runs, without a reload
        # polled from Python: wait_for_function evaluates a string in the page, which the
        # Content-Security-Policy (script-src 'self', no 'unsafe-eval') rightly forbids
        deadline = time.monotonic() + 6
        while number(page, "#stat-rps") <= 50:
            assert time.monotonic() < deadline, "requests/s on the page never rose above 50"
            page.wait_for_timeout(100)
        page.wait_for_timeout(1500)
        assert number(page, "#stat-total") > total_before + 100
        assert page.locator("#routes tbody tr td >> text=api-hello-name").count() == 1
        page.screenshot(path=str(artifacts_dir / "dashboard.png"), full_page=True)
    finally:
        assert load.wait(30) == 0


def test_dashboard_reconnects_after_the_server_restarts(page, live_server_factory, tmp_path):
    port = str(free_port())
    storage = ["--data-dir", str(tmp_path / "data"), "--port", port]
    first = live_server_factory(*storage)
    page.goto(first.url + "/dashboard")
    page.wait_for_selector("#live-status[data-state=live]", timeout=5000)
    assert page.inner_text("#stat-pid") == str(first.proc.pid)
    first.signal(signal.SIGTERM)
    assert first.wait() == 0
    page.wait_for_selector("#live-status[data-state=offline]", timeout=5000)
    second = live_server_factory(*storage)
    page.wait_for_selector("#live-status[data-state=live]", timeout=10000)
    # the numbers now come from the new process, without a reload
    deadline = time.monotonic() + 5
    while page.inner_text("#stat-pid") != str(second.proc.pid):
        assert time.monotonic() < deadline, "the dashboard never showed the restarted server's pid"
        page.wait_for_timeout(100)
