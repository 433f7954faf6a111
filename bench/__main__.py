"""``python -m bench`` / ``tornado-hps-bench``: parse, run, report, exit with a CI-ready status."""

from __future__ import annotations

import importlib.util
import platform
import socket
import sys
from datetime import UTC, datetime

from . import TOOL_NAME, __version__
from .cli import UsageError, parse_args
from .report import text_report, write_html, write_json, write_png
from .runner import ensure_fd_limit, loop_name, run
from .stats import Aggregator

EXIT_OK, EXIT_ERROR_RATE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _usage(message: str) -> int:
    """One clear line on stderr, exit status 2."""
    print(f"{TOOL_NAME}: error: {message} (see --help)", file=sys.stderr)
    return EXIT_USAGE


def main(argv: list[str] | None = None) -> int:
    """Run one benchmark from command-line arguments and return the process exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        cfg = parse_args(argv, stderr_isatty=sys.stderr.isatty())
    except UsageError as exc:
        return _usage(str(exc))
    except SystemExit as exc:  # --help / --version printed their text
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    try:
        socket.getaddrinfo(cfg.host, cfg.port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        return _usage(f"cannot resolve host {cfg.host!r}: {exc}")
    # --png must be able to work before a long run starts, not fail after it
    if cfg.png_path and importlib.util.find_spec("matplotlib") is None:
        return _usage("--png needs matplotlib (pip install 'matplotlib>=3.7,<4')")

    warnings = []
    fd_warning = ensure_fd_limit(cfg.connections, cfg.workers)
    if fd_warning:
        print(f"{TOOL_NAME}: warning: {fd_warning}", file=sys.stderr)
        warnings.append(fd_warning)

    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    agg = Aggregator(cfg.workers, sys.stderr if cfg.progress else None)
    try:
        interrupted = run(cfg, agg)
    except KeyboardInterrupt:  # Ctrl-C outside the loop's own handler (e.g. during worker start-up)
        interrupted = True
    except RuntimeError as exc:
        print(f"{TOOL_NAME}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR_RATE
    meta = {
        "tool": {
            "name": TOOL_NAME,
            "version": __version__,
            "python": platform.python_version(),
            "event_loop": loop_name(),
            "parser": "httptools",
        },
        "started_at": started_at,
        "interrupted": bool(interrupted),
    }
    rep = agg.finish(cfg.to_dict(), meta, warnings)
    if interrupted:
        code = EXIT_INTERRUPTED
    elif cfg.max_error_rate is not None and rep["error_rate"] > cfg.max_error_rate:
        code = EXIT_ERROR_RATE
    else:
        code = EXIT_OK
    rep["exit_code"] = code

    if not cfg.quiet:
        sys.stdout.write(text_report(rep))
        sys.stdout.flush()
    try:
        if cfg.json_path:
            write_json(rep, cfg.json_path)
        if cfg.report_path:
            write_html(rep, cfg.report_path)
        if cfg.png_path:
            write_png(rep, cfg.png_path)
    except OSError as exc:
        print(f"{TOOL_NAME}: error: cannot write output: {exc}", file=sys.stderr)
        return EXIT_ERROR_RATE if code == EXIT_OK else code
    return code


if __name__ == "__main__":
    sys.exit(main())
