"""One Settings object for the whole server: command line > environment (SERVER_*) > defaults."""
from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_PREFIX = "SERVER_"


class ConfigError(ValueError):
    """A setting has a value the server cannot run with."""


# --- value parsers: each takes the text a user typed and returns the value or raises ValueError ---

_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024**2, "mb": 1024**2,
               "mib": 1024**2, "g": 1024**3, "gb": 1024**3, "gib": 1024**3}


def parse_size(text: str) -> int:
    """Parse a byte size such as 65536, 64K, 1MiB or 2g (binary units) into bytes."""
    match = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", str(text))
    if not match or match.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"not a size: {text!r} (use bytes or a K/M/G suffix)")
    value = int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]
    if value <= 0:
        raise ValueError(f"must be greater than 0, got {text!r}")
    return value


def parse_port(text: str) -> int:
    """Parse a TCP port number, 0 meaning 'any free port'."""
    try:
        port = int(text)
    except ValueError:
        raise ValueError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be between 0 and 65535, got {port}")
    return port


def parse_optional_port(text: str) -> int | None:
    """Parse a port that may be switched off with 'off' or an empty value."""
    if str(text).strip().lower() in ("", "off", "none", "no"):
        return None
    return parse_port(text)


def parse_seconds(text: str) -> float:
    """Parse a non-negative duration in seconds (fractions allowed)."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"not a number of seconds: {text!r}") from None
    if value < 0 or value != value or value == float("inf"):
        raise ValueError(f"must be a finite number ≥ 0, got {text!r}")
    return value


def parse_positive_seconds(text: str) -> float:
    """Parse a duration in seconds that must be greater than zero."""
    value = parse_seconds(text)
    if value == 0:
        raise ValueError("must be greater than 0")
    return value


def parse_connection_cap(text: str) -> int | None:
    """A connection count, or 'auto' (empty) for what the open-file limit allows."""
    if str(text).strip().lower() in ("", "auto"):
        return None
    return parse_positive_int(text)


def parse_positive_int(text: str) -> int:
    """Parse a whole number ≥ 1."""
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise ValueError(f"must be at least 1, got {value}")
    return value


def parse_process_count(text: str) -> int:
    """Parse a process count; 0 means one per CPU core."""
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise ValueError(f"must be 0 (one per core) or more, got {value}")
    return value or max(1, os.cpu_count() or 1)


def parse_gc_threshold(text: str) -> tuple[int, int, int] | None:
    """Parse gc thresholds 'GEN0,GEN1,GEN2' (empty: keep Python's)."""
    if not str(text).strip():
        return None
    parts = str(text).split(",")
    if len(parts) != 3 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"must be three whole numbers GEN0,GEN1,GEN2; got {text!r}")
    return (int(parts[0]), int(parts[1]), int(parts[2]))


def parse_bool(text: str) -> bool:
    """Parse a yes/no value as written in an environment variable."""
    lowered = str(text).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a yes/no value: {text!r}")


def parse_host_list(text: str) -> tuple[str, ...]:
    """Parse a comma-separated list of host names or IP addresses."""
    return tuple(part.strip().lower() for part in str(text).split(",") if part.strip())


def parse_existing_dir(text: str) -> Path | None:
    """Parse a directory that must exist; empty or 'off' switches the feature off."""
    if str(text).strip().lower() in ("", "off", "none"):
        return None
    path = Path(text).expanduser().resolve()
    if not path.is_dir():
        raise ValueError(f"no such directory: {text}")
    return path


_RATE_UNITS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60,
               "h": 3600, "hour": 3600, "d": 86400, "day": 86400}


def parse_rate(text: str) -> tuple[int, float] | None:
    """Parse a rate such as 10/min, 100/h or 5/30s into (count, window seconds); 'off' disables."""
    if str(text).strip().lower() in ("", "off", "none"):
        return None
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d*\.?\d*)\s*([a-z]+)\s*", str(text).lower())
    if not match or match.group(3) not in _RATE_UNITS:
        raise ValueError(f"not a rate: {text!r} (use e.g. 10/min, 100/h, 5/30s or off)")
    count = int(match.group(1))
    window = float(match.group(2) or 1) * _RATE_UNITS[match.group(3)]
    if count < 1 or window <= 0:
        raise ValueError(f"count and window must be positive: {text!r}")
    return count, window


def parse_path(text: str) -> Path:
    """Parse a directory path (created on start when missing)."""
    return Path(text).expanduser().resolve()


def parse_optional_path(text: str) -> Path | None:
    """A file path that may be left empty for the default."""
    if not str(text).strip():
        return None
    return Path(text).expanduser().resolve()


