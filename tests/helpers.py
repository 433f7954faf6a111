"""Helpers the tests share (one module: tests import from here, never from each other)."""
import asyncio
import json
import shutil
import subprocess
import urllib.parse

class Response:
    """One parsed response: status, reason, headers (lower-case names) and the decoded body."""

    def __init__(self, status, reason, headers, body, raw_body=b""):
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.raw_body = raw_body

    def header(self, name):
        """The value of a header (None when absent)."""
        values = self.headers.get(name.lower())
        return values[0] if values else None

    def json(self):
        """The body as JSON."""
        return json.loads(self.body)

    def __repr__(self):
        return f"<Response {self.status} {self.headers} {self.body[:200]!r}>"


class RawClient:
    """One client connection: send bytes as they are, read responses one at a time."""

    def __init__(self, reader, writer):
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port):
        """Open a connection to the server."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    def send(self, data):
        """Write bytes exactly as given."""
        self.writer.write(data)

    async def response(self, method="GET", timeout=5.0):
        """The next response (1xx ones included), parsed by its framing."""
        return await asyncio.wait_for(self._response(method), timeout)

    async def _response(self, method):
        status_line = await self.reader.readline()
        if not status_line:
            raise EOFError("connection closed before a response")
        version, status, reason = status_line.decode("latin-1").rstrip("\r\n").split(" ", 2)
        assert version == "HTTP/1.1", status_line
        headers = {}
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, value = line.decode("latin-1").split(":", 1)
            headers.setdefault(name.strip().lower(), []).append(value.strip())
        status = int(status)
        raw = []
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            body = b""
        elif headers.get("transfer-encoding") == ["chunked"]:
            parts = []
            while True:
                size_line = await self.reader.readline()
                raw.append(size_line)
                size = int(size_line.split(b";")[0], 16)
                data = await self.reader.readexactly(size + 2)
                raw.append(data)
                assert data.endswith(b"\r\n")
                if size == 0:
                    break
                parts.append(data[:-2])
            body = b"".join(parts)
        elif "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"][0]))
        else:
            body = await self.reader.read()
        return Response(status, reason, headers, body, b"".join(raw))

    async def closed(self, timeout=5.0):
        """True when the server closes the connection within timeout (anything still sent is read)."""
        try:
            while True:
                data = await asyncio.wait_for(self.reader.read(65536), timeout)
                if not data:
                    return True
        except asyncio.TimeoutError:
            return False
        except ConnectionResetError:
            return True

    async def rest(self, timeout=5.0):
        """Everything the server sends until it closes."""
        chunks = []
        try:
            while True:
                data = await asyncio.wait_for(self.reader.read(65536), timeout)
                if not data:
                    break
                chunks.append(data)
        except (asyncio.TimeoutError, ConnectionResetError):
            pass
        return b"".join(chunks)

    def close(self):
        """Close the client side."""
        self.writer.close()


def get(path, *extra, version="1.1", method="GET"):
    """A request head as bytes."""
    lines = [f"{method} {path} HTTP/{version}", "Host: test", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def wait_for_no_connections(http_server, timeout=5.0):
    """Wait until the server holds no connection (none leaked); the final count."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while http_server.http.connection_count and loop.time() < deadline:
        await asyncio.sleep(0.02)
    return http_server.http.connection_count


def make_certificate(directory, name="server"):
    """A self-signed certificate for localhost, 127.0.0.1 and ::1 and its key (openssl CLI)."""
    assert shutil.which("openssl") is not None, "openssl is needed (apt-get install openssl)"
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert),
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def fetchable(value):
    """Whether /api/fetch would open a connection for this URL: decided as the server decides it,
    by urllib.parse.urlsplit's scheme (which lower-cases it, drops leading control characters and
    any tab or newline), so fuzzers can point every such URL at loopback."""
    if not isinstance(value, str):
        return False
    try:
        return urllib.parse.urlsplit(value).scheme in ("http", "https")
    except ValueError:
        return False


def keep_fetches_local(body, local_url):
    """Point every fetchable URL of a /api/fetch body at local_url, in place."""
    if not isinstance(body, dict):
        return
    urls = body.get("urls")
    if isinstance(urls, list):
        body["urls"] = [local_url if fetchable(url) else url for url in urls]
    elif fetchable(urls):
        body["urls"] = local_url
