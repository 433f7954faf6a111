"""The process lifecycle: bind → open services → serve → signal → drain → close, in that order."""
from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import gc
import logging
import os
import shutil
import signal
import socket
import ssl
import sys
import tempfile
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tornado.web
from tornado.netutil import bind_sockets

from handlers import refusals as refusal_page

from . import appspec
from .accesslog import BodySize, RequestObserver, chain
from .app import make_app
from .appspec import AppSpec
from .cluster import ClusterView
from .config import ConfigError, Settings
from .engine.limits import fit_file_limit
from .http1policy import HTTPEngine
from .httpserver import DrainingHTTPServer
from .metrics import Metrics
from .refusals import RefusalHandler
from .services import Services, Unavailable, load_or_create_secret, open_services
from .services.greeting import GreetingService
from .state import ServerState
from .tcp import GreetingTCPServer

if TYPE_CHECKING:
    from .supervisor import Slot

log = logging.getLogger("server")

EXIT_OK = 0
EXIT_FORCED = 1
EXIT_CONFIG = 2


def bind(address: str, port: int, backlog: int, reuse_port: bool = False) -> list[socket.socket]:
    """Bind listening sockets now, so a port in use is a clear ConfigError before anything opens."""
    try:
        return bind_sockets(port, address or None, backlog=backlog, reuse_port=reuse_port)
    except OSError as exc:
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
        raise ConfigError(f"cannot listen on {address or '*'}:{port}: {reason}") from None


def bound_port(sockets: list[socket.socket]) -> int:
    """The port the kernel gave (useful with port 0)."""
    port: int = sockets[0].getsockname()[1]
    return port


def make_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The server-side TLS context of --tls-cert/--tls-key (None without them); ConfigError if unusable."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    cert, key = settings.tls_cert, settings.tls_key
    _expect_pem(cert, "--tls-cert", (b"-----BEGIN CERTIFICATE-----",), "a PEM certificate")
    _expect_pem(key, "--tls-key", (b"PRIVATE KEY-----",), "a PEM private key")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        # a password callback that answers nothing: an encrypted key fails instead of prompting
        context.load_cert_chain(str(cert), str(key), password=lambda: b"")
    except ssl.SSLError as exc:
        reason = (exc.reason or str(exc)).lower().replace("_", " ")
        raise ConfigError(f"--tls-cert {cert} / --tls-key {key}: cannot use them ({reason}; is the "
                          "key unencrypted and the certificate's own?)") from None
    except OSError as exc:
        raise ConfigError(f"--tls-cert {cert} / --tls-key {key}: {exc.strerror or exc}") from None
    context.set_alpn_protocols(["http/1.1"])
    return context


def _expect_pem(path: Path, flag: str, markers: tuple[bytes, ...], what: str) -> None:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: cannot read it: {exc.strerror or exc}") from None
    if not any(marker in data for marker in markers):
        raise ConfigError(f"{flag} {path}: not {what}")


def make_http_server(app: object, settings: Settings, ssl_context: ssl.SSLContext | None = None,
                     refusals: RefusalHandler | None = None) -> HTTPEngine:
    """The HTTP/1.1 server of the chosen engine, with the settings' timeouts, limits and TLS.

    ``refusals`` renders and records the requests the server refuses itself (default: a plain
    page, not recorded).
    """
    options: dict[str, Any] = dict(
        idle_connection_timeout=settings.idle_timeout, body_timeout=settings.body_timeout,
        max_header_size=settings.max_header_size, max_body_size=settings.max_body_size,
        decompress_request=False, header_timeout=settings.header_timeout,
        send_timeout=settings.send_timeout,
        max_connections=fit_file_limit(settings.max_connections), refusals=refusals)
    if ssl_context is None:
        ssl_context = make_ssl_context(settings)
    if ssl_context is not None:
        options["ssl_options"] = ssl_context
    if settings.engine == "fast":
        from .engine import FastHTTPServer
        return FastHTTPServer(app, **options)
    return DrainingHTTPServer(app, **options)


def cookie_settings(settings: Settings) -> dict[str, Any]:
    """Application settings for the XSRF cookie: __Host-, Secure and Path=/ when serving TLS."""
    kwargs: dict[str, Any] = {"httponly": True, "samesite": "Lax"}
    if settings.tls_cert is None:
        return {"xsrf_cookie_kwargs": kwargs}
    # __Host-: the browser keeps it only if Secure, Path=/ and no Domain (no subdomain can set it)
    return {"xsrf_cookie_name": "__Host-xsrf", "xsrf_cookie_kwargs": {**kwargs, "secure": True,
                                                                       "path": "/"}}


