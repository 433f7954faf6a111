"""The fast HTTP/1.1 engine: asyncio protocols and llhttp (httptools) under a Tornado Application."""
from .server import FastHTTPServer

__all__ = ["FastHTTPServer"]
