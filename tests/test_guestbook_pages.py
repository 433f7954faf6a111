"""The /guestbook page and its form without JavaScript: XSRF, post/redirect/get, errors, escaping."""
import re
import urllib.parse

import pytest

from helpers import json_of

pytestmark = pytest.mark.gen_test(timeout=30)


async def form_token(api):
    """The XSRF cookie and form field a browser would get from the page."""
    page = await api.get("/guestbook")
    token = re.search(r'name="_xsrf" value="([^"]+)"', page.body.decode()).group(1)
    cookie = page.headers["Set-Cookie"].split(";", 1)[0]
    return cookie, token


async def submit(api, name, text, with_token=True):
    cookie, token = await form_token(api)
    fields = {"name": name, "text": text}
    if with_token:
        fields["_xsrf"] = token
    return await api.post("/guestbook", urllib.parse.urlencode(fields).encode(),
                          headers={"Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie},
                          follow_redirects=False)


async def test_page_shows_form_and_messages(api):
    await api.post("/api/messages", {"name": "Ada", "text": "Hello\nworld"})
    page = await api.get("/guestbook")
    html = page.body.decode()
    assert page.code == 200
    assert '<form class="sign" action="/guestbook" method="post"' in html
    assert 'name="_xsrf"' in html
    assert '<strong class="author">Ada</strong>' in html and "Hello\nworld" in html
    assert '<span id="message-count">1</span>' in html


async def test_form_post_redirects_back_and_shows_the_message(api):
    response = await submit(api, "Grace", "Signed without JavaScript")
    assert response.code == 303
    assert response.headers["Location"] == "/guestbook#messages"
    html = (await api.get("/guestbook")).body.decode()
    assert "Signed without JavaScript" in html


async def test_form_post_without_xsrf_token_is_refused(api):
    response = await submit(api, "Mallory", "forged", with_token=False)
    assert response.code == 403
    assert "_xsrf" in response.body.decode()
    assert json_of(await api.get("/api/messages"))["count"] == 0


async def test_form_errors_are_shown_in_the_form_with_the_input_kept(api):
    response = await submit(api, "Ada", "   ")
    html = response.body.decode()
    assert response.code == 422
    assert 'class="form-error"' in html and "Message must be 1 to 2000 characters" in html
    assert 'value="Ada"' in html
    assert json_of(await api.get("/api/messages"))["count"] == 0


async def test_message_text_is_escaped(api):
    attack = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    await submit(api, "<b>bold</b>", attack)
    html = (await api.get("/guestbook")).body.decode()
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in html
    assert "&lt;b&gt;bold&lt;/b&gt;" in html


@pytest.mark.server_settings(post_rate=(1, 60.0))
async def test_rate_limit_is_shown_in_the_form(api):
    assert (await submit(api, "Ada", "first")).code == 303
    response = await submit(api, "Ada", "second")
    assert response.code == 429
    assert "too many messages" in response.body.decode()
    assert 1 <= int(response.headers["Retry-After"]) <= 60


@pytest.mark.server_settings(page_size=5)
async def test_older_messages_are_paged(api):
    for i in range(7):
        await api.post("/api/messages", {"name": "P", "text": f"page test {i}"})
    html = (await api.get("/guestbook")).body.decode()
    assert "page test 6" in html and "page test 1" not in html
    older = re.search(r'href="(/guestbook\?before=\d+)">Older messages', html).group(1)
    html = (await api.get(older)).body.decode()
    assert "page test 1" in html and "page test 0" in html and "page test 6" not in html
    assert (await api.get("/guestbook?before=abc")).code == 422