def tune_garbage_collector(settings: Settings) -> None:
    """Long-lived servers: keep start-up objects out of collections, optionally collect less often.

    Full collections walk every tracked object; with thousands of long-lived connections and all
    the modules, templates and services made at start-up, that walk is what shows in tail latency.
    """
    if settings.gc_threshold is not None:
        gc.set_threshold(*settings.gc_threshold)
    if settings.gc_freeze:
        gc.collect()
        gc.freeze()


class ServerRuntime:
    """One running server: its application (this project's, or --app's), HTTP server, TCP service.

    ``prepare()`` builds the application (this project's opens its services first), ``start()``
    serves it on bound sockets, ``stop()`` drains and closes everything in reverse.
    """

    def __init__(self, settings: Settings, worker: int | None = None,
                 app_spec: AppSpec | None = None, cluster_dir: Path | None = None) -> None:
        self.settings = settings
        self.worker = worker  # the slot under a --processes supervisor, None when alone
        self.cluster_dir = cluster_dir  # where the supervisor's workers share their metrics
        self.app_spec = app_spec  # --app: the user's application instead of this project's
        self.state = ServerState()
        self.http: HTTPEngine | None = None
        self.tcp: GreetingTCPServer | None = None
        self.services: Services | None = None
        self.app: Any = None
        self.refusals: RefusalHandler | None = None
        # a foreign application gets no /metrics: nothing would read what is recorded
        self.metrics = Metrics(enabled=settings.metrics and app_spec is None)
        self._cluster: ClusterView | None = None
        self._stack = contextlib.AsyncExitStack()

    async def prepare(self) -> None:
        """Build the application: open this project's services and make its app, or build --app's."""
        s = self.settings
        try:
            await self.metrics.start()
            self._stack.push_async_callback(self.metrics.close)
            if self.app_spec is not None:
                await self._prepare_foreign(self.app_spec)
                return
            self.services = await self._stack.enter_async_context(open_services(s, self.metrics))
            if self.worker is not None and self.cluster_dir is not None:
                self._cluster = ClusterView(self.cluster_dir, self.worker, self.metrics)
            app = self.app = make_app(s, self.services, self.state, self.metrics, self._cluster)
            # the access lines still waiting are written once the server has stopped serving
            observer = app.settings["log_function"]
            self._stack.callback(observer.flush)
            app.settings.update(cookie_settings(s))
            self.refusals = RefusalHandler(refusal_page.render, observer.refused)
        except BaseException:
            await self._stack.aclose()
            raise

    async def _prepare_foreign(self, spec: AppSpec) -> None:
        s = self.settings
        app = self.app = await self._stack.enter_async_context(appspec.built(spec))
        observer = RequestObserver(self.metrics, s.access_log, s.access_log_flush)
        self._stack.callback(observer.flush)
        if isinstance(app, tornado.web.Application):
            # the launcher's access log; an application's own log_function is still called
            own = app.settings.get("log_function")
            app.settings["log_function"] = observer if own is None else chain(observer, own)
            if observer.writer is not None:  # the body size is for the access log's lines alone
                app.transforms.append(BodySize)
        self.refusals = RefusalHandler(record=observer.refused)

    async def start(self, http_sockets: list[socket.socket],
                    tcp_sockets: list[socket.socket] | None = None) -> None:
        """Serve the application on already-bound sockets (prepared first if it was not)."""
        s = self.settings
        if self.app is None:
            await self.prepare()
        try:
            self.http = make_http_server(self.app, s, refusals=self.refusals)
            self.http.add_sockets(http_sockets)
            if tcp_sockets:
                greeting = (self.services.greeting if self.services is not None
                            else GreetingService(s.max_name_length))
                self.tcp = GreetingTCPServer(greeting, s.tcp_max_line, s.tcp_idle_timeout)
                self.tcp.add_sockets(tcp_sockets)
            self._register_gauges()
            if self._cluster is not None:
                await self._cluster.start()
                self._stack.push_async_callback(self._cluster.close)
        except BaseException:
            await self._stack.aclose()
            raise

    async def close(self) -> None:
        """Close what prepare() opened (when start() never ran)."""
        await self._stack.aclose()

    def _register_gauges(self) -> None:
        http, state, services, m = self.http, self.state, self.services, self.metrics
        assert http is not None
        if services is None:
            return  # a foreign application: no /metrics to show them
        m.gauge("http_connections_open", "open HTTP connections", lambda: http.connection_count)
        m.gauge("http_requests_in_flight", "HTTP requests being handled", lambda: len(http.busy))
        m.counter("http_connections_refused", "connections closed at accept by --max-connections",
                  lambda: http.refused_connections)
        m.gauge("api_requests_in_flight", "API requests counted against --max-concurrency",
                lambda: state.api_in_flight)
        m.gauge("tcp_connections_open", "TCP greeting service connections",
                lambda: self.tcp.connection_count if self.tcp else 0)
        m.gauge("live_clients", "open live guestbook connections", lambda: len(state.live_clients))
        m.gauge("compute_jobs_pending", "compute jobs running or queued",
                lambda: services.compute.pending)
        m.gauge("server_draining", "1 while shutting down", lambda: int(state.draining))
        # a leak of work shows here first: requests, fetches and DB calls each live in a task
        m.gauge("asyncio_tasks", "asyncio tasks alive in this process", lambda: len(asyncio.all_tasks()))

    async def stop(self) -> bool:
        """Drain gracefully and close services in reverse; False if the timeout cut requests off."""
        self.state.draining = True
        try:
            for client in list(self.state.live_clients):
                # live pages reconnect (to another instance, or to this one once restarted)
                client.close(1001, "server restarting")
            if self.settings.drain_grace:
                await asyncio.sleep(self.settings.drain_grace)
            if self.tcp is not None:
                self.tcp.stop()
            clean = True
            if self.http is not None:
                clean = await self.http.drain(self.settings.shutdown_timeout,
                                              self.settings.drain_idle_grace)
            if self.tcp is not None:
                await self.tcp.shutdown(timeout=1.0)
            return clean
        finally:
            await self._stack.aclose()

    async def abort(self) -> None:
        """Close everything now, requests in flight included (second signal)."""
        self.state.draining = True
        if self.http is not None:
            self.http.stop()
            await self.http.close_all_connections()
        if self.tcp is not None:
            self.tcp.stop()
            await self.tcp.shutdown(timeout=0)
        await self._stack.aclose()


