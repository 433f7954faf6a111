"""Tornado's own test suite with this project's engine as Tornado's HTTPServer.

``python tests/tornado_suite.py --loop asyncio|uvloop --json FILE`` runs the installed Tornado's
``tornado.test.runtests`` with ``--httpserver=server.engine.FastHTTPServer`` (the runner's public
hook: ``HTTPServer`` is a ``Configurable``) over the modules below and writes every test's outcome
to FILE. ``--table FILE`` writes the Markdown table of docs/tornado-suite.md from one or more JSON
results. tests/test_tornado_suite.py runs it in ``make test`` and fails when a test fails that is
not in EXPECTED_FAILURES, or one in it passes.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

ENGINE = "server.engine.FastHTTPServer"
MODULES = [
    "tornado.test.httpserver_test",
    "tornado.test.web_test",
    "tornado.test.websocket_test",
    "tornado.test.simple_httpclient_test",
    "tornado.test.httpclient_test",
    "tornado.test.routing_test",
    "tornado.test.gen_test",
    "tornado.test.security_corpus_test",
    "tornado.test.testing_test",
    # not one of the nine of issue 14's count: no reference cycle per connection (CPython only)
    "tornado.test.circlerefs_test",
]

_BARE_LF = ("the request is written with bare LF line ends; the engine's parser (llhttp, as in "
            "Node.js) requires CRLF (RFC 9112 2.2 lets a recipient accept a bare LF, it need not) "
            "and answers 400, so the test's own point is never reached")
_413 = ("413 Payload Too Large instead of 400 for a Content-Length over the limit (RFC 9110 "
        "15.5.14), answered from the head before the body is read, with a page saying the limit "
        "(Tornado: a bare 400); the log line is Tornado's ('Content-Length too long')")
_PAGE = ("an error page (status line, Content-Type, Content-Length, Date, Connection: close and "
         "a body naming the problem) instead of Tornado's bare 'HTTP/1.1 400 Bad Request' status "
         "line; the status is the same")

# test id -> the deliberate difference it shows, and why the engine's answer is right
EXPECTED_FAILURES = {
    "tornado.test.httpserver_test.BodyLimitsTest.test_large_body_buffered": _413,
    "tornado.test.httpserver_test.BodyLimitsTest.test_large_body_streaming": _413,
    "tornado.test.httpserver_test.BodyLimitsTest.test_body_size_override_reset":
        _413 + " (the override itself, the first request, is served)",
    "tornado.test.httpserver_test.BodyLimitsTest.test_timeout":
        "408 Request Timeout (RFC 9110 15.5.9) for a body slower than body_timeout, instead of "
        "closing without a word; the log line is Tornado's ('Timeout reading body')",
    "tornado.test.httpserver_test.HTTPConnectionTest.test_newlines":
        "bare-LF line ends are refused with 400: " + _BARE_LF,
    "tornado.test.httpserver_test.HTTPServerRawTest.test_chunked_request_body_duplicate_header":
        _BARE_LF + " (the duplicate Transfer-Encoding is refused too, over CRLF: "
        "tests/test_engine.py)",
    "tornado.test.httpserver_test.HTTPServerRawTest.test_chunked_request_body_unsupported_transfer_encoding":
        _BARE_LF + " (Transfer-Encoding: gzip, chunked is refused too, over CRLF: "
        "tests/test_engine.py)",
    "tornado.test.httpserver_test.HTTPServerRawTest.test_chunked_request_body_transfer_encoding_and_content_length":
        _BARE_LF + " (Transfer-Encoding with Content-Length is refused too, over CRLF, with "
        "Tornado's words: tests/test_engine.py)",
    "tornado.test.httpserver_test.KeepAliveTest.test_keepalive_chunked":
        "an HTTP/1.0 request with Transfer-Encoding is refused with 400: RFC 9112 6.1 calls it "
        "faulty framing that a server must treat as such (close after responding); Tornado reads "
        "it chunked and keeps the connection, so a request hidden behind it would be served",
    "tornado.test.httpserver_test.UnixSocketTestFile.test_unix_socket_bad_request": _PAGE,
    "tornado.test.httpserver_test.UnixSocketTestAbstract.test_unix_socket_bad_request": _PAGE,
    "tornado.test.simple_httpclient_test.ChunkedWithContentLengthTest.test_chunked_with_content_length":
        "the handler sets Transfer-Encoding on a response that also gets a Content-Length; RFC "
        "9112 6.2 says a sender MUST NOT send both, so the engine refuses to send it "
        "(HTTPOutputError, logged as an uncaught exception, the connection closed) instead of "
        "sending it for the client to detect; the client sees the same closed stream",
}


def run(loop: str, out: Path) -> int:
    """Run Tornado's runner over MODULES on the engine; write {test id: outcome} to out."""
    if loop == "uvloop":
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    import tornado.test.runtests as runtests
    from tornado.test.util import ABT_SKIP_MESSAGE

    outcomes: dict[str, str] = {}
    original = runtests.test_runner_factory

    def recording_factory(stderr):  # the runner's own, with every outcome recorded
        base = original(stderr)

        class Runner(base):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                parent = self.resultclass

                class Result(parent):
                    def addSuccess(self, test):
                        outcomes.setdefault(test.id(), "pass")
                        super().addSuccess(test)

                    def addFailure(self, test, err):
                        outcomes[test.id()] = "fail"
                        super().addFailure(test, err)

                    def addError(self, test, err):
                        outcomes[test.id()] = "error"
                        super().addError(test, err)

                    def addSkip(self, test, reason):
                        if reason != ABT_SKIP_MESSAGE:
                            outcomes[test.id()] = "skip"
                        super().addSkip(test, reason)

                    def addSubTest(self, test, subtest, err):
                        if err is not None:
                            failed = issubclass(err[0], test.failureException)
                            outcomes[test.id()] = "fail" if failed else "error"
                        super().addSubTest(test, subtest, err)

                self.resultclass = Result
        return Runner

    runtests.test_runner_factory = recording_factory
    sys.argv = ["tornado.test.runtests", f"--httpserver={ENGINE}", *MODULES]
    try:
        runtests.main()
    except SystemExit:
        pass  # non-zero with the expected failures: judged below
    out.write_text(json.dumps(outcomes, indent=1, sort_keys=True) + "\n")
    failing = {test for test, outcome in outcomes.items() if outcome in ("fail", "error")}
    unexpected = sorted(failing ^ set(EXPECTED_FAILURES))
    print(f"{loop}: {len(outcomes)} tests, {len(failing)} failing, all of them expected"
          if not unexpected else f"{loop}: differs from EXPECTED_FAILURES: {unexpected}",
          file=sys.__stderr__)
    return 1 if unexpected or not outcomes else 0


