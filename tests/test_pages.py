"""HTML pages and static files through a real server: content, escaping, errors, caching."""
import re

import pytest

from helpers import raw_http

pytestmark = pytest.mark.gen_test(timeout=30)


async def test_home_has_a_greeting_form_and_links(api):
    response = await api.get("/")
    html = response.body.decode()
    assert response.code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    assert '<form class="greet" action="/hello" method="get">' in html
    assert 'name="name"' in html
    for link in ("/api/hello/ada", "/api/slow?ms=500", "/healthz", "/hello/World"):
        assert f'href="{link}"' in html
    stylesheet = re.search(r'href="(/static/css/site\.css\?v=[0-9a-f]+)"', html)
    assert stylesheet, "stylesheet is linked through static_url with a version"


@pytest.mark.parametrize("path, expected", [
    ("/hello?name=Ada", "Hello, Ada"),
    ("/hello/Grace%20Hopper", "Hello, Grace Hopper"),
    ("/hello", "Hello, Anonymous"),
    ("/hello?name=", "Hello, Anonymous"),
])
async def test_greeting_page(api, path, expected):
    response = await api.get(path)
    assert response.code == 200
    assert f'<h1 id="greeting">{expected}</h1>' in response.body.decode()


async def test_greeting_page_escapes_html(api):
    response = await api.get("/hello?name=%3Cscript%3Ealert(1)%3C/script%3E%20%26%20%22q%22")
    html = response.body.decode()
    assert "<script>alert(1)" not in html
    assert "Hello, &lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;q&quot;" in html


async def test_too_long_name_shows_the_form_with_an_error(api):
    response = await api.get("/hello?name=" + "x" * 100)
    html = response.body.decode()
    assert response.code == 422
    assert 'class="form-error"' in html and "at most 64 characters" in html
    assert 'value="' + "x" * 100 + '"' in html


@pytest.mark.parametrize("query", ["name=%01Ada", "name=Ada%00", "name=Ada&name=Grace"])
async def test_a_name_with_control_characters_or_given_twice_is_refused_on_a_page(api, query):
    """The name as sent: Tornado's own reading would greet "Ada" (control characters become
    spaces that are then stripped) or the last of two names."""
    response = await api.get("/hello?" + query)
    assert response.code == 422
    assert "text/html" in response.headers["Content-Type"]
    assert "Hello, Ada" not in response.body.decode() and "Hello, Grace" not in response.body.decode()


async def test_unknown_page_is_a_styled_404(api):
    response = await api.get("/no/such/page?x=<b>")
    html = response.body.decode()
    assert response.code == 404
    assert response.headers["Content-Type"].startswith("text/html")
    assert '<p class="status">404</p>' in html and "Not Found" in html
    assert "There is no page at /no/such/page" in html
    assert "/static/css/site.css" in html
    assert "Traceback" not in html


async def test_tornado_message_with_a_percent_sign_is_shown_as_sent_on_the_page(api):
    response = await api.get("/hello/100%25%FF")  # not UTF-8: Tornado's own 400
    html = response.body.decode()
    assert response.code == 400 and '<p class="status">400</p>' in html
    assert "Invalid unicode in url: b&#x27;100%\\xff&#x27;" in html and "%%" not in html


async def test_post_to_a_page_is_405_not_a_traceback(api):
    response = await api.post("/hello", b"name=x",
                              headers={"Content-Type": "application/x-www-form-urlencoded"})
    # a method the page does not have is a 405 (not the XSRF check's 403), as a styled page
    assert response.code == 405
    assert '<p class="status">' in response.body.decode()


async def test_static_files_are_versioned_and_cached_long(api):
    home = (await api.get("/")).body.decode()
    versioned = re.search(r'href="(/static/css/site\.css\?v=[0-9a-f]+)"', home).group(1)
    response = await api.get(versioned)
    assert response.code == 200
    assert response.headers["Content-Type"].startswith("text/css")
    assert "max-age=31536000" in response.headers["Cache-Control"]
    assert response.headers["Etag"]
    unversioned = await api.get("/static/css/site.css")
    assert "31536000" not in unversioned.headers.get("Cache-Control", "")
    missing = await api.get("/static/nope.css")
    assert missing.code == 404 and '<p class="status">404</p>' in missing.body.decode()


async def test_static_traversal_is_refused(http_port):
    for target in (b"/static/../setup.cfg", b"/static/%2e%2e/setup.cfg", b"/static/..%2fsetup.cfg"):
        raw = await raw_http(http_port,
                             b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        status = int(raw.split(b" ", 2)[1])
        assert status in (403, 404), (target, raw[:200])
        assert b"[metadata]" not in raw


async def test_pages_carry_no_script_requirements(api):
    """Every page works without JavaScript: none of them loads a script."""
    for path in ("/", "/hello/Ada", "/nope"):
        assert "<script" not in (await api.get(path)).body.decode()
