"""The API documentation page in a real browser (Debian Chromium via Playwright), JavaScript off."""
import urllib.parse

import pytest

from helpers import get_json

pytestmark = pytest.mark.browser


def computed_style(page, selector, prop):
    """A CSS property of the first element a selector finds, as the browser computed it."""
    return page.evaluate(f"getComputedStyle(document.querySelector('{selector}')).{prop}")


@pytest.fixture
def no_js_page(chromium_browser):
    """A browser page with JavaScript disabled: the docs must be complete without it."""
    context = chromium_browser.new_context(java_script_enabled=False)
    try:
        yield context.new_page()
    finally:
        context.close()


def test_docs_page_shows_every_operation_without_javascript(no_js_page, live_server, artifacts_dir):
    page = no_js_page
    origin = urllib.parse.urlsplit(live_server.url).netloc
    hosts = set()
    page.on("request", lambda request: hosts.add(urllib.parse.urlsplit(request.url).netloc))
    page.set_viewport_size({"width": 1200, "height": 900})
    page.goto(live_server.url + "/api/docs")
    assert page.title().startswith("API documentation")

    document = get_json(live_server.url + "/api/openapi.json")
    operations = [(method, path) for path, item in document["paths"].items() for method in item]
    assert page.locator("article.op").count() == len(operations)
    assert page.locator(".docs-toc li").count() == len(operations)
    first = page.locator("article.op").first
    assert first.locator(".method").inner_text() == operations[0][0].upper()
    assert first.locator(".op-path").inner_text() == operations[0][1]
    # the request body of POST /api/messages as a field table: name, type, required
    post = page.locator("#post-api-messages")
    field = page.locator("code.field-name", has_text="text")
    row = post.locator(".field-table tr", has=field).first
    assert "string" in row.inner_text() and "required" in row.inner_text()
    assert post.locator(".status", has_text="201").count() == 1
    # both stylesheets arrived from this server and were applied; nothing came from elsewhere
    assert computed_style(page, ".method-get", "backgroundColor") == "rgb(11, 122, 117)"
    assert computed_style(page, ".site-header", "display") == "flex"
    assert hosts == {origin}
    page.screenshot(path=str(artifacts_dir / "api-docs.png"), full_page=True)

    # the table of contents jumps to the operation
    page.click(".docs-toc a[href='#get-api-slow']")
    assert page.url.endswith("#get-api-slow")
    assert page.locator("#get-api-slow").is_visible()


def test_docs_page_fits_a_phone(no_js_page, live_server, artifacts_dir):
    page = no_js_page
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(live_server.url + "/api/docs")
    # wide tables scroll inside their box; the page itself never scrolls sideways
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    page.screenshot(path=str(artifacts_dir / "api-docs-phone.png"), full_page=False)


def test_home_page_links_to_the_docs(no_js_page, live_server):
    page = no_js_page
    page.goto(live_server.url + "/")
    page.click("a[href='/api/docs']")
    page.wait_for_url("**/api/docs")
    assert page.locator("h1").inner_text() == "API documentation"
