"""Serving the sidecar's ASGI app with uvicorn (httptools parser, uvloop).

Why uvicorn: BUILD_NOTES, "Serving under load and faults".  On top of uvicorn's own
limits (``limit_concurrency`` connections + requests, keep-alive idle timeout, graceful
shutdown) :class:`HeadDeadlineProtocol` adds the one it lacks: a deadline for the
request head, so a client that sends its headers a byte at a time (slowloris) is
disconnected instead of holding a connection for ever.  The body's deadline is the
app's (``asgi.py``).

* :func:`make_server`: one in-process server on a background-capable object (tests,
  the demo, the benchmarks), with the stdlib ``socketserver`` interface the callers
  know (``serve_forever``, ``shutdown``, ``server_close``, ``server_address``);
* :func:`run`: ``stars serve sidecar`` -- one process, or ``--workers N`` processes on
  one listening socket (uvicorn's supervisor), each building its app from the same
  command line; Prometheus metrics are then summed over the workers.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import tempfile
import threading
from dataclasses import dataclass
from typing import Optional

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from serving.sidecar.api import SidecarApp
from serving.sidecar.asgi import SidecarASGI

log = logging.getLogger(__name__)

ARGS_ENV = "STARS_SIDECAR_ARGS"  # the worker processes' parsed command line (JSON object)


@dataclass(frozen=True)
class HttpConfig:
    head_timeout_s: float = 5.0        # the request line and headers must arrive within
    keep_alive_s: float = 5.0          # an idle keep-alive connection is closed after
    max_connections: int = 1024        # connections + requests per process (503 beyond)
    graceful_timeout_s: float = 10.0   # in-flight requests get this long after SIGTERM
    drain_s: float = 1.0               # readiness is red this long before that
    workers: int = 1
    reuse_port: bool = False           # SO_REUSEPORT: several sidecars may share the port


class HeadDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline on each request head: armed when a
    connection opens and when a request starts, cleared when its headers are complete."""

    def __init__(self, config, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        self.head_timeout_s = getattr(config, "head_timeout_s", HttpConfig.head_timeout_s)
        self._head_timer = None

    def _arm_head_timer(self) -> None:
        self._clear_head_timer()
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_too_slow)

    def _clear_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc) -> None:
        self._clear_head_timer()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_head_timer()

    def on_headers_complete(self) -> None:
        self._clear_head_timer()
        super().on_headers_complete()


class SidecarConfig(uvicorn.Config):
    """uvicorn's Config with the head deadline that :class:`HeadDeadlineProtocol` reads
    (an attribute, so that it is pickled with the config into worker processes)."""
    head_timeout_s: float = HttpConfig.head_timeout_s


def uvicorn_config(app, http: HttpConfig, **kwargs) -> SidecarConfig:
    # uvicorn annotates both timeouts as int, but uses them as seconds for
    # loop.call_later / asyncio.timeout, which take floats: sub-second values are meant.
    config = SidecarConfig(
        app, http=HeadDeadlineProtocol, loop="uvloop", lifespan="on", access_log=False,
        log_level="warning",
        timeout_keep_alive=http.keep_alive_s,  # type: ignore[arg-type]  # float s, see above
        limit_concurrency=http.max_connections,
        timeout_graceful_shutdown=http.graceful_timeout_s,  # type: ignore[arg-type]  # float
        **kwargs)
    config.head_timeout_s = http.head_timeout_s
    return config


class SidecarServer:
    """One uvicorn server on a socket bound at construction (port 0 picks a free one)."""

    def __init__(self, app: SidecarApp, host: str = "127.0.0.1", port: int = 0,
                 http: HttpConfig = HttpConfig()):
        self.asgi = SidecarASGI(app, drain_s=http.drain_s)
        self.socket = listen(host, port, http.reuse_port)
        self.server = uvicorn.Server(uvicorn_config(self.asgi, http))
        self._stopped = threading.Event()

    @property
    def server_address(self):
        return self.socket.getsockname()[:2]

    def serve_forever(self, poll_interval: Optional[float] = None) -> None:
        """Blocks until :meth:`shutdown` (``poll_interval`` is accepted and ignored)."""
        try:
            self.server.run(sockets=[self.socket])
        finally:
            self._stopped.set()

    def shutdown(self, timeout_s: float = 30.0) -> None:
        """Graceful: stops accepting, lets in-flight requests finish, then returns."""
        self.server.should_exit = True
        self._stopped.wait(timeout_s)

    def server_close(self) -> None:
        self.socket.close()


def make_server(app: SidecarApp, host: str = "127.0.0.1", port: int = 0,
                http: HttpConfig = HttpConfig()) -> SidecarServer:
    return SidecarServer(app, host, port, http)


def run(app: Optional[SidecarApp], args: dict, host: str, port: int, http: HttpConfig,
        factory: str = "serving.sidecar.cli:app_from_environment") -> None:
    """Serves until SIGTERM / SIGINT: ``app`` in this process when ``http.workers`` is 1;
    otherwise ``http.workers`` processes, each building its own app with ``factory``
    (``module:function``, uvicorn's ``factory=True``) from ``args`` (the parsed command
    line, JSON-serialisable values, left in ``ARGS_ENV``).  A drained SIGTERM exits 0."""
    # uvicorn re-raises the signal it stopped on once it is done; that is a clean exit here
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sock = listen(host, port, http.reuse_port)
    try:
        if http.workers <= 1:
            if app is None:
                raise ValueError("one worker serves the app given: app is None")
            config = uvicorn_config(SidecarASGI(app, drain_s=http.drain_s), http)
            uvicorn.Server(config).run(sockets=[sock])
            return
        from uvicorn.supervisors import Multiprocess
        os.environ[ARGS_ENV] = json.dumps(args)
        with tempfile.TemporaryDirectory(prefix="stars-sidecar-metrics-") as metrics_dir:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
            config = uvicorn_config(factory, http, factory=True, workers=http.workers)
            Multiprocess(config, sockets=[sock]).run()
    finally:
        sock.close()


def listen(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """The listening socket.  With ``reuse_port`` a new sidecar can listen on the port
    before the old one drains (a restart on one host without refused connections)."""
    sock = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host
                                else socket.AF_INET, backlog=2048, reuse_port=reuse_port)
    sock.set_inheritable(True)  # handed to the worker processes
    return sock


__all__ = ["HttpConfig", "HeadDeadlineProtocol", "SidecarServer", "make_server", "run", "listen",
           "uvicorn_config", "ARGS_ENV"]
