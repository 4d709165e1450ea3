"""The sidecar's HTTP layer: an ASGI application over :class:`SidecarApp` (served by
uvicorn, see ``server.py``; Starlette's request and response types).

What it adds to the transport-free API:

* routing with JSON errors: unknown paths 404, wrong methods 405 (with ``Allow``);
* the body: ``Content-Length`` or chunked (411 without either), at most
  ``max_body_bytes`` (413, counted while it streams), ``application/json`` (415), and
  it must arrive within ``body_timeout_s`` (408, connection closed): a client that
  trickles its body does not hold a worker;
* admission: at most ``max_inflight`` recommendations in progress per process, fewer
  while answers come later than the latency target (``admission.AdaptiveLimit``; or the
  fixed cap with ``admission="fixed"``); the next one is refused at once with 429 and
  ``Retry-After`` (counted), so overload is shed early instead of queueing past every
  deadline.  The flows run on a pool of
  ``threads`` threads (their backend clients block), and each request's budget counts
  from its arrival here, so time spent queueing for a thread is part of it;
* drain: on SIGTERM, ``/readyz`` turns 503 at once while requests are still served for
  ``drain_s`` (the load balancer stops sending), each answer closing its connection (so a
  keep-alive client reconnects, to the next process, instead of racing the close); then
  the server stops accepting and finishes what is in flight (uvicorn's graceful shutdown).
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from typing import Optional

import anyio
import anyio.to_thread
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response as StarletteResponse

from serving.sidecar.admission import AdaptiveLimit
from serving.sidecar.api import (
    RECOMMENDATIONS_PATH,
    ROUTES,
    SidecarApp,
    error_response,
    json_response,
)
from serving.sidecar.validation import RequestError

log = logging.getLogger(__name__)


class SidecarASGI:
    """ASGI application: ``SidecarASGI(app)`` is what uvicorn serves."""

    def __init__(self, app: SidecarApp, drain_s: float = 0.0,
                 draining: Optional[threading.Event] = None):
        self.app, self.config, self.drain_s = app, app.config, drain_s
        self.draining = draining or threading.Event()
        self._limiter: Optional[anyio.CapacityLimiter] = None
        self._inflight = 0
        target = self.config.latency_target_s or app.recommender.config.budget_s / 2
        self.admission = (AdaptiveLimit(target, max_limit=self.config.max_inflight,
                                        min_limit=min(4, self.config.max_inflight))
                          if self.config.admission == "adaptive" else None)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            return await self._lifespan(receive, send)
        if scope["type"] != "http":
            return
        arrival = time.perf_counter()
        method, path = scope["method"], scope["path"]
        endpoint, methods = ROUTES.get(path, ("unknown", ()))
        try:
            response = await self._dispatch(Request(scope, receive), endpoint, methods,
                                            method, path, arrival)
        except RequestError as e:
            response = error_response(e, {"Connection": "close"} if e.close else None)
        except ClientDisconnect:  # nobody to answer
            self.app.metrics.requests.labels(endpoint, "disconnected").inc()
            return
        except Exception:  # never expected; logged and counted
            log.exception("unhandled error on %s %s", method, path)
            response = json_response(500, {"error": {"code": "internal",
                                                     "message": "internal error (logged)"}})
        status, headers, body = response
        if self.draining.is_set():  # clients reconnect (to the next process) before we stop
            headers = {**headers, "Connection": "close"}
        self.app.metrics.requests.labels(endpoint, str(status)).inc()
        self.app.metrics.latency.labels(endpoint).observe(time.perf_counter() - arrival)
        await StarletteResponse(body if method != "HEAD" else b"", status_code=status,
                                headers=headers)(scope, receive, send)

    async def _dispatch(self, request: Request, endpoint: str, methods, method: str,
                        path: str, arrival: float):
        if endpoint == "unknown":
            raise RequestError(f"no such path {path!r}; the API is POST "
                               f"{RECOMMENDATIONS_PATH}", status=404, code="not_found")
        if method not in methods and not (method == "HEAD" and "GET" in methods):
            return error_response(RequestError(f"{method} is not allowed on {path}; use "
                                               f"{', '.join(methods)}", status=405,
                                               code="method_not_allowed"),
                                  {"Allow": ", ".join(methods)})
        if endpoint == "recommendations":
            raw = await self._body(request)
            admitted = (self.admission.admits(self._inflight) if self.admission is not None
                        else self._inflight < self.config.max_inflight)
            if not admitted:
                self.app.metrics.shed.inc()
                return error_response(RequestError(
                    f"overloaded: {self._inflight} requests in progress; retry shortly",
                    status=429, code="overloaded"), {"Retry-After": "1"})
            self._inflight += 1
            try:
                return await anyio.to_thread.run_sync(self.app.recommendations, raw, arrival,
                                                      limiter=self._threads())
            finally:
                self._inflight -= 1
                if self.admission is not None:
                    self.admission.record(time.perf_counter() - arrival)
        if endpoint == "healthz":
            return json_response(200, {"status": "ok", "pid": os.getpid()})
        if endpoint == "readyz":
            return await anyio.to_thread.run_sync(self.app.readyz, self.draining.is_set())
        if endpoint == "metrics":
            data, ctype = self.app.metrics.render()
            return 200, {"Content-Type": ctype}, data
        if self.app.openapi is None:
            raise RequestError("the OpenAPI document is not installed", status=404,
                               code="not_found")
        return 200, {"Content-Type": "application/yaml"}, self.app.openapi

    def _threads(self) -> anyio.CapacityLimiter:
        if self._limiter is None:  # made inside the event loop that uses it
            self._limiter = anyio.CapacityLimiter(self.config.threads)
        return self._limiter

    async def _body(self, request: Request) -> bytes:
        headers, limit = request.headers, self.config.max_body_bytes
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        length = headers.get("content-length")
        if length is None and not chunked:
            raise RequestError("Content-Length (or a chunked body) is required", status=411,
                               code="length_required")
        if length is not None:
            try:
                size = int(length)
                if size < 0:
                    raise ValueError
            except ValueError:
                raise RequestError(f"bad Content-Length {length!r}") from None
            if size > limit:
                raise _too_large(f"the body has {size} bytes", limit)
        ctype = (headers.get("content-type") or "application/json").split(";")[0].strip().lower()
        if ctype != "application/json" and not ctype.endswith("+json"):
            error = RequestError(f"Content-Type must be application/json, got {ctype!r} "
                                 "(curl: add -H 'Content-Type: application/json')",
                                 status=415, code="unsupported_media_type")
            error.close = True  # the body was not read
            raise error

        async def read() -> bytes:
            chunks, size = [], 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise _too_large(f"the body has more than {limit} bytes", limit)
                chunks.append(chunk)
            return b"".join(chunks)
        try:
            return await asyncio.wait_for(read(), self.config.body_timeout_s)
        except asyncio.TimeoutError:
            error = RequestError(f"the body did not arrive within "
                                 f"{self.config.body_timeout_s:g} s", status=408,
                                 code="request_timeout")
            error.close = True
            raise error from None

    # ------------------------------------------------------------------ lifespan
    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._drain_on_sigterm()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _drain_on_sigterm(self) -> None:
        """Put a drain in front of the server's own SIGTERM handling: readiness first,
        then, ``drain_s`` later, the server's graceful shutdown."""
        if threading.current_thread() is not threading.main_thread():
            return  # an in-process server (tests, demo): its owner stops it
        shutdown = signal.getsignal(signal.SIGTERM)
        if not callable(shutdown):
            return

        def on_sigterm(sig, frame):
            if self.draining.is_set():  # a second SIGTERM: stop now
                return shutdown(sig, frame)
            self.draining.set()
            log.warning("SIGTERM: /readyz is 503; serving for %.1f s more, then draining",
                        self.drain_s)
            timer = threading.Timer(self.drain_s, shutdown, (sig, frame))
            timer.daemon = True
            timer.start()
        signal.signal(signal.SIGTERM, on_sigterm)


def _too_large(what: str, limit: int) -> RequestError:
    error = RequestError(f"{what}; at most {limit} are accepted", status=413,
                         code="payload_too_large")
    error.close = True
    return error


__all__ = ["SidecarASGI"]