async def serve(settings: Settings, http_sockets: list[socket.socket] | None,
                tcp_sockets: list[socket.socket] | None = None,
                announce: Callable[[str], None] = print, worker: int | None = None,
                app_spec: AppSpec | None = None, cluster_dir: Path | None = None) -> int:
    """Run the server until SIGTERM/SIGINT, drain, and return the process exit code.

    ``http_sockets`` None: bind them once the application is built (a foreign application in
    one process: a factory that fails is reported before any socket is bound).
    """
    loop = asyncio.get_running_loop()
    runtime = ServerRuntime(settings, worker, app_spec, cluster_dir)
    await runtime.prepare()
    if http_sockets is None:
        try:
            http_sockets, tcp_sockets = bind_all(settings)
        except BaseException:
            await runtime.close()
            raise
    await runtime.start(http_sockets, tcp_sockets)
    tune_garbage_collector(settings)

    stop_requested = asyncio.Event()
    main_task = asyncio.current_task()
    signals_seen = []

    def on_signal(signum: int) -> None:
        signals_seen.append(signum)
        if len(signals_seen) == 1:
            log.info("%s received: draining (again to force exit)", signal.Signals(signum).name)
            stop_requested.set()
        else:
            log.warning("%s received again: forcing exit", signal.Signals(signum).name)
            if main_task is not None:
                main_task.cancel()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)

    if tcp_sockets:
        host, port = tcp_sockets[0].getsockname()[:2]
        announce(f"TCP greeting service on {host}:{port}")
    announce(f"Serving on {settings.replace(port=bound_port(http_sockets)).url} (pid {os.getpid()})")
    try:
        await stop_requested.wait()
        clean = await runtime.stop()
    except asyncio.CancelledError:
        await runtime.abort()
        return EXIT_FORCED
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    log.info("stopped %s", "cleanly" if clean else "after the shutdown timeout")
    return EXIT_OK if clean else EXIT_FORCED


def bind_all(settings: Settings) -> tuple[list[socket.socket], list[socket.socket] | None]:
    """The HTTP listening sockets, and the TCP greeting service's when --tcp-port is set."""
    http_sockets = bind(settings.address, settings.port, settings.backlog)
    tcp_sockets = None
    if settings.tcp_port is not None:
        try:
            tcp_sockets = bind(settings.address, settings.tcp_port, settings.backlog)
        except ConfigError:
            for sock in http_sockets:
                sock.close()
            raise
    return http_sockets, tcp_sockets


