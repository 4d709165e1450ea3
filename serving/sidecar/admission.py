"""How many recommendations the sidecar takes on at once: a limit that adapts to the
latency it measures (additive increase, multiplicative decrease, as TCP's congestion
window).

A fixed cap on requests in progress (``--max-inflight``) is right for one machine and
load only: past the machine's capacity every admitted request waits (for the CPU, for a
thread, for the model server) and answers come later than their budget.  Here each
answer's latency, from arrival to answer, is compared with a target (half the budget by
default): an answer later than the target shrinks the limit by ``decrease`` (at most once
per target interval, so one burst does not collapse it), every answer in time grows it by
``1 / limit`` (one per limit's worth of answers).  Requests beyond the limit are refused at
once with 429 and ``Retry-After``: the requests that are taken stay within their budget.

No maintained Python library does this for an ASGI app (the known ones limit a *rate*,
not concurrency against latency), so it is these few lines.
"""
from __future__ import annotations

import threading
import time


class AdaptiveLimit:
    def __init__(self, target_s: float, max_limit: int = 64, min_limit: int = 4,
                 decrease: float = 0.9, clock=time.monotonic):
        if not 0 < decrease < 1 or min_limit < 1 or max_limit < min_limit:
            raise ValueError("need 0 < decrease < 1 and 1 <= min_limit <= max_limit")
        self.target_s, self.max_limit, self.min_limit = target_s, max_limit, min_limit
        self.decrease, self.clock = decrease, clock
        self.limit = float(max_limit)
        self._last_decrease = -float("inf")
        self._lock = threading.Lock()

    def admits(self, in_progress: int) -> bool:
        """Whether one more request may start while ``in_progress`` are running."""
        return in_progress < int(self.limit)

    def record(self, latency_s: float) -> None:
        """One answer's latency (arrival to answer)."""
        with self._lock:
            if latency_s > self.target_s:
                now = self.clock()
                if now - self._last_decrease >= self.target_s:
                    self.limit = max(float(self.min_limit), self.limit * self.decrease)
                    self._last_decrease = now
            else:
                self.limit = min(float(self.max_limit), self.limit + 1.0 / self.limit)


__all__ = ["AdaptiveLimit"]
