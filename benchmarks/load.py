"""Load generation against the sidecar, with every answer checked (the reliability
benchmark's client).

* :func:`closed_loop`: ``concurrency`` clients, each sending its next request when the
  last one is answered (a fixed number of clients; after a 429 it waits ``Retry-After``);
* :func:`open_loop`: requests sent at a fixed arrival rate whatever the answers do (a
  fixed rate of users); latency counts from the scheduled send time, so a stalled
  server is not hidden by clients that wait (no coordinated omission).

Each answer is checked against the catalogue (:class:`AnswerCheck`): every returned item
must exist, pass the request's filters (the sidecar's own filter semantics,
``serving.sidecar.filters``) and not be excluded; fewer than ``k`` items must carry
``short_answer``.  :func:`summarize` turns the outcomes into one benchmark row.

The client is ``aiohttp`` (keep-alive connections, one per concurrent request; bodies
encoded once, answers parsed with ``orjson``): the generator shares the 2 cores with the
stack it measures, and ``httpx`` cost 1.1-4 ms of CPU per request, aiohttp a fraction
of that (``cpu_ms_per_request.load_generator`` in the results).
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import time
from typing import List, Optional, Sequence

import aiohttp
import numpy as np
import orjson

from serving.sidecar.filters import EmbeddedFilterBackend, parse_filters


@dataclasses.dataclass
class Outcome:
    sent: float          # time.monotonic() when it was (due to be) sent
    latency_ms: float
    status: Optional[int] = None  # None: no HTTP answer (connection error or timeout)
    error: str = ""
    degraded: bool = False
    violations: int = 0   # returned items that break the request's filters
    short: bool = False   # fewer than k items
    unflagged_short: bool = False
    filter_status: str = ""


class AnswerCheck:
    """Checks answers against the catalogue with the sidecar's filter semantics."""

    def __init__(self, catalog: EmbeddedFilterBackend):
        self.catalog = catalog

    def __call__(self, request: dict, answer: dict, outcome: Outcome) -> None:
        filters = parse_filters(request.get("filters"))
        ids = [item["item_id"] for item in answer.get("items", ())]
        allowed = set(self.catalog.filter(ids, filters))  # drops unknown, excluded, repeats
        outcome.violations = sum(1 for i in ids if i not in allowed) + (len(ids) - len(set(ids)))
        outcome.degraded = bool(answer.get("degraded"))
        outcome.short = len(ids) < int(request.get("k", 10))
        outcome.unflagged_short = outcome.short and not answer.get("short_answer")
        outcome.filter_status = answer.get("filter_status", "")


_JSON = {"Content-Type": "application/json"}


async def _send(client: aiohttp.ClientSession, url: str, body: dict, sent: float,
                check: AnswerCheck, encoded: Optional[bytes] = None) -> Outcome:
    outcome = Outcome(sent=sent, latency_ms=0.0)
    try:
        async with client.post(url, data=encoded or orjson.dumps(body), headers=_JSON) as answer:
            payload = await answer.read()
            outcome.status = answer.status
        if outcome.status == 200:
            check(body, orjson.loads(payload), outcome)
    except (aiohttp.ClientError, asyncio.TimeoutError) as e:
        outcome.error = type(e).__name__
    outcome.latency_ms = (time.monotonic() - sent) * 1000.0
    return outcome


def _client(connections: int, timeout_s: float) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=connections, force_close=False),
        timeout=aiohttp.ClientTimeout(total=timeout_s))


async def closed_loop(url: str, bodies: Sequence[dict], check: AnswerCheck, concurrency: int,
                      requests: int, timeout_s: float = 5.0,
                      retry_after_s: float = 1.0) -> List[Outcome]:
    """``requests`` requests from ``concurrency`` clients; ``bodies`` are used in turn.  A
    client told 429 waits ``retry_after_s`` (the sidecar's ``Retry-After``) first."""
    outcomes: List[Outcome] = []
    counter = iter(range(requests))
    encoded = [orjson.dumps(b) for b in bodies]

    async def client_loop(client):
        for n in counter:
            outcome = await _send(client, url, bodies[n % len(bodies)], time.monotonic(), check,
                                  encoded[n % len(bodies)])
            outcomes.append(outcome)
            if outcome.status == 429:  # a well-behaved client honours Retry-After
                await asyncio.sleep(retry_after_s)

    async with _client(concurrency, timeout_s) as client:
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
    return outcomes


