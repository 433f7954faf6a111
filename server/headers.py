"""HTTPHeaders built straight from {name: [values]} dicts, on the per-request paths.

Tornado 6.6's HTTPHeaders keeps {name: [values]} in ``_as_list`` plus a lazily filled
``_combined_cache``. The fast engine's parser (llhttp has validated and the engine normalised
every header) and BaseHandler.clear() (constant defaults, checked once) build that dict
directly instead of paying a normalisation and a regex check per header. With any other layout
of HTTPHeaders, ``make_headers`` falls back to the public ``add()``.
"""
from __future__ import annotations

from typing import Any

from tornado import httputil


def normalized(name: str) -> str:
    """A header name as HTTPHeaders stores it ("X-Request-ID" -> "X-Request-Id")."""
    probe = httputil.HTTPHeaders()
    probe[name] = ""
    return next(iter(probe))


# Tornado's lru-cached normalisation (private: the public probe above when it is gone)
_normalize = getattr(httputil, "_normalize_header", normalized)


def _headers_layout_known() -> bool:
    probe = httputil.HTTPHeaders()
    probe.add("A", "1")
    return (set(vars(probe)) == {"_as_list", "_combined_cache"} and probe._as_list == {"A": ["1"]}
            and _normalize("x-rEQUEST-id") == "X-Request-Id")


FAST_HEADERS = _headers_layout_known()
_MISSING = object()


class Headers(httputil.HTTPHeaders):
    """HTTPHeaders whose get() answers for an absent name without an exception.

    ``HTTPHeaders.get`` is ``Mapping.get``: ``self[name]`` raising KeyError, caught. Tornado asks
    for absent headers on every request (Content-Type of a GET in ``_parse_body``,
    If-None-Match in ``check_etag_header``) and the application does too (X-Request-ID); each
    miss raised and caught an exception. Same answers, same caching of combined values.
    """

    def get(self, name: str, default: Any = None) -> Any:
        header = _normalize(name)
        combined = self._combined_cache
        value = combined.get(header, _MISSING)
        if value is _MISSING:
            values = self._as_list.get(header)
            if values is None:
                return default
            value = combined[header] = ",".join(values)
        return value


_new_headers = Headers.__new__


def make_headers(as_list: dict[str, list[str]]) -> httputil.HTTPHeaders:
    """An HTTPHeaders holding these (already validated, normalised) header lines; takes the dict."""
    if FAST_HEADERS:
        headers = _new_headers(Headers)
        headers._as_list = as_list
        headers._combined_cache = {}
        return headers
    headers = httputil.HTTPHeaders()
    for name, values in as_list.items():
        for value in values:
            headers.add(name, value)
    return headers
