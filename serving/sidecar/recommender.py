"""The recommendation flow of the sidecar, transport-free (the HTTP layer is ``api.py``).

1. **User embedding.** A user with embeddings from the batch job (``UserEmbeddingStore``)
   takes the *stored* path: the request's context offset (``context_offset``, cached per
   model version, UTC hour and signals -- Δ_ctx depends on the time only through the hour,
   day of week, week and holiday) is added to ``h_gen_base``/``h_next_base`` and the index
   is searched (``search``; ``search_after_items`` when the store kept the user's latest
   items and the model serves it: NI then merges the successor source). When the stored
   version is a model version (an integer) both calls are pinned to it, so embeddings are
   never searched in another version's space; any other version string (a store generation
   id) is not pinned. Otherwise the request's recent events are *encoded* by the model
   (``recommend_with_context``) -- the cold-start answer from events, and the path when a
   stored embedding's model version is no longer served. A user with neither gets the
   region's popular items (``cold_start``, not degraded).
2. **Over-fetch.**  ``ceil(k * overfetch)`` candidates (plus the excluded ids) are asked
   for; only the variants the mode needs (``next``: NI = h_next, ``general``: GI = h_gen,
   ``rr``: both).
3. **Post-filter** the new candidates of the round with the filter backend (one call
   per round; skipped when the request has no attribute filters; excluded ids are
   always dropped locally).
4. **Merge**: the mode's list, or GI and NI interleaved round-robin (GI first) without
   duplicates for ``rr``.
5. **Re-fetch** with ``growth`` times more candidates while fewer than ``k`` survive,
   up to ``max_fetch`` and until the index has no more (``Candidates.exhausted``; a served
   index answers its whole fixed top K at once, so it is asked once).

6. **Backfill**: when the index has no more candidates (it returns a fixed top K) and
   fewer than ``k`` passed, the popular items that pass the same filters fill the
   answer (``source: popularity``, counted in ``backfilled``); ``short_answer`` says
   fewer than ``k`` items exist for these filters at all.

Failures never raise, and a business rule is never skipped silently: the model server
down or slow (per-call deadline, and a budget for the whole request) gives the
popularity fallback with ``degraded: true``.  The filter backend down or slow gives,
by default, the same filters applied to the catalogue snapshot the sidecar holds
(``filter_status: snapshot``: the rules are applied, against the catalogue as of the
last load); ``closed`` (only already-filtered items, possibly none) and ``open``
(unfiltered candidates, exclusions still applied) are explicit opt-ins, both marked
degraded.  A failing user store is treated as a miss and marked.  The filter backend
and the user store sit behind circuit breakers (``pybreaker``): after a failure they are
not called for ``backend_cooldown_s``, so an outage costs one timeout per cool-down,
not one per request.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import math
import threading
import time
from typing import Dict, List, Mapping, Optional, Protocol, Tuple, cast

import numpy as np
import pybreaker

from serving.sidecar.filters import EmbeddedFilterBackend, FilterBackend, Filters, FilterUnavailable
from serving.sidecar.model_client import (
    Candidates,
    Event,
    ModelClient,
    ModelContext,
    ModelTimeout,
    ModelUnavailable,
    ModelVersionNotFound,
)
from serving.sidecar.popularity import Popularity
from serving.sidecar.user_store import UserEmbeddingStore
from stars.interleaving import round_robin

log = logging.getLogger(__name__)

MODES = ("next", "general", "rr")
MODE_VARIANTS = {"next": ("ni",), "general": ("gi",), "rr": ("gi", "ni")}
FILTER_FAILURE_MODES = ("snapshot", "closed", "open")


@dataclasses.dataclass(frozen=True)
class RecommendationRequest:
    k: int = 10
    user_id: Optional[str] = None
    events: Tuple[Event, ...] = ()
    mode: str = "rr"
    filters: Filters = Filters()
    timestamp: int = 0
    signals: Tuple[float, ...] = ()
    user_features: Mapping[str, object] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class RecommendedItem:
    item_id: str
    score: float
    source: str  # "gi" (h_gen), "ni" (h_next) or "popularity"

    def to_json(self) -> dict:
        return {"item_id": self.item_id, "score": round(self.score, 6), "source": self.source}


@dataclasses.dataclass
class Recommendation:
    items: List[RecommendedItem]
    mode: str
    user_embedding: str  # "stored" | "encoded" | "none"
    cold_start: bool
    model_version: Optional[str] = None
    degraded: bool = False
    degraded_reasons: List[str] = dataclasses.field(default_factory=list)
    filter_status: str = "skipped"  # ok | skipped | local | snapshot | fail_open | fail_closed
    backfilled: int = 0       # popular items that filled the answer up to k
    short_answer: bool = False  # fewer than k items returned
    fetch_rounds: int = 0
    candidates_checked: int = 0
    latency_ms: Dict[str, float] = dataclasses.field(default_factory=dict)

    def degrade(self, reason: str) -> None:
        self.degraded = True
        if reason not in self.degraded_reasons:
            self.degraded_reasons.append(reason)

    def to_json(self) -> dict:
        return {"items": [i.to_json() for i in self.items], "mode": self.mode,
                "model_version": self.model_version, "user_embedding": self.user_embedding,
                "cold_start": self.cold_start, "degraded": self.degraded,
                "degraded_reasons": list(self.degraded_reasons),
                "filter_status": self.filter_status, "backfilled": self.backfilled,
                "short_answer": self.short_answer,
                "fetch": {"rounds": self.fetch_rounds,
                          "candidates_checked": self.candidates_checked},
                "latency_ms": {k: round(v, 3) for k, v in self.latency_ms.items()}}


@dataclasses.dataclass(frozen=True)
class RecommenderConfig:
    overfetch: float = 4.0        # first round asks for ceil(k * overfetch) (+ exclusions)
    growth: float = 2.0           # each re-fetch asks for growth x more
    max_fetch: int = 1000         # never ask the index for more per variant
    model_timeout_s: float = 0.05   # per model call
    filter_timeout_s: float = 0.05  # per filter call
    budget_s: float = 0.2         # the whole flow
    filter_failure: str = "snapshot"  # snapshot | closed | open when the backend is down
    backend_cooldown_s: float = 0.5   # a failed filter backend / user store rests this long
    context_cache_size: int = 4096

    def __post_init__(self):
        if self.filter_failure not in FILTER_FAILURE_MODES:
            raise ValueError(f"filter_failure must be one of {FILTER_FAILURE_MODES}, "
                             f"got {self.filter_failure!r}")
        if self.overfetch < 1 or self.growth <= 1 or self.max_fetch < 1:
            raise ValueError("need overfetch >= 1, growth > 1, max_fetch >= 1")


_LOG_EVERY_S = 10.0
_last_logged: Dict[str, float] = {}


def _log_failure(message: str, error) -> None:
    """A backend failure, logged at most once per ``_LOG_EVERY_S`` per kind of message (an
    outage fails every request; the metrics count them all)."""
    now = time.monotonic()
    if now - _last_logged.get(message, -math.inf) >= _LOG_EVERY_S:
        _last_logged[message] = now
        log.warning(message, error)


def served_version(stored_version) -> Optional[str]:
    """The model version to pin for a stored embedding: TF Serving versions are integers;
    anything else (e.g. a store generation id) cannot be pinned, and the current model
    is used."""
    text = str(stored_version) if stored_version is not None else ""
    return text if text.isdigit() else None


class _Clock:
    """Per-hop latency accumulator and the request deadline."""

    def __init__(self, budget_s: float, start: Optional[float] = None):
        self.start = time.perf_counter() if start is None else start
        self.deadline = self.start + budget_s
        self.hops: Dict[str, float] = {}

    def remaining(self) -> float:
        return self.deadline - time.perf_counter()

    def add(self, hop: str, since: float) -> None:
        self.hops[hop] = self.hops.get(hop, 0.0) + (time.perf_counter() - since) * 1000.0

    def finish(self) -> Dict[str, float]:
        self.hops["total"] = (time.perf_counter() - self.start) * 1000.0
        return self.hops


class _Fetcher(Protocol):
    """A retrieval call (``n`` candidates within ``timeout_s``); ``pinned``: to the stored
    embedding's model version."""
    pinned: bool

    def __call__(self, n: int, timeout_s: float) -> Candidates: ...


