"""The fast HTTP/1.1 engine: asyncio protocols and llhttp (httptools) feeding a tornado.web.Application."""
from .server import FastHTTPServer

__all__ = ["FastHTTPServer"]
