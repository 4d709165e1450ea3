"""The sidecar's API without a transport (``openapi.yaml`` is its contract; the HTTP
layer is ``asgi.py``, the server ``server.py``).

* ``POST /v1/recommendations``: a request as in the spec -> ids, scores, which
  embedding produced each, model version, degraded flags, latency per hop;
* ``GET /healthz`` (the process answers; with its pid, as several processes may share
  the port), ``GET /readyz`` (the model server answers
  with an available version and the process is not draining; every backend's state is
  reported, the filter backend's required only with ``require_filter_ready``),
  ``GET /metrics`` (Prometheus text format), ``GET /openapi.yaml``.

Bad input is always a 4xx with ``{"error": {"code", "message", "field"}}``: malformed
JSON or UTF-8 (400), unknown fields (400), out-of-range or non-finite values (400).
``k``, the events, filters and user features are bounded.  An unexpected exception is
logged and answered 500 (counted in the metrics); the tests feed malformed input to
prove it does not happen.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
import time
from typing import Any, Callable, Dict, Optional, Tuple

from serving.sidecar.filters import filters_from_checked
from serving.sidecar.model_client import Event
from serving.sidecar.recommender import RecommendationRequest, Recommender
from serving.sidecar.validation import OPENAPI_PATH, Limits, RequestError, check, validator
from stars.data.contract import _EVENT_ALIASES, EVENT_TYPES

log = logging.getLogger(__name__)

RECOMMENDATIONS_PATH = "/v1/recommendations"
MAX_TIMESTAMP = 4_102_444_800  # 2100-01-01, as in openapi.yaml
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.035, 0.05,
                   0.075, 0.1, 0.25, 0.5, 1.0)


@dataclasses.dataclass(frozen=True)
class ApiConfig:
    max_k: int = 200
    default_k: int = 10
    max_events: int = 200
    max_body_bytes: int = 64 * 1024
    body_timeout_s: float = 5.0    # the whole body must arrive within this
    max_inflight: int = 64         # recommendations in progress per process; more get 429
    admission: str = "adaptive"    # adaptive: fewer while answers are late | fixed
    latency_target_s: float = 0.0  # the adaptive limit's target (0: half the budget)
    threads: int = 16              # recommendation flows run at once per process
    max_user_features: int = 64
    signal_names: Tuple[str, ...] = ("event", "weather", "promotion", "extra")
    default_mode: str = "rr"
    require_filter_ready: bool = False
    ready_timeout_s: float = 1.0

    @property
    def limits(self) -> Limits:
        """The bounds openapi.yaml's request schema is checked with."""
        return Limits(max_k=self.max_k, default_k=self.default_k, max_events=self.max_events,
                      max_user_features=self.max_user_features, signal_names=self.signal_names)


# ---------------------------------------------------------------------------- parsing
# The request is checked against openapi.yaml first (validation.check); what follows only
# converts, plus the checks a schema cannot express (ISO-8601 times, event-type aliases).

def _timestamp(value, field: str) -> int:
    if not isinstance(value, str):
        return int(value)
    try:
        moment = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise RequestError(f"'{field}' must be unix seconds or an ISO-8601 time, got "
                           f"{value!r}", field) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    seconds = int(moment.timestamp())
    if not 0 <= seconds <= MAX_TIMESTAMP:
        raise RequestError(f"'{field}' must be between 0 and {MAX_TIMESTAMP} (unix seconds), "
                           f"got {value!r}", field)
    return seconds


def _events(value: list, now: int) -> Tuple[Event, ...]:
    events = []
    for n, obj in enumerate(value):
        field = f"events[{n}]"
        kind = obj.get("event_type") or "view"
        canonical = _EVENT_ALIASES.get(kind.strip().lower())
        if canonical is None:
            raise RequestError(f"'{field}.event_type' must be one of {', '.join(EVENT_TYPES)}, "
                               f"got {kind!r}", f"{field}.event_type")
        stamp = now if obj.get("timestamp") is None else _timestamp(obj["timestamp"],
                                                                     f"{field}.timestamp")
        events.append(Event(obj["item_id"], canonical, stamp))
    return tuple(sorted(events, key=lambda e: e.timestamp))  # oldest first (stable)