def parse_readable_file(text: str) -> Path | None:
    """A file that must exist and be readable now; empty or 'off' switches the feature off."""
    if str(text).strip().lower() in ("", "off", "none"):
        return None
    path = Path(text).expanduser().resolve()
    if not path.exists():
        raise ValueError(f"no such file: {text}")
    if not path.is_file():
        raise ValueError(f"not a file: {text}")
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ValueError(f"cannot read {text}: {exc.strerror or exc}") from None
    return path


def parse_optional_text(text: str) -> str | None:
    """Text that may be left empty to switch a feature off."""
    return str(text) if str(text).strip() else None


def parse_cache_url(text: str) -> str:
    """memory:// or a redis:// / rediss:// / unix:// URL."""
    if not re.match(r"^(memory|redis|rediss|unix)://", str(text)):
        raise ValueError(f"must start with memory://, redis://, rediss:// or unix://; got {text!r}")
    return str(text)


def parse_db_url(text: str) -> str | None:
    """An SQLAlchemy async URL: sqlite+aiosqlite:///file.db or postgresql+asyncpg://user@host/db."""
    if not str(text).strip():
        return None
    if not re.match(r"^(sqlite\+aiosqlite|postgresql\+asyncpg)://", str(text)):
        raise ValueError("must start with sqlite+aiosqlite:// or postgresql+asyncpg://")
    return str(text)


def parse_networks(text: str) -> tuple[str, ...]:
    """Parse a comma-separated list of IP networks (CIDR) or single addresses."""
    import ipaddress
    networks = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        try:
            networks.append(str(ipaddress.ip_network(part, strict=False)))
        except ValueError:
            raise ValueError(f"not an IP network: {part!r} (use e.g. 10.0.0.0/8,127.0.0.1)") from None
    return tuple(networks)


def choice(*options: str) -> Callable[[str], str]:
    """Build a parser that accepts one of a fixed set of words."""
    def parse(text: str) -> str:
        lowered = str(text).strip().lower()
        if lowered not in options:
            raise ValueError(f"must be one of {', '.join(options)}; got {text!r}")
        return lowered
    parse.options = options  # type: ignore[attr-defined]
    return parse


def setting(default: Any, help: str, parse: Callable[[str], Any], group: str,
            metavar: str | None = None) -> Any:
    """Declare one setting: its default, help text, parser and --help group."""
    return field(default=default, metadata={"help": help, "parse": parse, "group": group,
                                            "metavar": metavar})


