"""Schemathesis hooks for the command-line run in tests/test_schemathesis.py.

Loaded by `st run` through SCHEMATHESIS_HOOKS=schemathesis_hooks (tests/ on PYTHONPATH); never
imported by the test process, whose own schemathesis run would otherwise get the hook too.

Every phase (examples, coverage, fuzzing, stateful) sends /api/fetch bodies, and the document's
own example names https://example.org/. No request may leave this machine, so just before each
call every URL the server would fetch is pointed at a loopback port where nothing listens
(SCHEMATHESIS_LOOPBACK_PORT): the server's fetch is refused at once. Other strings are kept as
generated: the server refuses them without any lookup.
"""
import os

import schemathesis

from helpers import keep_fetches_local


@schemathesis.hook
def before_call(context, case, kwargs):
    """Rewrite the outbound URLs of a /api/fetch body, whichever phase built the case."""
    if case.operation.path == "/api/fetch":
        port = os.environ["SCHEMATHESIS_LOOPBACK_PORT"]
        keep_fetches_local(case.body, f"http://127.0.0.1:{port}/fuzz")
