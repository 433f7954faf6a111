"""HTTPHeaders built straight from {name: [values]} dicts, on the per-request paths.

Tornado 6.6's HTTPHeaders keeps {name: [values]} in ``_as_list`` plus a lazily filled
``_combined_cache``. The fast engine's parser (llhttp has validated and the engine normalised
every header) and BaseHandler.clear() (constant defaults, checked once) build that dict
directly instead of paying a normalisation and a regex check per header. With any other layout
of HTTPHeaders, ``make_headers`` falls back to the public ``add()``.
"""
from __future__ import annotations

from tornado import httputil


def _headers_layout_known() -> bool:
    probe = httputil.HTTPHeaders()
    probe.add("A", "1")
    return set(vars(probe)) == {"_as_list", "_combined_cache"} and probe._as_list == {"A": ["1"]}


FAST_HEADERS = _headers_layout_known()
_new_headers = httputil.HTTPHeaders.__new__


def make_headers(as_list: dict[str, list[str]]) -> httputil.HTTPHeaders:
    """An HTTPHeaders holding these (already validated, normalised) header lines; takes the dict."""
    if FAST_HEADERS:
        headers = _new_headers(httputil.HTTPHeaders)
        headers._as_list = as_list
        headers._combined_cache = {}
        return headers
    headers = httputil.HTTPHeaders()
    for name, values in as_list.items():
        for value in values:
            headers.add(name, value)
    return headers


def normalized(name: str) -> str:
    """A header name as HTTPHeaders stores it ("X-Request-ID" -> "X-Request-Id")."""
    probe = httputil.HTTPHeaders()
    probe[name] = ""
    return next(iter(probe))
