"""A tiny misbehaving HTTP/1.1 server for testing the load generator (python -m bench.stubserver).

Normal answers: ``/`` (Content-Length body), ``/chunked`` (chunked body), ``/status/NNN``;
``GET /__stats`` reports what the server saw. Options make it stall, pause its whole process,
close or reset connections after N requests, or answer garbage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import struct
import sys
import time

import httptools

BODY = b"hello from the stub\n"


class StubState:
    """What the server has seen (served at /__stats) and how it should misbehave."""

    def __init__(self, args):
        self.args = args
        self.requests = 0
        self.connections = 0
        self.methods: dict[str, int] = {}
        self.body_bytes = 0
        self.pause_armed = args.pause_at is not None


class StubProtocol(asyncio.Protocol):
    """One connection: parse requests with httptools, answer per the configured behaviour."""

    def __init__(self, state: StubState):
        self.state = state
        self.transport = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.count = 0
        self.body = 0

    def connection_made(self, transport):
        """Count the connection."""
        self.transport = transport
        self.state.connections += 1

    def data_received(self, data):
        """Feed the request parser; answer garbage to unparsable input by closing."""
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_url(self, url):
        """Collect the request target."""
        self.url += url

    def on_body(self, body):
        """Count request body bytes (checked by the body tests)."""
        self.body += len(body)

    def on_message_complete(self):
        """A whole request arrived: misbehave or answer."""
        st, args = self.state, self.state.args
        url, self.url = self.url.decode("latin-1"), b""
        method = self.parser.get_method().decode()
        keep_alive = self.parser.should_keep_alive()
        if url == "/__stats":
            payload = json.dumps(
                {
                    "requests": st.requests,
                    "connections": st.connections,
                    "methods": st.methods,
                    "body_bytes": st.body_bytes,
                }
            ).encode()
            self._send(200, payload, method, keep_alive)
            return
        self.count += 1
        limit = args.close_after if args.close_after is not None else args.reset_after
        if limit is not None and self.count > limit:
            if args.reset_after is not None:
                sock = self.transport.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.transport.close()  # without answering: the client's request is in flight
            return
        st.requests += 1
        st.methods[method] = st.methods.get(method, 0) + 1
        st.body_bytes += self.body
        self.body = 0
        if st.pause_armed:
            st.pause_armed = False
            # block the whole process, like a stop-the-world pause: nothing is read or answered
            asyncio.get_running_loop().call_later(args.pause_at, time.sleep, args.pause_for)
        if args.stall:
            return
        if args.garbage:
            self.transport.write(b"this is not HTTP\r\n\r\n")
            return
        if args.connection_close:
            keep_alive = False
        if url.startswith("/status/") and url[8:].isdigit():
            self._send(int(url[8:]), b"", method, keep_alive)
        elif url.startswith("/chunked"):
            self._send_chunked(method, keep_alive)
        else:
            self._send(200, BODY, method, keep_alive)

    def _headers(self, status: int, extra: str, keep_alive: bool) -> bytes:
        """Status line and headers."""
        conn = "" if keep_alive else "Connection: close\r\n"
        return f"HTTP/1.1 {status} X\r\nServer: stub\r\n{extra}{conn}\r\n".encode()

    def _send(self, status: int, body: bytes, method: str, keep_alive: bool):
        """Content-Length response (headers only for HEAD, as HTTP requires)."""
        head = self._headers(status, f"Content-Length: {len(body)}\r\n", keep_alive)
        self._write(head + (b"" if method == "HEAD" else body), keep_alive)

    def _send_chunked(self, method: str, keep_alive: bool):
        """Chunked response in three chunks."""
        head = self._headers(200, "Transfer-Encoding: chunked\r\n", keep_alive)
        body = b"" if method == "HEAD" else b"5\r\nhello\r\n7\r\n chunky\r\n1\r\n\n\r\n0\r\n\r\n"
        self._write(head + body, keep_alive)

    def _write(self, data: bytes, keep_alive: bool):
        """Send now or after --delay; close after a Connection: close answer."""
        delay = self.state.args.delay
        if delay:
            asyncio.get_running_loop().call_later(delay, self._write_now, data, keep_alive)
        else:
            self._write_now(data, keep_alive)

    def _write_now(self, data: bytes, keep_alive: bool):
        """Write and maybe close."""
        if self.transport.is_closing():
            return
        self.transport.write(data)
        if not keep_alive:
            self.transport.close()


def build_parser() -> argparse.ArgumentParser:
    """Options of the stub server."""
    p = argparse.ArgumentParser(
        prog="python -m bench.stubserver", description=__doc__.splitlines()[0]
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--stall", action="store_true", help="accept and read, never answer")
    p.add_argument(
        "--pause-at", type=float, help="seconds after the first request: block the process"
    )
    p.add_argument("--pause-for", type=float, default=1.0, help="how long the process blocks")
    p.add_argument(
        "--close-after", type=int, help="close (FIN) a connection instead of answering request N+1"
    )
    p.add_argument(
        "--reset-after", type=int, help="reset (RST) a connection instead of answering request N+1"
    )
    p.add_argument("--garbage", action="store_true", help="answer bytes that are not HTTP")
    p.add_argument("--connection-close", action="store_true", help="answer with Connection: close")
    p.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    return p


async def serve(args) -> None:
    """Listen, print the ready line, serve until killed."""
    state = StubState(args)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: StubProtocol(state), args.host, args.port, backlog=4096
    )
    port = server.sockets[0].getsockname()[1]
    print(f"Serving on http://{args.host}:{port}/", flush=True)
    async with server:
        await server.serve_forever()


def main(argv=None) -> int:
    """Run the stub server (Ctrl-C / SIGTERM ends it)."""
    args = build_parser().parse_args(argv)
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