def _signals(value: Optional[dict], names: Tuple[str, ...]) -> Tuple[float, ...]:
    """Booleans are 1/0; missing signals 0 (the model's context_signals slots, in order)."""
    if value is None:
        return ()
    return tuple(float(value.get(name) or 0.0) for name in names)


def _user_features(value: Optional[dict]) -> dict:
    out = {}
    for name, v in (value or {}).items():
        if v is not None:
            out[name] = v if isinstance(v, str) else float(v)
    return out


def parse_request(body, config: ApiConfig = ApiConfig(),
                  now: Optional[int] = None) -> RecommendationRequest:
    """A decoded JSON body -> RecommendationRequest (RequestError when invalid)."""
    check("RecommendationRequest", body, config.limits)
    now = int(time.time()) if now is None else now
    context = body.get("context") or {}
    timestamp = now if context.get("timestamp") is None else _timestamp(context["timestamp"],
                                                                         "context.timestamp")
    events = _events(body["events"], timestamp) if body.get("events") is not None else ()
    return RecommendationRequest(
        k=int(body.get("k") or config.default_k), user_id=body.get("user_id"), events=events,
        mode=body.get("mode") or config.default_mode,
        filters=filters_from_checked(body.get("filters")), timestamp=timestamp,
        signals=_signals(context.get("signals"), config.signal_names),
        user_features=_user_features(body.get("user_features")))


def _reject_constant(name):
    raise ValueError(f"{name} is not valid JSON")


def decode_json(raw: bytes):
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError as e:
        raise RequestError(f"the body is not valid UTF-8 ({e.reason} at byte {e.start})",
                           code="malformed_json") from None
    except json.JSONDecodeError as e:
        raise RequestError(f"the body is not valid JSON: {e.msg} (line {e.lineno}, column "
                           f"{e.colno})", code="malformed_json") from None
    except (ValueError, RecursionError) as e:
        raise RequestError(f"the body is not valid JSON: {e}", code="malformed_json") from None


# ---------------------------------------------------------------------------- metrics