class Recommender:
    def __init__(self, model: ModelClient, filter_backend: FilterBackend,
                 popularity: Optional[Popularity] = None,
                 user_store: Optional[UserEmbeddingStore] = None,
                 config: RecommenderConfig = RecommenderConfig(),
                 snapshot: Optional[EmbeddedFilterBackend] = None):
        self.model, self.filter_backend = model, filter_backend
        self.popularity, self.user_store, self.config = popularity, user_store, config
        # The catalogue the filters fall back to: the popularity ranking's own catalogue.
        self.snapshot = snapshot or (popularity.catalog if popularity is not None else None)
        if config.filter_failure == "snapshot" and self.snapshot is None \
                and not isinstance(filter_backend, EmbeddedFilterBackend):
            raise ValueError("filter_failure 'snapshot' needs the catalogue snapshot "
                             "(give popularity or snapshot), or choose 'closed' / 'open'")
        self.filter_breaker = pybreaker.CircuitBreaker(
            fail_max=1, reset_timeout=config.backend_cooldown_s, name="filter",
            throw_new_error_on_trip=False)
        self.store_breaker = pybreaker.CircuitBreaker(
            fail_max=1, reset_timeout=config.backend_cooldown_s, name="user_store",
            throw_new_error_on_trip=False)
        self._offsets: "collections.OrderedDict" = collections.OrderedDict()
        self._offsets_lock = threading.Lock()
        self._last_version: Optional[str] = None  # newest version seen unpinned
        # The user-embedding generation of the served release (serving.sidecar.release);
        # None: the store's live generation.
        self.store_generation: Optional[str] = None

    # ------------------------------------------------------------------ public
    def switch_release(self, catalog: EmbeddedFilterBackend, popularity: Popularity,
                       store_generation: Optional[str]) -> None:
        """A new release's catalogue -- the snapshot, the popularity ranking and, when the
        filters run in process, the filter backend -- and its user-embedding generation
        (each one assignment: a request in flight finishes with whichever it read)."""
        if isinstance(self.filter_backend, EmbeddedFilterBackend):
            self.filter_backend = catalog
        self.snapshot = catalog
        self.popularity = popularity
        self.store_generation = store_generation

    def recommend(self, request: RecommendationRequest,
                  started: Optional[float] = None) -> Recommendation:
        """The answer to ``request``; its budget counts from ``started``
        (``time.perf_counter()`` at arrival, so time spent queueing counts; default now)."""
        clock = _Clock(self.config.budget_s, started)
        result = Recommendation(items=[], mode=request.mode, user_embedding="none",
                                cold_start=True)
        if clock.remaining() <= 0:  # it waited its whole budget in a queue: the cheap answer
            result.degrade("budget_exhausted")
            self._fallback(request, clock, result)
            result.short_answer = len(result.items) < request.k
            result.latency_ms = clock.finish()
            return result
        stored = self._stored_embedding(request, clock, result)
        fetch, problem = None, None
        if stored is not None:
            result.cold_start = False
            fetch, problem = self._stored_fetcher(request, stored, clock)
            if fetch is not None:
                result.user_embedding = "stored"
        if fetch is None and request.events and problem in (None, "stored_embedding_unusable"):
            fetch = self._encode_fetcher(request)  # also the cold start from events
            result.user_embedding = "encoded"
        if fetch is not None:
            self._retrieve(request, fetch, clock, result)
        elif problem is not None or result.degraded:
            if problem:
                result.degrade(problem)
            self._fallback(request, clock, result)
        else:  # a cold user without events: popular items, not a failure
            self._popular(request, clock, result)
        result.short_answer = len(result.items) < request.k
        result.latency_ms = clock.finish()
        return result

    # ------------------------------------------------------------------ user embedding
    def _stored_embedding(self, request, clock, result):
        if not request.user_id or self.user_store is None:
            return None
        since = time.perf_counter()
        try:
            if self.store_generation is not None:  # the served release's generation
                return self.store_breaker.call(self.user_store.get, request.user_id,
                                               self.store_generation)
            return self.store_breaker.call(self.user_store.get, request.user_id)
        except pybreaker.CircuitBreakerError:  # resting after a failure: a marked miss
            result.degrade("user_store_unavailable")
            return None
        except Exception as e:  # a store outage must not fail the request
            _log_failure("user store failed: %s", e)
            result.degrade("user_store_unavailable")
            return None
        finally:
            clock.add("user_store", since)

    def _context_offset(self, request, version, clock) -> np.ndarray:
        """Δ_ctx, cached per (model version, UTC hour, signals).  Unpinned calls are keyed
        by the newest version the model server reported, so a new version misses."""
        hour, signals = request.timestamp // 3600, tuple(request.signals)
        key_version = version or self._last_version
        if key_version is not None:
            with self._offsets_lock:
                cached = self._offsets.get((key_version, hour, signals))
                if cached is not None:
                    self._offsets.move_to_end((key_version, hour, signals))
                    return cached
        since = time.perf_counter()
        try:
            offset, got = self.model.context_offset(
                request.timestamp, request.signals,
                timeout_s=min(self.config.model_timeout_s, clock.remaining()), version=version)
        finally:
            clock.add("context_offset", since)
        got = version or got
        if version is None and got:
            self._last_version = got
        if got:
            with self._offsets_lock:
                self._offsets[(got, hour, signals)] = offset
                while len(self._offsets) > self.config.context_cache_size:
                    self._offsets.popitem(last=False)
        return offset

    def _stored_fetcher(self, request, stored, clock):
        """(search closure, None) for a stored embedding, or (None, problem) when it cannot
        be used: ``stored_embedding_unusable`` (its model version is not served any more;
        the events can still be encoded), ``model_timeout`` or ``model_unavailable``."""
        try:
            if len(stored) not in (3, 4):
                raise ValueError(f"{len(stored)} values")
            h_gen, h_next, stored_version = stored[:3]
            latest = tuple(str(i) for i in (stored[3] if len(stored) == 4 else ()) if i)
            h_gen = np.asarray(h_gen, np.float32).reshape(-1)
            h_next = np.asarray(h_next, np.float32).reshape(-1)
            if h_gen.shape != h_next.shape or not h_gen.size:
                raise ValueError(f"shapes {h_gen.shape} and {h_next.shape}")
        except (TypeError, ValueError) as e:
            log.warning("malformed stored embedding for %r: %s", request.user_id, e)
            return None, "stored_embedding_unusable"
        version = served_version(stored_version)
        try:
            offset = self._context_offset(request, version, clock)
        except ModelTimeout:
            return None, "model_timeout"
        except ModelVersionNotFound as e:
            log.info("stored embedding of %r unusable (version %s): %s", request.user_id,
                     version, e)
            return None, "stored_embedding_unusable"
        except ModelUnavailable as e:
            _log_failure("model call failed, popularity fallback: %s", e)
            return None, "model_unavailable"
        offset = np.asarray(offset, np.float32).reshape(-1)
        if offset.shape != h_gen.shape:  # embeddings of a model with another dimension
            log.warning("stored embedding of %r has %d dims, the model's offset %d",
                        request.user_id, h_gen.size, offset.size)
            return None, "stored_embedding_unusable"
        queries = {"gi": h_gen + offset, "ni": h_next + offset}
        queries = {v: queries[v] for v in MODE_VARIANTS[request.mode]}

        def fetch(n: int, timeout_s: float) -> Candidates:
            return self.model.search(queries, n, timeout_s=timeout_s, version=version,
                                     latest_items=latest)
        fetcher = cast(_Fetcher, fetch)
        fetcher.pinned = version is not None
        return fetcher, None

    def _encode_fetcher(self, request):
        context = ModelContext(timestamp=request.timestamp, signals=tuple(request.signals),
                               region=request.filters.region or "",
                               user_features=request.user_features)

        def fetch(n: int, timeout_s: float) -> Candidates:
            return self.model.recommend(request.events, context, n, timeout_s=timeout_s)
        fetcher = cast(_Fetcher, fetch)
        fetcher.pinned = False
        return fetcher

    # ------------------------------------------------------------------ retrieval
    def _retrieve(self, request, fetch, clock, result) -> None:
        cfg, k, filters = self.config, request.k, request.filters
        size = min(cfg.max_fetch, math.ceil(k * cfg.overfetch) + len(filters.exclude_ids))
        allowed: Dict[str, bool] = {}
        variants = MODE_VARIANTS[request.mode]
        merged: List[RecommendedItem] = []
        while True:
            remaining = clock.remaining()
            if remaining <= 0:
                result.degrade("budget_exhausted")
                if result.fetch_rounds == 0:
                    return self._fallback(request, clock, result)
                break
            since = time.perf_counter()
            try:
                candidates = fetch(size, min(cfg.model_timeout_s, remaining))
            except ModelVersionNotFound as e:
                # The stored embedding's version was retired between its offset and its
                # search (the offset was cached): as when the offset call says so.
                clock.add("model", since)
                if result.fetch_rounds == 0 and getattr(fetch, "pinned", False):
                    log.info("stored embedding of %r unusable: %s", request.user_id, e)
                    if request.events:
                        fetch, result.user_embedding = self._encode_fetcher(request), "encoded"
                        continue
                    result.degrade("stored_embedding_unusable")
                    return self._fallback(request, clock, result)
                result.degrade("refetch_failed" if result.fetch_rounds else "model_unavailable")
                if result.fetch_rounds == 0:
                    return self._fallback(request, clock, result)
                break
            except ModelUnavailable as e:
                clock.add("model", since)
                reason = "model_timeout" if isinstance(e, ModelTimeout) else "model_unavailable"
                if result.fetch_rounds == 0:
                    _log_failure("model call failed, popularity fallback: %s", e)
                    result.degrade(reason)
                    return self._fallback(request, clock, result)
                result.degrade("refetch_failed")
                break
            clock.add("model", since)
            if not all(math.isfinite(x) for v in candidates.scores.values() for x in v):
                # A model that answers NaN or infinite scores has no ranking to give.
                log.warning("model answered non-finite scores, popularity fallback")
                if result.fetch_rounds == 0:
                    result.degrade("model_unavailable")
                    return self._fallback(request, clock, result)
                result.degrade("refetch_failed")
                break
            result.fetch_rounds += 1
            result.model_version = candidates.model_version or result.model_version
            if candidates.model_version and not getattr(fetch, "pinned", False):
                self._last_version = candidates.model_version
            fresh = [i for v in variants for i in candidates.ids.get(v, ())
                     if i not in allowed]
            fresh = list(dict.fromkeys(fresh))
            for item_id in fresh:
                allowed[item_id] = item_id not in filters.exclude_ids
            if fresh and filters.has_catalog_constraints:
                checked = [i for i in fresh if allowed[i]]
                passing = self._filter(checked, filters, clock, result)
                for item_id in checked:
                    allowed[item_id] = item_id in passing
            result.candidates_checked = len(allowed)
            merged = self._merge(request, candidates, allowed)
            if (len(merged) >= k or candidates.exhausted or size >= cfg.max_fetch
                    or result.filter_status == "fail_closed"):
                break
            size = min(cfg.max_fetch, math.ceil(size * cfg.growth))
        result.items = merged
        if len(merged) < k and result.filter_status != "fail_closed":
            self._backfill(request, clock, result)

    def _filter(self, ids: List[str], filters: Filters, clock, result) -> set:
        """The ids of ``ids`` that pass ``filters``: from the filter backend, or -- when it
        is down, slow or resting after a failure -- as ``filter_failure`` says."""
        cfg = self.config
        since = time.perf_counter()
        try:
            if result.filter_status not in ("ok", "skipped"):
                raise FilterUnavailable("failed earlier in this request")
            passing = set(self.filter_breaker.call(
                self.filter_backend.filter, ids, filters,
                timeout_s=min(cfg.filter_timeout_s, max(clock.remaining(), 0.0))))
            result.filter_status = "ok"
            return passing
        except (FilterUnavailable, pybreaker.CircuitBreakerError) as e:
            if isinstance(e, FilterUnavailable) and result.filter_status in ("ok", "skipped"):
                _log_failure(f"filter backend {self.filter_backend.name} unavailable "
                             f"({cfg.filter_failure}): %s", e)
            if cfg.filter_failure == "snapshot" and self.snapshot is not None:
                result.filter_status = "snapshot"  # the rules hold: applied in-process
                return set(self.snapshot.filter(ids, filters))
            result.degrade("filter_unavailable")
            result.filter_status = f"fail_{cfg.filter_failure}"
            return set(ids) if cfg.filter_failure == "open" else set()
        finally:
            clock.add("filter", since)

    def _backfill(self, request, clock, result) -> None:
        """Fill the answer up to ``k`` with the popular items that pass the request's filters
        (the index returns a fixed top K; strict filters can use it up)."""
        if self.popularity is None:
            return
        since = time.perf_counter()
        taken = frozenset(i.item_id for i in result.items)
        filters = dataclasses.replace(request.filters,
                                      exclude_ids=request.filters.exclude_ids | taken)
        extra = self.popularity.top(request.k - len(result.items), filters)
        result.items = result.items + [RecommendedItem(i, s, "popularity") for i, s in extra]
        result.backfilled = len(extra)
        clock.add("popularity", since)

    @staticmethod
    def _merge(request, candidates: Candidates, allowed: Mapping[str, bool]):
        lists = {v: [(i, s) for i, s in zip(candidates.ids.get(v, ()),
                                             candidates.scores.get(v, ()))
                     if allowed.get(i)] for v in MODE_VARIANTS[request.mode]}
        k = request.k
        if request.mode == "rr":
            merged = round_robin(lists["gi"], lists["ni"], k, key=lambda pair: pair[0])
            return [RecommendedItem(i, s, ("gi", "ni")[w]) for (i, s), w in merged]
        (variant, ranked), = lists.items()
        unique = list(dict.fromkeys(i for i, _ in ranked))  # defensive: an index row is a set
        scores = dict(reversed(ranked))
        return [RecommendedItem(i, scores[i], variant) for i in unique[:k]]

    # ------------------------------------------------------------------ popularity
    def _popular(self, request, clock, result) -> None:
        since = time.perf_counter()
        if self.popularity is not None:
            result.items = [RecommendedItem(i, s, "popularity")
                            for i, s in self.popularity.top(request.k, request.filters)]
            result.filter_status = "local" if request.filters.has_catalog_constraints \
                else "skipped"
        clock.add("popularity", since)

    def _fallback(self, request, clock, result) -> None:
        result.model_version = None
        if self.popularity is None:
            result.degrade("no_fallback")
        self._popular(request, clock, result)


__all__ = ["Recommender", "RecommenderConfig", "RecommendationRequest", "Recommendation",
           "RecommendedItem", "served_version", "MODES", "FILTER_FAILURE_MODES"]