@dataclass(frozen=True)
class Settings:
    """Every knob of the server, each with a default, a help text and an environment variable."""

    # HTTP listener
    address: str = setting("127.0.0.1", "address to listen on (0.0.0.0 or :: for every interface)",
                           str, "http", "ADDR")
    port: int = setting(8888, "HTTP port (0 picks a free port)", parse_port, "http", "PORT")
    backlog: int = setting(2048, "listen backlog (pending connections the kernel queues)",
                           parse_positive_int, "http", "N")
    idle_timeout: float = setting(75.0, "seconds a keep-alive connection may wait for its next "
                                  "complete request head; also bounds slow headers",
                                  parse_positive_seconds, "http", "SECONDS")
    body_timeout: float = setting(60.0, "seconds a request body may take to arrive",
                                  parse_positive_seconds, "http", "SECONDS")
    header_timeout: float = setting(20.0, "seconds a whole request head may take to arrive, from "
                                    "its first byte (from connecting, for a connection's first "
                                    "request), however it is trickled; like nginx's "
                                    "client_header_timeout", parse_positive_seconds, "http",
                                    "SECONDS")
    send_timeout: float = setting(60.0, "seconds a response may make no progress towards a client "
                                  "that does not read it before the connection is cut; like "
                                  "nginx's send_timeout", parse_positive_seconds, "http", "SECONDS")
    max_connections: int | None = setting(None, "open HTTP connections per process; beyond it a "
                                          "new connection is closed right after accept (counted "
                                          "in http_connections_refused_total) [default: auto, the "
                                          "open-file limit raised to its hard ceiling, less 256 "
                                          "for other files]", parse_connection_cap, "http", "N")
    max_header_size: int = setting(64 * 1024, "largest request head accepted (bytes, K/M suffix)",
                                   parse_size, "http", "SIZE")
    max_body_size: int = setting(1024 * 1024, "largest request body accepted; larger gets 413",
                                 parse_size, "http", "SIZE")
    max_concurrency: int = setting(10_000, "API requests in flight at once; beyond it 503 with "
                                   "Retry-After", parse_positive_int, "http", "N")
    shutdown_timeout: float = setting(30.0, "seconds in-flight requests get to finish on SIGTERM",
                                      parse_seconds, "http", "SECONDS")
    drain_idle_grace: float = setting(1.0, "on shutdown, seconds a keep-alive connection that just "
                                      "finished a response may still send one more request "
                                      "(answered with Connection: close) before it is closed",
                                      parse_seconds, "http", "SECONDS")
    drain_grace: float = setting(0.0, "seconds between /readyz turning 503 and closing the "
                                 "listener on SIGTERM (lets a load balancer notice)",
                                 parse_seconds, "http", "SECONDS")
    files: Path | None = setting(None, "serve this directory read-only at /files/ (off by default)",
                                 parse_existing_dir, "http", "DIR")
    cookie_secret: str | None = setting(None, "secret that signs cookies and XSRF tokens "
                                        "[default: the one in --cookie-secret-file]",
                                        parse_optional_text, "http", "SECRET")
    cookie_secret_file: Path | None = setting(None, "file holding the cookie secret when "
                                              "--cookie-secret is not given; created (mode 0600) "
                                              "when missing; point instances that share a "
                                              "database at one file [default: "
                                              "DATA_DIR/cookie_secret]", parse_optional_path,
                                              "http", "FILE")
    tls_cert: Path | None = setting(None, "serve HTTPS with this PEM certificate (chain); needs "
                                    "--tls-key", parse_readable_file, "http", "FILE")
    tls_key: Path | None = setting(None, "the PEM private key of --tls-cert",
                                   parse_readable_file, "http", "FILE")

    trusted_proxies: tuple[str, ...] = setting((), "proxies (CIDR list) whose X-Forwarded-For / "
                                               "X-Real-IP / X-Forwarded-Proto headers are believed",
                                               parse_networks, "http", "CIDRS")

    # your own application
    app: str | None = setting(None, "serve your own Tornado application instead of this "
                              "project's: MODULE:ATTR, ATTR a tornado.web.Application or a "
                              "callable returning one (sync, async, or an async context "
                              "manager yielding one), called once per worker process. The "
                              "HTTP listener's address, port, backlog, timeouts, size limits, "
                              "--max-connections, TLS and drain settings and every process "
                              "setting apply to it (the access log included); --max-concurrency, "
                              "--files, --cookie-secret*, --trusted-proxies and the data, "
                              "guestbook and API settings are this project's and do not (its "
                              "database, cache, /metrics and dashboard do not run); the TCP "
                              "greeting service runs only with --tcp-port",
                              parse_optional_text, "app", "MODULE:ATTR")
    app_dir: Path = setting(Path("."), "directory put first on sys.path to import --app from",
                            parse_path, "app", "DIR")

    # process
    processes: int = setting(1, "server processes, each with its own SO_REUSEPORT socket under a "
                             "supervising parent (0 = one per CPU core)", parse_process_count,
                             "process", "N")
    max_restarts: int = setting(5, "child crashes within a minute after which the supervisor "
                                "gives up and exits non-zero", parse_positive_int, "process", "N")
    gc_freeze: bool = setting(True, "after start-up, move every object that exists to the garbage "
                              "collector's permanent generation (full collections then skip them)",
                              parse_bool, "process")
    gc_threshold: tuple[int, int, int] | None = setting((5000, 10, 10), "garbage collector "
                                                        "thresholds GEN0,GEN1,GEN2 (empty: "
                                                        "Python's 700,10,10)",
                                                        parse_gc_threshold, "process", "N,N,N")
    debug: bool = setting(False, "debug mode: tracebacks on error pages, template reloading",
                          parse_bool, "process")
    log_level: str = setting("info", "log level", choice("debug", "info", "warning", "error"),
                             "process", "LEVEL")
    loop: str = setting("auto", "event loop implementation: uvloop when it is installed (auto), "
                        "or asyncio / uvloop explicitly", choice("auto", "asyncio", "uvloop"),
                        "process", "LOOP")
    engine: str = setting("fast", "HTTP/1.1 engine under the Tornado application: fast (asyncio "
                          "protocol + httptools) or tornado (Tornado's own HTTPServer, the fallback)",
                          choice("tornado", "fast"), "process", "ENGINE")
    access_log: str = setting("combined", "access log on stderr: combined (nginx/Apache format plus "
                              "seconds and request id), json (one object per line) or off",
                              choice("off", "combined", "json"), "process", "FORMAT")
    access_log_flush: float = setting(0.1, "seconds an access log line may wait to be written "
                                      "with others (one write per batch, not per request; lines "
                                      "still waiting are lost on SIGKILL); 0 writes every line "
                                      "at once", parse_seconds, "process", "SECONDS")
    metrics: bool = setting(True, "record request metrics (/metrics, /api/stats, the dashboard)",
                            parse_bool, "process")
    stats_interval: float = setting(1.0, "seconds between two updates of /api/stats/stream",
                                    parse_positive_seconds, "process", "SECONDS")

    # data: database and cache
    data_dir: Path = setting(Path("data"), "directory for the default SQLite database (created if "
                             "missing)", parse_path, "data", "DIR")
    db_url: str | None = setting(None, "database URL: sqlite+aiosqlite:///FILE or "
                                 "postgresql+asyncpg://USER:PASS@HOST/DB [default: SQLite in "
                                 "--data-dir]", parse_db_url, "data", "URL")
    db_pool_size: int = setting(10, "database connections one process opens at most (more requests "
                                "wait for one, up to --db-timeout)", parse_positive_int, "data", "N")
    db_timeout: float = setting(5.0, "seconds to connect, to run one query, or to wait for a "
                                "connection", parse_positive_seconds, "data", "SECONDS")
    db_startup_wait: float = setting(10.0, "seconds to keep retrying an unreachable database on "
                                     "start before giving up", parse_seconds, "data", "SECONDS")
    cache_url: str = setting("memory://", "cache: memory:// (this process) or redis://HOST:PORT/DB "
                             "(shared by every instance; also carries live events and rate limits)",
                             parse_cache_url, "data", "URL")
    cache_ttl: float = setting(30.0, "seconds a cached list or count lives at most",
                               parse_positive_seconds, "data", "SECONDS")
    cache_max_entries: int = setting(10_000, "entries the memory cache holds (least recently used "
                                     "go first)", parse_positive_int, "data", "N")
    cache_timeout: float = setting(1.0, "seconds one cache call may take before the database is "
                                   "used instead", parse_positive_seconds, "data", "SECONDS")
    cache_pool_size: int = setting(20, "Redis connections one process opens at most for cache "
                                   "calls (and as many for publishing live events); a call that "
                                   "finds none free within --cache-timeout uses the database",
                                   parse_positive_int, "data", "N")

    # guestbook
    admin_token: str | None = setting(None, "token that allows DELETE /api/messages/<id> "
                                      "(Authorization: Bearer TOKEN); deletes are off without it",
                                      parse_optional_text, "guestbook", "TOKEN")
    post_rate: tuple[int, float] | None = setting((10, 60.0), "messages one client may post per "
                                                  "window, e.g. 10/min, 100/h, 5/30s or off",
                                                  parse_rate, "guestbook", "RATE")
    message_max_length: int = setting(2000, "longest guestbook message (characters)",
                                      parse_positive_int, "guestbook", "N")
    page_size: int = setting(20, "messages per page by default", parse_positive_int, "guestbook", "N")
    max_page_size: int = setting(100, "most messages one page request may ask for",
                                 parse_positive_int, "guestbook", "N")
    live_max_clients: int = setting(10_000, "live guestbook connections (WebSockets) at once",
                                    parse_positive_int, "guestbook", "N")
    live_max_message_size: int = setting(4 * 1024, "largest message a client may send on a "
                                         "WebSocket (/guestbook/live only listens); a bigger one "
                                         "closes the connection with 1009 (message too big) "
                                         "instead of being buffered", parse_size, "guestbook",
                                         "SIZE")

    # TCP greeting service
    tcp_port: int | None = setting(None, "port of the TCP greeting service (off by default)",
                                   parse_optional_port, "tcp", "PORT")
    tcp_max_line: int = setting(4096, "longest line the TCP service accepts (bytes)",
                                parse_size, "tcp", "SIZE")
    tcp_idle_timeout: float = setting(300.0, "seconds a TCP client may stay silent",
                                      parse_positive_seconds, "tcp", "SECONDS")

    # API limits
    max_name_length: int = setting(64, "longest name a greeting accepts (characters)",
                                   parse_positive_int, "api", "N")
    slow_max_ms: int = setting(30_000, "largest ms /api/slow accepts", parse_positive_int, "api", "MS")
    compute_workers: int = setting(max(1, os.cpu_count() or 1), "processes running /api/compute jobs",
                                   parse_positive_int, "api", "N")
    compute_max_n: int = setting(20_000_000, "largest n /api/compute accepts",
                                 parse_positive_int, "api", "N")
    compute_max_pending: int = setting(64, "compute jobs running or queued at once; beyond it 503",
                                       parse_positive_int, "api", "N")

    # outbound HTTP (/api/fetch)
    outbound_max_clients: int = setting(64, "outbound requests in flight at once (whole server)",
                                        parse_positive_int, "outbound", "N")
    outbound_timeout: float = setting(10.0, "seconds one outbound request may take",
                                      parse_positive_seconds, "outbound", "SECONDS")
    outbound_allow: tuple[str, ...] = setting((), "hosts that may be fetched even though they "
                                              "resolve to loopback/private addresses (comma list)",
                                              parse_host_list, "outbound", "HOSTS")
    outbound_max_urls: int = setting(20, "URLs one /api/fetch request may list",
                                     parse_positive_int, "outbound", "N")
    outbound_max_bytes: int = setting(1024 * 1024, "largest outbound response body read (bytes)",
                                      parse_size, "outbound", "SIZE")

    def replace(self, **changes: Any) -> Settings:
        """Return a copy with some settings changed (values already parsed)."""
        return dataclasses.replace(self, **changes)

    @property
    def database_url(self) -> str:
        """The database to use: --db-url, or SQLite in --data-dir."""
        return self.db_url or f"sqlite+aiosqlite:///{self.data_dir / 'guestbook.db'}"

    @property
    def url(self) -> str:
        """The base URL people should open (for the configured port)."""
        host = "localhost" if self.address in ("", "0.0.0.0", "::") else self.address
        if ":" in host:
            host = f"[{host}]"
        scheme = "https" if self.tls_cert is not None else "http"
        return f"{scheme}://{host}:{self.port}/"

    @property
    def secret_file(self) -> Path:
        """Where the cookie secret is kept when --cookie-secret is not given."""
        return self.cookie_secret_file or self.data_dir / "cookie_secret"


