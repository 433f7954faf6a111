"""The Content-Security-Policy in a real browser: every page works and the console shows no violation."""
import time

import pytest

from helpers import PROJECT_ROOT, LiveServer

pytestmark = [pytest.mark.browser, pytest.mark.hardening]

# records what the policy blocked; init scripts run outside the page's CSP
RECORD_VIOLATIONS = """
window.__csp = [];
document.addEventListener("securitypolicyviolation",
  e => window.__csp.push(e.violatedDirective + " " + e.blockedURI));
"""

# (path, what shows the page's scripts worked); None: a page without scripts
PAGES = [
    ("/", None),
    ("/hello?name=Ada", None),
    ("/guestbook", "#live-status[data-state=live]"),       # its WebSocket connected
    ("/dashboard", "#live-status[data-state=live]"),       # its event stream connected
    ("/api/docs", None),
    ("/files/", None),
    ("/no/such/page", None),
]


@pytest.fixture(scope="module")
def csp_server():
    """A server with --files, so the listing page is checked too."""
    server = LiveServer("--log-level", "warning", "--files", str(PROJECT_ROOT / "docs")).wait_ready()
    yield server
    server.stop()


def test_no_page_violates_the_content_security_policy(chromium_browser, csp_server, reliability):
    reliability.describe("every page in headless Chromium under the CSP (scripts, styles, "
                         "WebSocket, event stream)", area="security")
    context = chromium_browser.new_context()
    try:
        page = context.new_page()
        page.add_init_script(RECORD_VIOLATIONS)
        console = []
        page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
        page.on("pageerror", lambda error: console.append(f"pageerror: {error}"))
        for path, ready in PAGES:
            response = page.goto(csp_server.url + path)
            assert "default-src 'self'" in response.headers["content-security-policy"], path
            if ready:
                page.wait_for_selector(ready, timeout=10000)
            page.wait_for_load_state("load")
            stylesheet = page.evaluate("getComputedStyle(document.querySelector('.site-header')).display")
            assert stylesheet == "flex", path  # site.css applied
            violations = page.evaluate("window.__csp")
            assert violations == [], (path, violations)
        blocked = [line for line in console if "Content Security Policy" in line or "pageerror" in line]
        assert blocked == [], blocked
    finally:
        context.close()
    reliability.figure(f"{len(PAGES)} pages, 0 CSP violations, 0 console errors about the policy")


def test_the_dashboard_charts_render_under_the_policy(page, csp_server):
    page.add_init_script(RECORD_VIOLATIONS)
    page.goto(csp_server.url + "/dashboard")
    page.wait_for_selector("#live-status[data-state=live]", timeout=10000)
    page.wait_for_selector("#chart-rps canvas", timeout=10000)  # uPlot drew its chart
    assert page.evaluate("window.__csp") == []


def test_pages_cannot_be_framed(page, csp_server):
    response = page.goto(csp_server.url + "/")
    assert response.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


def test_an_injected_inline_script_is_blocked_and_reported(page, csp_server):
    # proves the policy is enforced and that the violation check above would see a breach
    page.add_init_script(RECORD_VIOLATIONS)
    page.goto(csp_server.url + "/")
    page.evaluate("""() => { const s = document.createElement('script');
                             s.textContent = 'window.__ran = true'; document.body.appendChild(s); }""")
    # polled from Python: wait_for_function's polling evals a string, which this CSP forbids
    deadline = time.monotonic() + 5
    while not page.evaluate("window.__csp.length") and time.monotonic() < deadline:
        page.wait_for_timeout(50)
    assert page.evaluate("window.__ran === undefined")
    assert page.evaluate("window.__csp")[0].startswith("script-src")
