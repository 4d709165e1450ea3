"""Prometheus metrics on the REST port (TF Serving's ``--monitoring_config_file``).

With ``prometheus_config { enable: true }`` the REST server answers ``GET <path>``
(default ``/monitoring/prometheus/metrics``) with the Prometheus text format, as TF
Serving's ``PrometheusExporter`` does, and the metrics carry TF Serving's names and labels
(servables/tensorflow/util.cc, recorded where http_server.cc and
prediction_service_impl.cc record them):

* ``:tensorflow:serving:request_count{model_name, status}``: every REST request under
  ``/v1/`` and every gRPC Predict/Classify/Regress, by canonical status ("OK",
  "NOT_FOUND", ...);
* ``:tensorflow:serving:request_latency{model_name, API, entrypoint}``: wall time in
  microseconds of the successful ones (API: ``predict``/``classify``/``regress`` or "" for
  REST, ``Predict``/... for gRPC; entrypoint ``REST``/``GRPC``), TF Serving's buckets
  (10 µs x 1.8^i, 33 of them);
* ``stars_model_server_version_state{model_name, version, state}``: 1 for each version's
  current state (START/LOADING/AVAILABLE/UNLOADING/END), read from the registry when
  scraped -- TF Serving has no such metric; it says which versions are loaded.

prometheus_client writes counters with its ``_total`` suffix
(``:tensorflow:serving:request_count_total``).
"""
from __future__ import annotations

import re
import time
import urllib.parse
from typing import Optional

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS_US = tuple(10.0 * 1.8 ** i for i in range(33)) + (float("inf"),)
_REST_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:/versions/\d+|/labels/[^/:]+)?(?::(classify|regress|predict))?"
    r"(?:/metadata)?", re.IGNORECASE)
# The gRPC methods TF Serving records (prediction_service_impl.cc), with its API names.
GRPC_APIS = {f"/tensorflow.serving.PredictionService/{api}": api
             for api in ("Predict", "Classify", "Regress")}


class _VersionStates:
    """Collects every model's version states from the registry at scrape time."""

    def __init__(self, models):
        self.models = models

    def collect(self):
        family = GaugeMetricFamily("stars_model_server_version_state",
                                   "1 for the current state of each model version",
                                   labels=["model_name", "version", "state"])
        for name in self.models.names():
            versions = self.models.get(name)
            if versions is None:
                continue
            for version, state in sorted(versions.states().items()):
                family.add_metric([name, str(version), state], 1)
        yield family


class Metrics:
    """The request metrics of one server, in their own registry (several servers in one
    process, as in the tests, do not share counts)."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, path: str, models=None):
        self.path = path
        self.registry = CollectorRegistry(auto_describe=True)
        self.request_count = Counter(
            ":tensorflow:serving:request_count", "The total number of requests.",
            ["model_name", "status"], registry=self.registry)
        self.request_latency = Histogram(
            ":tensorflow:serving:request_latency",
            "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
            ["model_name", "API", "entrypoint"], buckets=LATENCY_BUCKETS_US,
            registry=self.registry)
        if models is not None:
            self.registry.register(_VersionStates(models))

    def serves(self, raw_path: str) -> bool:
        """Whether a request for ``raw_path`` (path and query) is the metrics page."""
        return urllib.parse.urlsplit(raw_path).path == self.path

    def page(self) -> bytes:
        return generate_latest(self.registry)

    def record(self, model_name: str, api: str, entrypoint: str, code: grpc.StatusCode,
               seconds: float) -> None:
        """One request: its count by status; its latency when it succeeded."""
        self.request_count.labels(model_name, code.name).inc()
        if code == grpc.StatusCode.OK:
            self.request_latency.labels(model_name, api, entrypoint).observe(seconds * 1e6)

    def record_rest(self, method: str, raw_path: str, code: grpc.StatusCode,
                    seconds: float) -> None:
        """A REST request, named from its path as TF Serving's ``ParseModelInfo`` does
        (model "" when the path names none; API "" for status and metadata)."""
        match = _REST_PATH.fullmatch(urllib.parse.urlsplit(raw_path).path)
        model = urllib.parse.unquote(match.group(1)) if match else ""
        api = (match.group(2) or "").lower() if match and method == "POST" else ""
        self.record(model, api, "REST", code, seconds)


class MetricsInterceptor(grpc.ServerInterceptor):
    """Counts and times gRPC Predict/Classify/Regress calls (other methods pass through)."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        api = GRPC_APIS.get(handler_call_details.method)
        if handler is None or api is None or handler.unary_unary is None:
            return handler
        inner, metrics = handler.unary_unary, self.metrics

        def timed(request, context):
            started = time.perf_counter()
            code: Optional[grpc.StatusCode] = None
            try:
                response = inner(request, context)
                code = context.code() or grpc.StatusCode.OK
                return response
            except BaseException:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            finally:
                name = request.model_spec.name if request.HasField("model_spec") else ""
                metrics.record(name, api, "GRPC", code or grpc.StatusCode.UNKNOWN,
                               time.perf_counter() - started)

        return grpc.unary_unary_rpc_method_handler(
            timed, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)


__all__ = ["Metrics", "MetricsInterceptor", "LATENCY_BUCKETS_US", "GRPC_APIS"]