def run(settings: Settings) -> int:
    """Bind, then run the event loop of the chosen implementation until shutdown."""
    make_ssl_context(settings)  # an unusable certificate or key is a config error before binding
    spec = None
    if settings.app is not None:
        # a module that is missing or broken, or a wrong attribute: exit 2 before any socket
        spec = appspec.resolve(settings.app, settings.app_dir)
    own_secret = spec is None and settings.cookie_secret is None

    def ensure_secret() -> None:
        load_or_create_secret(settings.secret_file, create_directory=settings.cookie_secret_file is None)

    if settings.processes > 1:
        if own_secret:
            ensure_secret()  # before any fork: workers then read one finished file
        from .supervisor import run_supervised
        uvloop = uvloop_or_none(settings)  # chosen before forking, so a missing uvloop is one line
        # the workers' shared metrics files: a fresh directory only this user can enter
        runtime_dir = Path(tempfile.mkdtemp(prefix="tornado-hps-"))
        try:
            return run_supervised(settings, functools.partial(
                run_child, uvloop=uvloop, runtime_dir=runtime_dir), bind)
        finally:
            shutil.rmtree(runtime_dir, ignore_errors=True)

    def announce(line: str) -> None:
        print(line, flush=True)

    if spec is not None:
        return run_loop(settings, serve(settings, None, None, announce, app_spec=spec))
    http_sockets, tcp_sockets = bind_all(settings)  # a busy port is exit 2 with nothing written
    if own_secret:
        try:
            ensure_secret()
        except BaseException:
            for sock in http_sockets + (tcp_sockets or []):
                sock.close()
            raise
    return run_loop(settings, serve(settings, http_sockets, tcp_sockets, announce))


def run_child(settings: Settings, slot: Slot, ready_fd: int, uvloop: Any,
              runtime_dir: Path) -> int:
    """One worker under the supervisor: serve on the slot's sockets, report readiness on a pipe.

    ``uvloop`` (the module, or None for asyncio) and ``runtime_dir`` were chosen by the parent
    before it forked. A foreign application is built here, after the fork (its module was
    imported, and checked, before binding); one that fails to build is one line and exit code 2.
    """
    from .supervisor import CONFIG_ERROR, READY

    def announce(line: str) -> None:
        if line.startswith("Serving on"):
            os.write(ready_fd, READY)
            os.close(ready_fd)

    try:
        spec = appspec.resolve(settings.app, settings.app_dir) if settings.app else None
        return run_on(uvloop, serve(settings, slot.http_sockets, slot.tcp_sockets,
                                    announce, worker=slot.index, app_spec=spec,
                                    cluster_dir=runtime_dir))
    except ConfigError as exc:
        os.write(ready_fd, CONFIG_ERROR + str(exc).encode())  # the supervisor says it, once
        return EXIT_CONFIG


def uvloop_or_none(settings: Settings) -> Any:
    """The uvloop module when the settings want it (auto: when installed); ConfigError if missing."""
    if settings.loop == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if settings.loop == "auto":
            return None
        raise ConfigError("--loop uvloop: uvloop is not installed (pip install uvloop)") from None
    return uvloop


def run_loop(settings: Settings, main: Coroutine[Any, Any, int]) -> int:
    """Run a coroutine on the event loop implementation the settings name."""
    try:
        uvloop = uvloop_or_none(settings)
    except ConfigError:
        main.close()
        raise
    return run_on(uvloop, main)


def run_on(uvloop: Any, main: Coroutine[Any, Any, int]) -> int:
    """Run a coroutine on uvloop (the module) or, given None, on asyncio's event loop."""
    return asyncio.run(main) if uvloop is None else uvloop.run(main)


def main(argv: list[str] | None = None) -> int:
    """Parse settings, configure logging, run; config errors are one line and exit code 2."""
    from .config import parse_settings

    try:
        settings = parse_settings(argv)
        logging.basicConfig(level=settings.log_level.upper(), stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        return run(settings)
    except ConfigError as exc:
        print(f"python -m server: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except Unavailable as exc:  # a service (the database) could not be opened
        print(f"python -m server: error: {exc}", file=sys.stderr)
        return EXIT_FORCED
    except KeyboardInterrupt:
        return EXIT_FORCED
