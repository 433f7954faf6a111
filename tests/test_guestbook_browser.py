"""The guestbook in a real browser: sign it, watch another page update live, XSS stays text, reconnect."""
import json
import signal
import urllib.request

import pytest

from helpers import free_port

pytestmark = pytest.mark.browser


def sign(page, name, text):
    page.fill("#gb-name", name)
    page.fill("#gb-text", text)
    page.click("form.sign button[type=submit]")
    page.wait_for_url("**/guestbook#messages")


def test_sign_through_the_form_and_see_the_message(page, live_server, artifacts_dir):
    page.goto(live_server.url + "/guestbook")
    page.wait_for_selector("#live-status[data-state=live]")
    sign(page, "Ada", "Signed in a real browser")
    first = page.locator("#message-list li").first
    assert first.locator(".author").inner_text() == "Ada"
    assert first.locator(".text").inner_text() == "Signed in a real browser"
    page.screenshot(path=str(artifacts_dir / "guestbook.png"), full_page=True)


def test_a_message_posted_in_one_page_appears_in_the_other(chromium_browser, live_server):
    reader_context, writer_context = chromium_browser.new_context(), chromium_browser.new_context()
    try:
        reader, writer = reader_context.new_page(), writer_context.new_page()
        reader.goto(live_server.url + "/guestbook")
        reader.wait_for_selector("#live-status[data-state=live]")
        count_before = int(reader.inner_text("#message-count"))
        writer.goto(live_server.url + "/guestbook")
        sign(writer, "Grace", "Hello to the other tab")
        # no reload: the reader's list changes within a second
        reader.wait_for_selector("#message-list li .text >> text=Hello to the other tab", timeout=1500)
        assert int(reader.inner_text("#message-count")) == count_before + 1
    finally:
        reader_context.close()
        writer_context.close()


def test_script_in_a_message_stays_text_both_rendered_and_live(chromium_browser, live_server):
    attack = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'
    reader_context, writer_context = chromium_browser.new_context(), chromium_browser.new_context()
    try:
        reader, writer = reader_context.new_page(), writer_context.new_page()
        reader.goto(live_server.url + "/guestbook")
        reader.wait_for_selector("#live-status[data-state=live]")
        writer.goto(live_server.url + "/guestbook")
        sign(writer, "<b>Mallory</b>", attack)
        live_item = reader.locator("#message-list li").first
        live_item.locator(".text >> text=window.__xss").wait_for(timeout=1500)
        assert live_item.locator(".text").inner_text() == attack
        assert live_item.locator(".author").inner_text() == "<b>Mallory</b>"
        rendered_item = writer.locator("#message-list li").first
        assert rendered_item.locator(".text").inner_text() == attack
        for page in (reader, writer):
            assert page.evaluate("window.__xss === undefined")
            assert page.locator("#message-list img").count() == 0
    finally:
        reader_context.close()
        writer_context.close()


def test_live_page_reconnects_after_the_server_restarts(page, live_server_factory, tmp_path):
    port = str(free_port())
    storage = ["--data-dir", str(tmp_path / "data"), "--port", port]
    first = live_server_factory(*storage)
    page.goto(first.url + "/guestbook")
    page.wait_for_selector("#live-status[data-state=live]")
    first.signal(signal.SIGTERM)
    assert first.wait() == 0
    page.wait_for_selector("#live-status[data-state=offline]", timeout=5000)
    second = live_server_factory(*storage)
    page.wait_for_selector("#live-status[data-state=live]", timeout=10000)
    urllib.request.urlopen(urllib.request.Request(
        second.url + "/api/messages", method="POST", headers={"Content-Type": "application/json"},
        data=json.dumps({"name": "Back", "text": "after the restart"}).encode()), timeout=10).read()
    page.wait_for_selector("#message-list li .text >> text=after the restart", timeout=1500)
