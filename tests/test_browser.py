"""Pages in a real browser (Debian Chromium through Playwright): the greeting flow, with and without JS."""
import pytest

pytestmark = pytest.mark.browser


def test_home_form_leads_to_the_greeting(page, live_server, artifacts_dir):
    page.goto(live_server.url + "/")
    assert page.title().startswith("tornado-hps")
    page.fill("#name", "Ada <Lovelace>")
    page.click("button[type=submit]")
    page.wait_for_url("**/hello?name=*")
    assert page.inner_text("#greeting") == "Hello, Ada <Lovelace>"
    # styles arrived: the stylesheet was loaded from /static/ and applied
    assert page.evaluate("getComputedStyle(document.querySelector('.site-header')).display") == "flex"
    page.screenshot(path=str(artifacts_dir / "greeting.png"), full_page=True)


def test_pages_work_without_javascript(chromium_browser, live_server, artifacts_dir):
    context = chromium_browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        page.goto(live_server.url + "/")
        page.fill("#name", "Grace")
        page.press("#name", "Enter")
        page.wait_for_url("**/hello?name=Grace")
        assert page.inner_text("#greeting") == "Hello, Grace"
        page.goto(live_server.url + "/no/such/page")
        assert page.inner_text("h1") == "Not Found"
        page.screenshot(path=str(artifacts_dir / "not-found.png"), full_page=True)
    finally:
        context.close()


def test_home_page_screenshot(page, live_server, artifacts_dir):
    page.set_viewport_size({"width": 1200, "height": 900})
    page.goto(live_server.url + "/")
    assert page.locator("table.routes tbody tr").count() == 9
    page.screenshot(path=str(artifacts_dir / "home.png"), full_page=True)
