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
from typing import Callable, Dict, Optional, Tuple

from serving.sidecar.filters import parse_filters
from serving.sidecar.model_client import Event
from serving.sidecar.recommender import MODES, RecommendationRequest, Recommender
from serving.sidecar.validation import (
    RequestError,
    check_object,
    get_int,
    get_number,
    get_string,
    type_name,
)
from stars.data.contract import _EVENT_ALIASES, EVENT_TYPES

log = logging.getLogger(__name__)

RECOMMENDATIONS_PATH = "/v1/recommendations"
OPENAPI_PATH = os.path.join(os.path.dirname(__file__), "openapi.yaml")
REQUEST_FIELDS = ("user_id", "events", "k", "mode", "filters", "context", "user_features")
EVENT_FIELDS = ("item_id", "event_type", "timestamp")
CONTEXT_FIELDS = ("timestamp", "signals")
MAX_TIMESTAMP = 4_102_444_800  # 2100-01-01
MAX_FEATURE = 1e9  # |numeric user feature|: finite and float32-safe after normalisation
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


# ---------------------------------------------------------------------------- parsing

def _timestamp(value, field: str) -> int:
    if isinstance(value, str):
        try:
            moment = datetime.datetime.fromisoformat(value)
        except ValueError:
            raise RequestError(f"'{field}' must be unix seconds or an ISO-8601 time, got "
                               f"{value!r}", field) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.timezone.utc)
        value = int(moment.timestamp())
        if not 0 <= value <= MAX_TIMESTAMP:
            raise RequestError(f"'{field}' is out of range", field)
        return value
    return get_int({"v": value}, "v", field, 0, MAX_TIMESTAMP)


def _events(value, config: ApiConfig, now: int) -> Tuple[Event, ...]:
    if not isinstance(value, list):
        raise RequestError(f"'events' must be an array, got {type_name(value)}", "events")
    if len(value) > config.max_events:
        raise RequestError(f"'events' has {len(value)} entries; at most {config.max_events} "
                           "are allowed (send the most recent ones)", "events")
    events = []
    for n, raw in enumerate(value):
        field = f"events[{n}]"
        obj = check_object(raw, field, EVENT_FIELDS)
        item_id = get_string(obj, "item_id", f"{field}.item_id", required=True)
        kind = get_string(obj, "event_type", f"{field}.event_type", max_len=32) or "view"
        canonical = _EVENT_ALIASES.get(kind.strip().lower())
        if canonical is None:
            raise RequestError(f"'{field}.event_type' must be one of {', '.join(EVENT_TYPES)}, "
                               f"got {kind!r}", f"{field}.event_type")
        stamp = now if obj.get("timestamp") is None else _timestamp(obj["timestamp"],
                                                                     f"{field}.timestamp")
        events.append(Event(item_id, canonical, stamp))
    return tuple(sorted(events, key=lambda e: e.timestamp))  # oldest first (stable)


def _signals(value, config: ApiConfig) -> Tuple[float, ...]:
    if value is None:
        return ()
    obj = check_object(value, "context.signals", config.signal_names)
    out = [0.0] * len(config.signal_names)
    for i, name in enumerate(config.signal_names):
        v = obj.get(name)
        if v is None:
            continue
        field = f"context.signals.{name}"
        if isinstance(v, bool):
            out[i] = 1.0 if v else 0.0
        elif isinstance(v, (int, float)) and -1e6 <= v <= 1e6:
            out[i] = float(v)
        else:
            raise RequestError(f"'{field}' must be a number (|x| <= 1e6) or a boolean, got "
                               f"{type_name(v)}", field)
    return tuple(out)


def _user_features(value, config: ApiConfig) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RequestError(f"'user_features' must be an object, got {type_name(value)}",
                           "user_features")
    if len(value) > config.max_user_features:
        raise RequestError(f"'user_features' has {len(value)} entries; at most "
                           f"{config.max_user_features} are allowed", "user_features")
    out = {}
    for name, v in value.items():
        field = f"user_features.{name}"
        if len(name) > 64:
            raise RequestError("user feature names are at most 64 characters", field)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float, str)):
            raise RequestError(f"'{field}' must be a number or a string, got {type_name(v)}",
                               field)
        if isinstance(v, str):
            if len(v) > 256:
                raise RequestError(f"'{field}' is longer than 256 characters", field)
            out[name] = v
        else:
            out[name] = get_number({"v": v}, "v", field, -MAX_FEATURE, MAX_FEATURE)
    return out


def parse_request(body, config: ApiConfig = ApiConfig(),
                  now: Optional[int] = None) -> RecommendationRequest:
    """A decoded JSON body -> RecommendationRequest (RequestError when invalid)."""
    now = int(time.time()) if now is None else now
    obj = check_object(body, "", REQUEST_FIELDS) if isinstance(body, dict) else None
    if obj is None:
        raise RequestError(f"the request body must be a JSON object, got {type_name(body)}")
    if obj.get("user_id") is None and obj.get("events") is None:
        raise RequestError("give 'user_id' and/or 'events' (an empty array asks for popular "
                           "items)", "user_id")
    user_id = get_string(obj, "user_id", "user_id")
    k = get_int(obj, "k", "k", 1, config.max_k, default=config.default_k)
    mode = obj.get("mode", config.default_mode)
    if mode not in MODES:
        raise RequestError(f"'mode' must be one of {', '.join(MODES)}, got {mode!r}", "mode")
    context = ({} if obj.get("context") is None
               else check_object(obj["context"], "context", CONTEXT_FIELDS))
    timestamp = now if context.get("timestamp") is None else _timestamp(context["timestamp"],
                                                                         "context.timestamp")
    events = _events(obj["events"], config, timestamp) if obj.get("events") is not None else ()
    return RecommendationRequest(
        k=k, user_id=user_id, events=events, mode=mode, filters=parse_filters(obj.get("filters")),
        timestamp=timestamp, signals=_signals(context.get("signals"), config),
        user_features=_user_features(obj.get("user_features"), config))


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
        self.popularity_source = None  # a ModelPopularity keeping the ranking current
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
        checks, ready = {}, not draining
        checks["draining"] = draining
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
        return json_response(200 if ready else 503,
                             {"status": "ready" if ready else "not_ready", "pid": os.getpid(),
                              "checks": checks})


__all__ = ["ApiConfig", "SidecarApp", "parse_request", "decode_json", "Metrics", "ROUTES",
           "RECOMMENDATIONS_PATH", "OPENAPI_PATH", "json_response", "error_response"]
