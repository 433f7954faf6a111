"""What the server needs from library internals, in one place, each use explained and tested.

Public APIs are used everywhere else; what is here has no public equivalent in the versions
setup.cfg allows, and each function says which versions need it.
"""
from __future__ import annotations

from typing import Any


def release_transport(transport: Any) -> None:
    """Break the reference cycle a closed asyncio selector transport keeps (CPython < 3.12).

    ``_SelectorSocketTransport`` keeps its own bound ``_read_ready__data_received`` method as
    ``_read_ready_cb``, a cycle that only the garbage collector frees: one per closed connection
    (Tornado's circlerefs_test flags it). CPython 3.12 drops it in close() (gh-100348); this does
    the same once the transport has reported connection_lost. uvloop's transports have no cycle.
    """
    if getattr(transport, "_read_ready_cb", None) is not None:
        transport._read_ready_cb = None


def http1_max_body_size(connection: Any) -> int:
    """The body limit of a request on Tornado's HTTP1Connection (its set_max_body_size included).

    Tornado keeps it in ``_max_body_size`` and offers no getter; the tornado engine needs it to
    answer 413 from the head only when a handler's prepare() did not raise the limit.
    """
    return connection._max_body_size