class Metrics:
    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Histogram
        self.registry = CollectorRegistry()
        self.requests = Counter("stars_sidecar_requests", "HTTP requests by endpoint and status",
                                ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("stars_sidecar_request_latency_seconds",
                                 "HTTP request latency (server side)", ["endpoint"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.hops = Histogram("stars_sidecar_hop_latency_seconds",
                              "latency of each hop of a recommendation", ["hop"],
                              buckets=LATENCY_BUCKETS, registry=self.registry)
        self.answers = Counter("stars_sidecar_recommendations",
                               "recommendation answers by user-embedding path and filter status",
                               ["user_embedding", "filter_status", "degraded"],
                               registry=self.registry)
        self.degraded = Counter("stars_sidecar_degraded", "degraded answers by reason",
                                ["reason"], registry=self.registry)
        self.short_answers = Counter("stars_sidecar_short_answers",
                                     "answers with fewer than k items", registry=self.registry)
        self.shed = Counter("stars_sidecar_shed", "requests refused with 429 (overload)",
                            registry=self.registry)
        self.fetch_rounds = Counter("stars_sidecar_fetch_rounds",
                                    "candidate fetch rounds (over-fetch + re-fetches)",
                                    registry=self.registry)

    def render(self) -> Tuple[bytes, str]:
        """This process's metrics; with several worker processes
        (``PROMETHEUS_MULTIPROC_DIR`` set, see ``server.py``) every worker's, summed."""
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
        registry = self.registry
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client.multiprocess import MultiProcessCollector
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST


# ---------------------------------------------------------------------------- app

Response = Tuple[int, Dict[str, str], bytes]


def json_response(status: int, body, extra: Optional[Dict[str, str]] = None) -> Response:
    headers = {"Content-Type": "application/json"}
    headers.update(extra or {})
    return status, headers, json.dumps(body, separators=(",", ":")).encode()


def error_response(e: RequestError, extra: Optional[Dict[str, str]] = None) -> Response:
    return json_response(e.status, e.to_json(), extra)


ROUTES = {RECOMMENDATIONS_PATH: ("recommendations", ("POST",)),
          "/healthz": ("healthz", ("GET",)), "/readyz": ("readyz", ("GET",)),
          "/metrics": ("metrics", ("GET",)), "/openapi.yaml": ("openapi", ("GET",))}


class SidecarApp:
    """What the endpoints answer, given a decoded transport (``asgi.py`` routes to it)."""

    def __init__(self, recommender: Recommender, config: ApiConfig = ApiConfig(),
                 clock: Callable[[], float] = time.time):
        self.recommender, self.config, self.clock = recommender, config, clock
        validator("RecommendationRequest", config.limits)  # compiled now, not on request 1
        # what keeps the ranking current (cli.build_app sets it): a ModelPopularity, or
        # a ReleaseFollower, which switches the catalogue and model version with it
        self.popularity_source: Optional[Any] = None
        self.metrics = Metrics()
        try:
            with open(OPENAPI_PATH, "rb") as f:
                self.openapi: Optional[bytes] = f.read()
        except OSError:  # an install without package data: the API still works
            log.warning("%s not found; GET /openapi.yaml will answer 404", OPENAPI_PATH)
            self.openapi = None

    def recommendations(self, raw: bytes, arrival: float) -> Response:
        """``raw``: the JSON body; ``arrival``: ``time.perf_counter()`` when the request
        arrived -- the request's budget counts from there, queueing included."""
        request = parse_request(decode_json(raw), self.config, now=int(self.clock()))
        parsed = time.perf_counter()
        result = self.recommender.recommend(request, started=arrival)
        body = result.to_json()
        body["latency_ms"] = {"parse": round((parsed - arrival) * 1000, 3),
                              **body["latency_ms"]}
        m = self.metrics
        m.answers.labels(result.user_embedding, result.filter_status,
                         str(result.degraded).lower()).inc()
        for reason in result.degraded_reasons:
            m.degraded.labels(reason).inc()
        if result.short_answer:
            m.short_answers.inc()
        m.fetch_rounds.inc(result.fetch_rounds)
        for hop, ms in result.latency_ms.items():
            if hop != "total":
                m.hops.labels(hop).observe(ms / 1000.0)
        return json_response(200, body)

    def readyz(self, draining: bool = False) -> Response:
        """Ready: the model server has an available version and the process is not draining.
        Every backend's state is reported; the filter backend is required only with
        ``require_filter_ready`` (the catalogue snapshot answers while it is down)."""
        checks: Dict[str, Any] = {"draining": draining}
        ready = not draining
        rec = self.recommender
        try:
            version = rec.model.model_version(timeout_s=self.config.ready_timeout_s)
            checks["model"] = {"ok": version is not None, "version": version}
        except Exception as e:  # any failure of the probe is "not ready"
            checks["model"] = {"ok": False, "error": str(e)[:200]}
        ready &= checks["model"]["ok"]
        try:
            filter_ok = bool(rec.filter_backend.ready())
        except Exception:
            filter_ok = False
        checks["filter"] = {"ok": filter_ok, "backend": rec.filter_backend.name,
                            "breaker": rec.filter_breaker.current_state,
                            "failure_mode": rec.config.filter_failure,
                            "required": self.config.require_filter_ready}
        if self.config.require_filter_ready:
            ready &= filter_ok
        if rec.user_store is not None:
            checks["user_store"] = {"ok": rec.store_breaker.current_state != "open",
                                    "breaker": rec.store_breaker.current_state}
        checks["popularity"] = {"ok": rec.popularity is not None,
                                "source": getattr(rec.popularity, "source", None)}
        if self.popularity_source is not None and self.popularity_source.error:
            checks["popularity"]["error"] = self.popularity_source.error
        status = getattr(self.popularity_source, "status", None)  # a ReleaseFollower
        if status is not None:
            checks["release"] = status()
        return json_response(200 if ready else 503,
                             {"status": "ready" if ready else "not_ready", "pid": os.getpid(),
                              "checks": checks})


__all__ = ["ApiConfig", "SidecarApp", "parse_request", "decode_json", "Metrics", "ROUTES",
           "RECOMMENDATIONS_PATH", "OPENAPI_PATH", "json_response", "error_response"]
