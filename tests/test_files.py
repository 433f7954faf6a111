"""--files DIR at /files/: listings, file serving with ETag and Range, and no way out of DIR."""
import os

import pytest

from helpers import raw_http
from server.config import Settings

pytestmark = pytest.mark.gen_test(timeout=30)


@pytest.fixture
def shared(tmp_path):
    """A shared directory with files, a subdirectory, a dotfile and symlinks in and out."""
    root = tmp_path / "shared"
    (root / "docs" / "deep").mkdir(parents=True)
    (root / "hello.txt").write_text("hello from the shared directory\n")
    (root / "docs" / "a <b> & c.txt").write_text("odd name")
    (root / "docs" / "deep" / "data.bin").write_bytes(bytes(range(256)) * 8)
    (root / ".secret").write_text("hidden")
    outside = tmp_path / "outside.txt"
    outside.write_text("SECRET OUTSIDE")
    os.symlink(outside, root / "escape.txt")
    os.symlink(tmp_path, root / "escape-dir")
    os.symlink(root / "hello.txt", root / "inside-link.txt")
    return root


@pytest.fixture
def server_settings(shared):
    return Settings(address="127.0.0.1", port=0, compute_workers=1, log_level="warning",
                    cookie_secret="t", files=shared)


def status_of(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1])


async def get_raw(port, target: bytes) -> bytes:
    return await raw_http(port, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")


async def test_listing_shows_entries_escaped_and_hides_dotfiles(api):
    response = await api.get("/files/")
    html = response.body.decode()
    assert response.code == 200
    assert 'href="hello.txt"' in html and 'href="docs/"' in html
    assert ".secret" not in html
    assert html.index('href="docs/"') < html.index('href="hello.txt"'), "directories first"
    sub = (await api.get("/files/docs/")).body.decode()
    assert "a &lt;b&gt; &amp; c.txt" in sub
    assert 'href="a%20%3Cb%3E%20%26%20c.txt"' in sub
    assert 'href="../"' in sub


async def test_directory_without_slash_redirects(api):
    response = await api.get("/files/docs", follow_redirects=False)
    assert response.code == 301 and response.headers["Location"] == "/files/docs/"
    response = await api.get("/files", follow_redirects=False)
    assert response.code in (301, 302) and response.headers["Location"] == "/files/"


async def test_file_with_etag_last_modified_and_304(api):
    response = await api.get("/files/hello.txt")
    assert response.code == 200
    assert response.body == b"hello from the shared directory\n"
    assert response.headers["Etag"] and response.headers["Last-Modified"]
    again = await api.get("/files/hello.txt", headers={"If-None-Match": response.headers["Etag"]})
    assert again.code == 304 and again.body == b""
    odd = await api.get("/files/docs/a%20%3Cb%3E%20%26%20c.txt")
    assert odd.body == b"odd name"


async def test_range_requests(api):
    data = bytes(range(256)) * 8
    response = await api.get("/files/docs/deep/data.bin", headers={"Range": "bytes=10-19"})
    assert response.code == 206
    assert response.body == data[10:20]
    assert response.headers["Content-Range"] == f"bytes 10-19/{len(data)}"
    tail = await api.get("/files/docs/deep/data.bin", headers={"Range": "bytes=-4"})
    assert tail.body == data[-4:]
    beyond = await api.get("/files/docs/deep/data.bin", headers={"Range": "bytes=99999-"})
    assert beyond.code == 416


async def test_symlink_inside_is_served_outside_is_refused(api):
    assert (await api.get("/files/inside-link.txt")).body == b"hello from the shared directory\n"
    for path in ("/files/escape.txt", "/files/escape-dir/", "/files/escape-dir/outside.txt"):
        response = await api.get(path)
        assert response.code in (403, 404), path
        assert b"SECRET OUTSIDE" not in response.body


@pytest.mark.parametrize("target", [
    b"/files/../outside.txt",
    b"/files/docs/../../outside.txt",
    b"/files/%2e%2e/outside.txt",
    b"/files/..%2foutside.txt",
    b"/files/docs%2f..%2f..%2foutside.txt",
    b"/files/%2E%2E%2Foutside.txt",
    b"/files/..%5coutside.txt",
    b"/files/.secret",
    b"/files/hello.txt%00.png",
])
async def test_no_way_out(http_port, target):
    raw = await get_raw(http_port, target)
    assert status_of(raw) in (400, 403, 404), raw[:200]
    assert b"SECRET OUTSIDE" not in raw and b"hidden" not in raw


async def test_missing_file_is_a_styled_404(api):
    response = await api.get("/files/nope.txt")
    assert response.code == 404
    assert '<p class="status">404</p>' in response.body.decode()
