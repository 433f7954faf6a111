"""The JSON REST API: greetings, echo, slow I/O, CPU work off the loop, outbound fan-out."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from typing import Any

from tornado.web import url

from server.services.greeting import NAME_PATTERN
from server.services.outbound import FetchKind, FetchResult

from .base import ApiHandler, PublicError
from .openapi import ANY_JSON, Param, Response, documented, excluded_from_docs, from_settings
from .schemas import ComputeIn, ComputeOut, FetchIn, FetchOut, FetchResultOut, HelloIn, HelloOut, SlowOut


class HelloNameApiHandler(ApiHandler):
    """GET /api/hello/<name>: the greeting for the name in the path (POST only at /api/hello).

    It has no post(): Tornado's own 405, a name in the path takes no body.
    """

    @documented("Greet someone (Anonymous without a name)",
                path={"name": Param({"type": "string", "pattern": NAME_PATTERN,
                                     **from_settings(maxLength="max_name_length")},
                                    "who to greet, percent-encoded; empty or blank greets "
                                    "Anonymous, as POST does", example="ada")},
                responses={200: HelloOut,
                           422: "the name in the path is longer than --max-name-length characters "
                                "or holds control characters"})
    async def get(self, name: str | None = None) -> None:
        self.write_model(HelloOut(message=self._greet(name)))

    def _greet(self, name: str | None) -> str:
        return self.services.greeting.greet(name)


class HelloApiHandler(HelloNameApiHandler):
    """GET /api/hello (the greeting for Anonymous) and POST /api/hello {"name": ...}."""

    @documented("Greet the name in the body",
                request=HelloIn, request_example={"name": "Grace"},
                responses={200: HelloOut,
                           422: "the name is longer than --max-name-length characters or holds "
                                "control characters"})
    async def post(self) -> None:
        body = self.parse_model(HelloIn)
        self.write_model(HelloOut(message=self._greet(body.name)))


class EchoHandler(ApiHandler):
    """POST /api/echo: answer with the JSON document that was sent (size-limited)."""

    @documented("Answer with the JSON document that was sent",
                description="Any JSON document up to --max-body-size: objects, arrays and scalars.",
                request=ANY_JSON, request_example=[1, {"two": 2}],
                responses={200: Response("the JSON document that was sent", body=ANY_JSON)})
    async def post(self) -> None:
        document = self.json_body()
        try:
            self.write_json(document)
        except UnicodeEncodeError:
            # a lone surrogate (\ud800) is valid JSON text but has no UTF-8 encoding: send the
            # same document back with every non-ASCII character \u-escaped instead of a 500
            self.finish(json.dumps(document, separators=(",", ":")).encode())


class SlowHandler(ApiHandler):
    """GET /api/slow?ms=N: wait N ms without blocking the event loop."""

    @documented("Wait without blocking the event loop",
                query={"ms": Param({"type": "integer", "minimum": 0, **from_settings(maximum="slow_max_ms")},
                                   "milliseconds to wait, at most --slow-max-ms", True, 50)},
                responses={200: SlowOut,
                           422: "ms is missing, given more than once, not a whole number or above "
                                "--slow-max-ms"})
    async def get(self) -> None:
        requested = self.query_number("ms")
        limit = self.config.slow_max_ms
        if requested is None:
            raise PublicError(422, "ms: required", field="ms")
        if isinstance(requested, str) or requested > limit:
            raise PublicError(422, f"ms: must be a whole number from 0 to {limit}", field="ms")
        started = time.perf_counter()
        await asyncio.sleep(requested / 1000)
        waited = (time.perf_counter() - started) * 1000
        self.write_model(SlowOut(requested_ms=requested, waited_ms=round(waited, 3)))


class ComputeHandler(ApiHandler):
    """POST /api/compute {"n": ...}: count primes ≤ n in the worker pool."""

    @documented("Count the primes up to n in the worker process pool",
                request=ComputeIn, request_example={"n": 100000},
                responses={200: ComputeOut,
                           422: "n is negative or above --compute-max-n",
                           503: Response("--compute-max-pending jobs are already running or queued",
                                         headers=("Retry-After",))})
    async def post(self) -> None:
        body = self.parse_model(ComputeIn)
        result = await self.services.compute.count_primes(body.n)
        self.write_model(ComputeOut(n=result.n, primes=result.primes,
                                    elapsed_ms=round(result.elapsed_ms, 3),
                                    cpu_ms=round(result.cpu_ms, 3)))


# the answer when every URL failed upstream: 504 when one of them timed out, else 502; the
# other kinds (a response, our own refusals, bad URLs, too large) make it a 200 with results
UPSTREAM_FAILURE_STATUS = {
    FetchKind.TIMEOUT: 504,
    FetchKind.CONNECTION_REFUSED: 502, FetchKind.CONNECTION_RESET: 502,
    FetchKind.CONNECTION_CLOSED: 502, FetchKind.UNRESOLVABLE: 502, FetchKind.TLS_ERROR: 502,
    FetchKind.NETWORK_ERROR: 502, FetchKind.INVALID_RESPONSE: 502,
}


def _reported(result: FetchResult) -> dict[str, Any]:
    """A result's fields as the API reports them (its kind is the server's, not the client's)."""
    fields = dataclasses.asdict(result)
    del fields["kind"]
    return fields