async def open_loop(url: str, bodies: Sequence[dict], check: AnswerCheck, rate: float,
                    duration_s: Optional[float] = None, stop: Optional[asyncio.Event] = None,
                    timeout_s: float = 5.0, max_outstanding: int = 512,
                    outcomes: Optional[List[Outcome]] = None) -> List[Outcome]:
    """Requests at ``rate`` per second (evenly spaced) for ``duration_s``, or until
    ``stop`` is set; then waits for the answers.  A request that would exceed
    ``max_outstanding`` in flight is counted as a client-side drop (``error:
    "client_overflow"``): the server is not keeping up at all.  Outcomes are appended to
    ``outcomes`` as they come (given or new) and returned."""
    outcomes = [] if outcomes is None else outcomes
    tasks = set()
    total = float("inf") if duration_s is None else int(rate * duration_s)
    encoded = [orjson.dumps(b) for b in bodies]

    def done(task):
        tasks.discard(task)
        outcomes.append(task.result())
    async with _client(max_outstanding, timeout_s) as client:
        start = time.monotonic()
        n = 0
        while n < total and not (stop is not None and stop.is_set()):
            due = start + n / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if len(tasks) >= max_outstanding:
                outcomes.append(Outcome(sent=due, latency_ms=0.0, error="client_overflow"))
            else:
                task = asyncio.create_task(_send(client, url, bodies[n % len(bodies)], due,
                                                 check, encoded[n % len(bodies)]))
                tasks.add(task)
                task.add_done_callback(done)
            n += 1
        while tasks:
            await asyncio.sleep(0.01)
    return outcomes


def summarize(outcomes: Sequence[Outcome], wall_s: Optional[float] = None) -> dict:
    """One row: counts, shares and latency percentiles (ms) of ``outcomes``."""
    n = len(outcomes)
    answered = [o for o in outcomes if o.status == 200]
    latencies = np.asarray([o.latency_ms for o in outcomes if o.status is not None], np.float64)
    if wall_s is None and outcomes:
        first = min(o.sent for o in outcomes)
        wall_s = max(o.sent + o.latency_ms / 1000.0 for o in outcomes) - first
    pct = (lambda q: round(float(np.percentile(latencies, q)), 1)) if latencies.size else \
        (lambda q: None)
    return {
        "requests": n,
        "http_5xx": sum(1 for o in outcomes if o.status is not None and o.status >= 500),
        "http_429": sum(1 for o in outcomes if o.status == 429),
        "http_other": sum(1 for o in outcomes if o.status is not None and o.status not in (200, 429)
                          and o.status < 500),
        "connection_errors": sum(1 for o in outcomes if o.status is None),
        "filter_violations": sum(1 for o in answered if o.violations),
        "degraded_share": round(sum(o.degraded for o in answered) / len(answered), 4)
        if answered else None,
        "short_answers": sum(o.short for o in answered),
        "unflagged_short_answers": sum(o.unflagged_short for o in answered),
        "snapshot_filtered": sum(o.filter_status == "snapshot" for o in answered),
        "errors": dict(collections.Counter(o.error for o in outcomes if o.error)),
        "rps": round(n / wall_s, 1) if wall_s else None,
        "p50_ms": pct(50), "p95_ms": pct(95), "p99_ms": pct(99),
        "max_ms": round(float(latencies.max()), 1) if latencies.size else None,
    }


def timeline(outcomes: Sequence[Outcome], start: float, step_s: float = 0.5) -> List[dict]:
    """Per ``step_s`` from ``start``: requests sent, and how many were bad (no answer, 5xx,
    429, degraded or breaking a filter)."""
    buckets: dict = {}
    for o in outcomes:
        slot = int((o.sent - start) // step_s)
        entry = buckets.setdefault(slot, {"t": round(slot * step_s, 2), "requests": 0, "bad": 0})
        entry["requests"] += 1
        entry["bad"] += int(o.status != 200 or o.degraded or bool(o.violations))
    return [buckets[k] for k in sorted(buckets)]


def recovery_s(outcomes: Sequence[Outcome], fault_end: float) -> float:
    """Seconds from ``fault_end`` to the send time of the last bad answer after it (an
    error, a 5xx or 429, a degraded answer or one breaking a filter); 0 when none."""
    bad = [o.sent for o in outcomes if o.sent >= fault_end and (
        o.status != 200 or o.degraded or o.violations)]
    return round(max(bad) - fault_end, 2) if bad else 0.0


__all__ = ["Outcome", "AnswerCheck", "closed_loop", "open_loop", "summarize", "recovery_s",
           "timeline"]
