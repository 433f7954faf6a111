"""A foreign WebSocket chat (tests/apps/chat.py, Tornado's chat demo) in Chromium, on both engines.

Served by ``python -m server --app-dir tests/apps --app chat:make_app``: two browsers join the room,
what one types appears in both, markup stays text.
"""
import pytest

from helpers import PROJECT_ROOT

pytestmark = pytest.mark.browser


@pytest.mark.parametrize("engine", ["fast", "tornado"])
def test_two_browsers_chat_through_the_launcher(chromium_browser, live_server_factory, engine,
                                                artifacts_dir):
    server = live_server_factory("--app-dir", str(PROJECT_ROOT / "tests" / "apps"),
                                 "--app", "chat:make_app", "--engine", engine)
    contexts = [chromium_browser.new_context(), chromium_browser.new_context()]
    try:
        ada, grace = (context.new_page() for context in contexts)
        for page in (ada, grace):
            page.goto(server.url + "/")
            page.wait_for_selector("body[data-connected=yes]")
        ada.fill("#message", "Hello from Ada")
        ada.press("#message", "Enter")
        for page in (ada, grace):
            page.wait_for_selector(".message >> text=Hello from Ada", timeout=3000)
        grace.fill("#message", "<b>not bold</b>")
        grace.press("#message", "Enter")
        ada.wait_for_selector(".message >> text=<b>not bold</b>", timeout=3000)
        assert ada.locator(".message b").count() == 0  # escaped by the app's template
        # a page opened later sees the room's history, rendered by the server
        late = contexts[0].new_page()
        late.goto(server.url + "/")
        assert late.locator(".message").all_inner_texts() == ["Hello from Ada", "<b>not bold</b>"]
        ada.screenshot(path=str(artifacts_dir / f"app-chat-{engine}.png"), full_page=True)
    finally:
        for context in contexts:
            context.close()