_GROUP_TITLES = {
    "http": "HTTP listener",
    "app": "your own application (--app)",
    "process": "process",
    "data": "data: database and cache",
    "guestbook": "guestbook",
    "tcp": "TCP greeting service (seed 000)",
    "api": "API limits",
    "outbound": "outbound HTTP (/api/fetch)",
}


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line on stderr and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def _show(default: Any) -> Any:
    if default is None:
        return "off"
    if _is_rate(default):
        return f"{default[0]}/{default[1]:g}s"
    if isinstance(default, tuple):
        return ",".join(map(str, default))
    return default


def _is_rate(value: Any) -> bool:
    return isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], int)


def _env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def build_parser() -> argparse.ArgumentParser:
    """The command line: one option per Settings field, grouped, with defaults and env names."""
    parser = _Parser(
        prog="python -m server",
        description="A high-performance asynchronous web server on Tornado.",
        epilog=f"Every option can also be set by an environment variable {ENV_PREFIX}<NAME> "
               f"(for example {ENV_PREFIX}PORT=8080); the command line wins.",
    )
    groups = {key: parser.add_argument_group(title) for key, title in _GROUP_TITLES.items()}
    for f in dataclasses.fields(Settings):
        meta = f.metadata
        default = f.default
        shown = _show(default)
        shown = "off" if shown is None or shown == "" else shown
        if "[default:" in meta["help"]:  # the help states a default that is not a plain value
            help_text = meta["help"].replace("]", f"; env {_env_name(f.name)}]")
        else:
            help_text = f"{meta['help']} [default: {shown}; env {_env_name(f.name)}]"
        if meta["parse"] is parse_bool:
            groups[meta["group"]].add_argument(
                _flag(f.name), dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                help=help_text)
        else:
            groups[meta["group"]].add_argument(
                _flag(f.name), dest=f.name, default=None, metavar=meta["metavar"],
                help=help_text)
    return parser


def parse_settings(argv: Sequence[str] | None = None,
                   environ: Mapping[str, str] | None = None) -> Settings:
    """Read the command line and environment into validated Settings, or raise ConfigError."""
    environ = os.environ if environ is None else environ
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    values: dict[str, Any] = {}
    for f in dataclasses.fields(Settings):
        parse = f.metadata["parse"]
        given = getattr(args, f.name)
        if given is not None:
            source, raw = _flag(f.name), given
        elif _env_name(f.name) in environ:
            source, raw = _env_name(f.name), environ[_env_name(f.name)]
        else:
            continue
        if isinstance(raw, bool):
            values[f.name] = raw
            continue
        try:
            values[f.name] = parse(raw)
        except ValueError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    if (values.get("tls_cert") is None) != (values.get("tls_key") is None):
        given, missing = (("--tls-cert", "--tls-key") if values.get("tls_cert") is not None
                          else ("--tls-key", "--tls-cert"))
        raise ConfigError(f"{given} needs {missing} as well")
    return Settings(**values)