def table(results: dict[str, dict[str, str]]) -> str:
    """docs/tornado-suite.md: counts per loop, the expected failures, every test's outcome."""
    import tornado
    loops = list(results)
    tests = sorted(set().union(*results.values()))
    lines = [
        "# Tornado's own test suite on the fast engine",
        "",
        f"Tornado {tornado.version}'s `tornado.test.runtests --httpserver={ENGINE}` over "
        f"{len(MODULES)} modules ({', '.join(m.rsplit('.', 1)[1] for m in MODULES)}), written by "
        "`make tornado-suite` (`tests/tornado_suite.py`); `make test` runs the same and fails on "
        "any difference from the expected failures below.",
        "",
        "| loop | tests | pass | fail/error | skip |",
        "|---|---:|---:|---:|---:|",
    ]
    for loop in loops:
        got = results[loop]
        count = {kind: sum(1 for o in got.values() if o == kind) for kind in ("pass", "skip")}
        failed = sum(1 for o in got.values() if o in ("fail", "error"))
        lines.append(f"| {loop} | {len(got)} | {count['pass']} | {failed} | {count['skip']} |")
    lines += ["", "## Expected failures: the deliberate differences", "",
              "| test | why the engine answers differently |", "|---|---|"]
    for test, why in sorted(EXPECTED_FAILURES.items()):
        lines.append(f"| `{test.removeprefix('tornado.test.')}` | {why} |")
    lines += ["", "## Every test", "", "| test | " + " | ".join(loops) + " |",
              "|---|" + "---|" * len(loops)]
    for test in tests:
        row = [results[loop].get(test, "-") for loop in loops]
        lines.append(f"| `{test.removeprefix('tornado.test.')}` | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Command line: run one loop (--loop, --json) or write the table (--table from --results)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--json", type=Path, help="write {test id: outcome} here")
    parser.add_argument("--table", type=Path, help="write the Markdown table here")
    parser.add_argument("--results", nargs="*", type=Path, default=[],
                        help="LOOP=FILE results for --table")
    args = parser.parse_args(argv)
    if args.table:
        results = {}
        for item in args.results:
            loop, _, path = str(item).partition("=")
            results[loop] = json.loads(Path(path).read_text())
        args.table.write_text(table(results))
        return 0
    if not args.json:
        parser.error("--json FILE is needed to run the suite")
    return run(args.loop, args.json)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
