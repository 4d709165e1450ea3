"""TF Serving's ``--rest_api_timeout_in_ms``: a REST inference call answers within a deadline.

TF Serving sets it as the ``RunOptions.timeout_in_ms`` of the REST handler's Predict,
Classify and Regress runs (http_rest_api_handler.cc; default 30 s, <= 0: none): a run
past it fails with DEADLINE_EXCEEDED, HTTP 504.  A TensorFlow function called from Python
cannot be cancelled, so here the call runs on a worker thread and the request thread stops
waiting at the deadline: the client gets its 504 on time, and the abandoned run finishes in
the background (its version stays loaded until it does; its answer is dropped).
"""
from __future__ import annotations

import concurrent.futures
from typing import Callable, Optional, TypeVar

from serving.model_server import errors

T = TypeVar("T")
DEFAULT_REST_API_TIMEOUT_MS = 30_000  # server.h: http_timeout_in_ms


class CallDeadline:
    """Runs calls with a deadline of ``timeout_s`` (<= 0 or None: on the caller's thread,
    no deadline).  ``max_workers`` bounds the runs in progress; more wait for a worker, and
    that wait counts against their deadline."""

    def __init__(self, timeout_s: Optional[float], max_workers: int = 64):
        self.timeout_s = timeout_s if timeout_s and timeout_s > 0 else None
        self._pool = (concurrent.futures.ThreadPoolExecutor(max_workers=max_workers,
                                                            thread_name_prefix="rest-call")
                      if self.timeout_s else None)

    def run(self, call: Callable[..., T], *args) -> T:
        timeout = self.timeout_s
        if self._pool is None or timeout is None:
            return call(*args)
        future = self._pool.submit(call, *args)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            raise errors.ServingError(
                errors.Code.DEADLINE_EXCEEDED,
                f"Deadline exceeded: the call did not finish within "
                f"--rest_api_timeout_in_ms={timeout * 1000:.0f}") from None

    def stop(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


__all__ = ["CallDeadline", "DEFAULT_REST_API_TIMEOUT_MS"]