class FetchHandler(ApiHandler):
    """POST /api/fetch {"urls": [...], "method": "GET"|"HEAD"}: fetch all concurrently."""

    @documented("Fetch URLs concurrently",
                description="Every per-URL failure (timeout, refused, non-public address, too "
                            "large, ...) is reported in that URL's result and the request answers "
                            "200 — unless every URL failed upstream (no answer, reset, refused, "
                            "unresolvable): then it is a gateway error, 504 when one of them timed "
                            "out, else 502, with each URL's failure in the message.",
                request=FetchIn,
                request_example={"urls": ["https://example.org/", "https://example.com/"],
                                 "method": "GET"},
                responses={200: FetchOut,
                           422: "no URLs, more than --outbound-max-urls, or a method other than "
                                "GET or HEAD",
                           502: "every URL failed upstream (reset, refused, unresolvable, an "
                                "invalid response, ...)",
                           504: "every URL failed upstream and at least one timed out"})
    async def post(self) -> None:
        body = self.parse_model(FetchIn)
        started = time.perf_counter()
        results = await self.services.outbound.fetch_all(body.urls, body.method)
        failed = [UPSTREAM_FAILURE_STATUS[r.kind] for r in results if r.kind in UPSTREAM_FAILURE_STATUS]
        if results and len(failed) == len(results):
            raise PublicError(max(failed), "upstream failed: " + "; ".join(
                f"{r.url}: {r.error}" for r in results))
        self.write_model(FetchOut(
            results=[FetchResultOut(**_reported(r)) for r in results],
            elapsed_ms=round((time.perf_counter() - started) * 1000, 3)))


@excluded_from_docs("the catch-all for unknown /api/ paths; its 404 is the documented error shape")
class ApiNotFoundHandler(ApiHandler):
    """Any other /api/ path: a JSON 404 for every method."""

    SUPPORTED_METHODS = ApiHandler.SUPPORTED_METHODS

    def prepare(self) -> None:
        raise PublicError(404, f"no API route {self.request.path}")


default_handlers = [
    url(r"/api/hello", HelloApiHandler, name="api-hello"),
    url(r"/api/hello/([^/]*)", HelloNameApiHandler, name="api-hello-name"),
    url(r"/api/echo", EchoHandler, name="api-echo"),
    url(r"/api/slow", SlowHandler, name="api-slow"),
    url(r"/api/compute", ComputeHandler, name="api-compute"),
    url(r"/api/fetch", FetchHandler, name="api-fetch"),
]

# mounted last by make_app, after every other /api/ route
not_found_handlers = [url(r"/api(?:/.*)?", ApiNotFoundHandler, name="api-not-found")]
