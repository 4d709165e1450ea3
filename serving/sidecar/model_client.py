"""Clients of the served STARS model (TF Serving, or any server with its REST/gRPC APIs).

The signatures used (see ``models/serving.py``):

* ``search``: ``query_embeddings`` [B, D] -> ``ids``/``scores`` [B, K]: the index alone,
  for user embeddings stored by the batch job (one row per variant: GI = h_gen,
  NI = h_next); ``search_after_items`` takes each row's latest items as well
  (``history_item_ids``; the NI row gets the user's, the GI row none), so NI merges the
  model's successor source: used when the store kept the items and the model has it;
* ``recommend_with_context``: the recent events plus region, ``context_signals`` and
  the static user features -> ``gi_*`` / ``ni_*`` [B, K] (encode + offset + index in
  one call); ``recommend`` (events only) when the model's metadata cannot be read;
* ``context_offset``: ``request_timestamp`` [B], ``context_signals`` [B, S] -> ``offset``
  [B, D], added to stored (context-free) embeddings.

Both clients take a per-call deadline (``timeout_s``) and raise :class:`ModelTimeout`
when it passes and :class:`ModelUnavailable` for any other failure (connection refused,
error status, unreadable answer), so the caller can fall back.  The model version of
every answer is reported: gRPC answers carry it in ``model_spec``; the REST client
pins each call to the newest AVAILABLE version from the status API (cached for
``status_ttl_s``, re-read when that version disappears).

With a ``version_label`` (a label of the server's model config, e.g. ``stable``), the
calls not pinned to a stored embedding's version ask for that label instead of the latest
version (gRPC ``model_spec.version_label``, REST ``/labels/L``), so moving the label in the
config moves the sidecar.  ``model_version`` is then the label's version, read from the
metadata by label (TF Serving's status ignores labels); the REST client reports that
version, cached for ``status_ttl_s``, for its label calls.

Served indexes return a fixed K (the one exported); asking for more than K gives K,
which callers see as ``Candidates.exhausted``.
"""
from __future__ import annotations

import dataclasses
import json
import math
import threading
import time
from typing import Any, Dict, List, Mapping, Optional, Protocol, Sequence, Tuple, Union

import numpy as np

VARIANTS = ("gi", "ni")  # GI: general interest (h_gen); NI: next item (h_next)
EMBEDDING_OF = {"gi": "h_gen", "ni": "h_next"}
DEFAULT_NUM_SIGNALS = 4


class ModelUnavailable(RuntimeError):
    """The model server could not answer."""


class ModelTimeout(ModelUnavailable):
    """The model server did not answer before the deadline."""


class ModelVersionNotFound(ModelUnavailable):
    """The server answers but does not serve the pinned version (any more)."""


class MetadataUnsupported(ModelUnavailable):
    """The model server answers but gives no signature metadata."""


@dataclasses.dataclass(frozen=True)
class Event:
    item_id: str
    event_type: str = "view"
    timestamp: int = 0


@dataclasses.dataclass(frozen=True)
class ModelContext:
    """What the model knows about the request besides the events."""
    timestamp: int
    signals: Tuple[float, ...] = ()
    region: str = ""
    user_features: Mapping[str, object] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Candidates:
    """Ranked ids and scores per variant (``gi``/``ni``), as the index returned them."""
    ids: Dict[str, List[str]]
    scores: Dict[str, List[float]]
    model_version: Optional[str]
    requested_k: int

    @property
    def exhausted(self) -> bool:
        """Asking for more is useless: the server returned fewer than asked for every
        variant, or more than asked for one (a served index answers its fixed top K
        whatever is asked: asking again returns the same rows)."""
        lengths = [len(v) for v in self.ids.values()]
        return all(n < self.requested_k for n in lengths) or \
            any(n > self.requested_k for n in lengths)


@dataclasses.dataclass(frozen=True)
class SignatureInfo:
    """What the client needs to know about the served signatures (from the metadata API)."""
    has_context: bool = False
    num_signals: int = DEFAULT_NUM_SIGNALS
    user_numeric: Tuple[str, ...] = ()
    user_categorical: Tuple[str, ...] = ()
    query_dim: Optional[int] = None
    search_after_items: bool = False

    @classmethod
    def from_signature_defs(cls, defs: Mapping) -> "SignatureInfo":
        """``defs``: signature name -> SignatureDef as JSON (proto field names)."""
        with_context = defs.get("recommend_with_context")
        after_items = "search_after_items" in defs
        if not with_context:
            return cls(query_dim=_dim(defs.get("search"), "query_embeddings", 1),
                       search_after_items=after_items)
        names = list(with_context.get("inputs", {}))
        return cls(has_context=True, search_after_items=after_items,
                   num_signals=_dim(with_context, "context_signals", 1) or DEFAULT_NUM_SIGNALS,
                   user_numeric=tuple(sorted(n[len("user_num_"):] for n in names
                                             if n.startswith("user_num_"))),
                   user_categorical=tuple(sorted(n[len("user_cat_"):] for n in names
                                                 if n.startswith("user_cat_"))),
                   query_dim=_dim(defs.get("search"), "query_embeddings", 1))


def _dim(signature: Optional[Mapping], tensor: str, axis: int) -> Optional[int]:
    if signature is None:
        return None
    try:
        size = int(signature["inputs"][tensor]["tensor_shape"]["dim"][axis]["size"])
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    return size if size > 0 else None


class ModelClient(Protocol):
    def search(self, queries: Mapping[str, Union[Sequence[float], np.ndarray]], k: int,
               timeout_s: Optional[float] = None, version: Optional[str] = None,
               latest_items: Sequence[str] = ()) -> Candidates:
        """Top-k per query embedding; ``queries``: variant -> [D] vector; NI also merges
        what followed ``latest_items`` (oldest first) when the model can."""

    def recommend(self, events: Sequence[Event], context: ModelContext, k: int,
                  timeout_s: Optional[float] = None) -> Candidates:
        """Encode the events (plus context) and retrieve GI and NI candidates."""

    def context_offset(self, timestamp: int, signals: Sequence[float],
                       timeout_s: Optional[float] = None,
                       version: Optional[str] = None) -> Tuple[np.ndarray, Optional[str]]:
        """Δ_ctx [D] for the request context, and the version that computed it."""

    def model_version(self, timeout_s: Optional[float] = None) -> Optional[str]:
        """The newest available version (None when none is)."""


# ---------------------------------------------------------------------------- inputs

def _signals(signals: Sequence[float], width: int) -> List[float]:
    values = [float(s) for s in signals][:width]
    return values + [0.0] * (width - len(values))


LATEST_ITEMS_WIDTH = 8  # the batch job keeps a user's last 8 items


def padded_length(n: int, smallest: int = 8) -> int:
    """The history length a call is padded to: the next power of two (at least
    ``smallest``).  The model ignores "" items; calls of equal shapes can be merged by a
    batching model server (TF Serving's batching only merges equal shapes)."""
    return max(smallest, 1 << max(0, n - 1).bit_length())


def recommend_inputs(events: Sequence[Event], context: ModelContext,
                     info: SignatureInfo) -> Tuple[str, dict]:
    """(signature name, inputs) for the encode path; inputs: name -> (dtype, nested list).
    The history is padded with "" items to :func:`padded_length` (an empty history is
    all padding: the model answers from [USER] and the context)."""
    pad = padded_length(len(events)) - len(events)
    ids = [[e.item_id for e in events] + [""] * pad]
    types = [[e.event_type for e in events] + [""] * pad]
    stamps = [[int(e.timestamp) for e in events] + [0] * pad]
    inputs = {"history_item_ids": ("string", ids), "history_event_types": ("string", types),
              "history_timestamps": ("int64", stamps),
              "request_timestamp": ("int64", [int(context.timestamp)])}
    if not info.has_context:
        return "recommend", inputs
    inputs["region"] = ("string", [context.region or ""])
    inputs["context_signals"] = ("float", [_signals(context.signals, info.num_signals)])
    features = context.user_features or {}
    for name in info.user_numeric:
        value = features.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            inputs[f"user_num_{name}"] = ("float", [float(value)])
        else:
            inputs[f"user_num_{name}"] = ("float", [math.nan])
    for name in info.user_categorical:
        value = features.get(name)
        inputs[f"user_cat_{name}"] = ("string", [value if isinstance(value, str) else ""])
    return "recommend_with_context", inputs


def _clean(ids, scores) -> Tuple[List[str], List[float]]:
    """Drops padding ("" ids, infinite scores) from one row; a NaN score is no ranking at
    all (ValueError)."""
    out_ids, out_scores = [], []
    for i, s in zip(ids, scores):
        i = i.decode() if isinstance(i, bytes) else str(i)
        s = float(s)
        if math.isnan(s):
            raise ValueError(f"NaN score for {i!r}")
        if i and math.isfinite(s):
            out_ids.append(i)
            out_scores.append(s)
    return out_ids, out_scores


def _candidates(outputs: Mapping, rows: Mapping[str, Tuple[str, str, int]], k: int,
                version: Optional[str]) -> Candidates:
    ids, scores = {}, {}
    for variant, (id_key, score_key, row) in rows.items():
        try:
            ids[variant], scores[variant] = _clean(outputs[id_key][row], outputs[score_key][row])
        except (KeyError, IndexError, TypeError, ValueError) as e:
            raise ModelUnavailable(f"unexpected answer from the model server: missing or "
                                   f"malformed '{id_key}'/'{score_key}' ({e})") from e
    return Candidates(ids, scores, version, k)


class _BaseClient:
    """The signature logic shared by both transports; subclasses implement ``_predict``,
    ``_status`` and ``_metadata``."""

    def __init__(self, model_name: str, timeout_s: float, version_label: Optional[str] = None):
        self.model_name, self.timeout_s = model_name, timeout_s
        self.version_label = version_label or None
        # The model version of the release being served (``serving.sidecar.release``):
        # calls not pinned to a stored embedding's version ask for it, not the newest.
        self.release_version: Optional[str] = None
        self._info: Optional[SignatureInfo] = None
        self._info_version: Optional[str] = None
        self._info_failed_at = -math.inf
        self._lock = threading.Lock()

    def _timeout(self, timeout_s: Optional[float]) -> float:
        t = self.timeout_s if timeout_s is None else timeout_s
        if t <= 0:
            raise ModelTimeout("no time left for the model call")
        return t

    METADATA_RETRY_S = 30.0

    def signature_info(self, timeout_s: Optional[float] = None) -> SignatureInfo:
        """Cached per model version; when the metadata cannot be read, the context-free
        defaults (the ``recommend`` signature), retried after ``METADATA_RETRY_S``."""
        info = self._info
        if info is not None:
            return info
        if time.monotonic() - self._info_failed_at < self.METADATA_RETRY_S:
            return SignatureInfo()
        try:
            info = SignatureInfo.from_signature_defs(self._metadata(self._timeout(timeout_s)))
        except MetadataUnsupported:
            self._info_failed_at = time.monotonic()
            return SignatureInfo()
        self._info = info
        return info

    def use_release(self, version: Optional[str]) -> None:
        """Unpinned calls ask for ``version`` from now on (its signatures are re-read)."""
        with self._lock:
            if version != self.release_version:
                self.release_version = None if version is None else str(version)
                self._info, self._info_failed_at = None, -math.inf

    def _pin(self, version: Optional[str]) -> Optional[str]:
        """The version a call asks for: its own pin, else the release's (else None: the
        newest, or the version label's)."""
        return version if version is not None else self.release_version

    def _seen_version(self, version: Optional[str]) -> None:
        """A new model version may have other inputs: forget the cached signatures."""
        if version is not None and version != self._info_version:
            if self._info_version is not None:
                self._info = None
                self._info_failed_at = -math.inf
            self._info_version = version

    def search(self, queries, k, timeout_s=None, version=None, latest_items=()) -> Candidates:
        timeout = self._timeout(timeout_s)
        started = time.perf_counter()
        variants = list(queries)
        matrix = [[float(x) for x in np.asarray(queries[v], np.float32).reshape(-1)]
                  for v in variants]
        signature = "search"
        inputs: Dict[str, Tuple[str, List[Any]]] = {"query_embeddings": ("float", matrix)}
        if latest_items and "ni" in variants and self.signature_info(timeout).search_after_items:
            signature = "search_after_items"
            latest = list(latest_items)[-LATEST_ITEMS_WIDTH:]
            width = max(LATEST_ITEMS_WIDTH, len(latest))  # one shape for every call
            inputs["history_item_ids"] = ("string", [
                latest + [""] * (width - len(latest)) if v == "ni" else [""] * width
                for v in variants])
        def remaining():
            return self._timeout(timeout - (time.perf_counter() - started))
        try:
            version = self._pin(version)
            outputs, got_version = self._predict(signature, inputs, remaining(), version)
        except ModelUnavailable as e:
            # A version pinned by the store may predate the signature the newest one lists:
            # its answer is the index alone.
            if signature == "search" or isinstance(e, ModelTimeout) or signature not in str(e):
                raise
            outputs, got_version = self._predict(
                "search", {"query_embeddings": inputs["query_embeddings"]}, remaining(), version)
        return _candidates(outputs, {v: ("ids", "scores", r) for r, v in enumerate(variants)},
                           k, got_version)

    def recommend(self, events, context, k, timeout_s=None) -> Candidates:
        timeout = self._timeout(timeout_s)
        started = time.perf_counter()
        info = self.signature_info(timeout)
        signature, inputs = recommend_inputs(events, context, info)
        try:
            outputs, version = self._predict(
                signature, inputs, self._timeout(timeout - (time.perf_counter() - started)),
                self._pin(None))
        except ModelUnavailable as e:
            if info.has_context and ("INVALID_ARGUMENT" in str(e) or "HTTP 400" in str(e)):
                self._info = None  # the inputs changed with a new version: re-read metadata
            raise
        self._seen_version(version)
        return _candidates(outputs, {"gi": ("gi_ids", "gi_scores", 0),
                                     "ni": ("ni_ids", "ni_scores", 0)}, k, version)

    def context_offset(self, timestamp, signals, timeout_s=None, version=None):
        timeout = self._timeout(timeout_s)
        started = time.perf_counter()
        width = self.signature_info(timeout).num_signals
        timeout = self._timeout(timeout - (time.perf_counter() - started))
        outputs, got_version = self._predict(
            "context_offset", {"request_timestamp": ("int64", [int(timestamp)]),
                               "context_signals": ("float", [_signals(signals, width)])},
            timeout, self._pin(version))
        try:
            offset = np.asarray(outputs["offset"], np.float32)[0]
        except (KeyError, IndexError, TypeError, ValueError) as e:
            raise ModelUnavailable(f"unexpected context_offset answer ({e})") from e
        return offset, got_version

    def model_version(self, timeout_s=None) -> Optional[str]:
        """The version unpinned calls are answered by: the release's, else the newest
        AVAILABLE one (or the version label's)."""
        if self.release_version is not None:
            version = self.release_version
            if not self._available(version, self._timeout(timeout_s)):
                raise ModelUnavailable(f"the release's model version {version} is not "
                                       "AVAILABLE")
            return version
        return self._status(self._timeout(timeout_s))

    def popular_items(self, limit: int, timeout_s=None, version: Optional[str] = None):
        """The model's popularity ranking (its ``popular_items`` signature): up to ``limit``
        (ids, prior) pairs, most popular first, and the version that answered."""
        outputs, version = self._predict("popular_items", {"limit": ("int64", [int(limit)])},
                                         self._timeout(timeout_s), self._pin(version))
        try:
            ids, prior = _clean(outputs["ids"][0], outputs["prior"][0])
        except (KeyError, IndexError, TypeError, ValueError) as e:
            raise ModelUnavailable(f"unexpected popular_items answer ({e})") from e
        return list(zip(ids, prior)), version

    # transport hooks
    def _predict(self, signature: str, inputs: dict, timeout: float,
                 version: Optional[str]) -> Tuple[dict, Optional[str]]:
        raise NotImplementedError

    def _status(self, timeout: float) -> Optional[str]:
        raise NotImplementedError

    def _available(self, version: str, timeout: float) -> bool:
        """Whether the server reports ``version`` AVAILABLE."""
        raise NotImplementedError

    def _metadata(self, timeout: float) -> Mapping:
        raise NotImplementedError


def _newest_available(statuses) -> Optional[str]:
    versions = [int(s.get("version", 0)) for s in statuses
                if str(s.get("state", "")).upper() == "AVAILABLE"]
    return str(max(versions)) if versions else None


# ---------------------------------------------------------------------------- REST

class RestModelClient(_BaseClient):
    """TF Serving's REST API: ``POST /v1/models/NAME[/versions/V]:predict`` (columnar
    ``inputs``), ``GET /v1/models/NAME`` (status), ``GET .../metadata``."""

    SINGLE_OUTPUT = {"context_offset": "offset"}  # TF Serving omits the name of a lone output

    def __init__(self, base_url: str, model_name: str, timeout_s: float = 0.05,
                 status_ttl_s: float = 5.0, pool_size: int = 32,
                 version_label: Optional[str] = None):
        super().__init__(model_name, timeout_s, version_label)
        import urllib3
        self._urllib3 = urllib3
        self.base_url = base_url.rstrip("/")
        self.status_ttl_s = status_ttl_s
        self._http = urllib3.PoolManager(maxsize=pool_size, retries=False)
        self._version: Optional[str] = None
        self._version_at = -math.inf

    def _request(self, method: str, path: str, timeout: float, body: Optional[dict] = None):
        u3 = self._urllib3
        data = None if body is None else json.dumps(body).encode()
        try:
            response = self._http.request(
                method, self.base_url + path, body=data,
                headers={"Content-Type": "application/json"} if data else None,
                timeout=u3.Timeout(total=timeout), retries=False)
        except u3.exceptions.NewConnectionError as e:  # (a ConnectTimeoutError subclass)
            raise ModelUnavailable(f"model server unreachable: {e}") from e
        except u3.exceptions.TimeoutError as e:
            raise ModelTimeout(f"model server did not answer within {timeout * 1000:.0f} ms") from e
        except u3.exceptions.HTTPError as e:
            raise ModelUnavailable(f"model server unreachable: {e}") from e
        try:
            payload = json.loads(response.data) if response.data else {}
        except ValueError as e:
            raise ModelUnavailable(f"model server answered HTTP {response.status} with "
                                   "non-JSON") from e
        return response.status, payload

    def _label_path(self) -> str:
        from urllib.parse import quote
        return f"/v1/models/{self.model_name}/labels/{quote(str(self.version_label), safe='')}"

    def _status(self, timeout: float) -> Optional[str]:
        if self.version_label:  # the label's version: metadata by label names it
            status, payload = self._request("GET", self._label_path() + "/metadata", timeout)
            if status != 200:
                raise ModelUnavailable(f"model label {self.version_label!r}: HTTP {status}: "
                                       f"{payload.get('error', '')}")
            version = str((payload.get("model_spec") or {}).get("version") or "") or None
        else:
            status, payload = self._request("GET", f"/v1/models/{self.model_name}", timeout)
            if status != 200:
                raise ModelUnavailable(f"model status: HTTP {status}: {payload.get('error', '')}")
            version = _newest_available(payload.get("model_version_status", []))
        with self._lock:
            self._version, self._version_at = version, time.monotonic()
        return version

    def _available(self, version, timeout):
        status, payload = self._request(
            "GET", f"/v1/models/{self.model_name}/versions/{int(version)}", timeout)
        return status == 200 and _newest_available(
            payload.get("model_version_status", [])) == str(int(version))

    def _current_version(self, timeout: float) -> Optional[str]:
        if time.monotonic() - self._version_at < self.status_ttl_s:
            return self._version
        return self._status(timeout)

    def _metadata(self, timeout: float) -> Mapping:
        if self.release_version is not None:
            base = f"/v1/models/{self.model_name}/versions/{self.release_version}"
        elif self.version_label:
            base = self._label_path()
        else:
            base = f"/v1/models/{self.model_name}"
        status, payload = self._request("GET", base + "/metadata", timeout)
        if status in (404, 405, 501):
            raise MetadataUnsupported(f"model metadata: HTTP {status}")
        if status != 200:
            raise ModelUnavailable(f"model metadata: HTTP {status}")
        try:
            return payload["metadata"]["signature_def"]["signature_def"]
        except (KeyError, TypeError) as e:
            raise MetadataUnsupported("model metadata without signature_def") from e

    def _predict(self, signature, inputs, timeout, version):
        deadline = time.monotonic() + timeout
        pinned = version
        label = self.version_label if version is None else None
        for attempt in (0, 1):
            if pinned is None:
                pinned = self._current_version(timeout)
            if label:  # reported as the label's (cached) version
                path = self._label_path() + ":predict"
            else:
                path = (f"/v1/models/{self.model_name}/versions/{pinned}:predict" if pinned
                        else f"/v1/models/{self.model_name}:predict")
            body = {"signature_name": signature,
                    "inputs": {name: values for name, (_, values) in inputs.items()}}
            status, payload = self._request("POST", path, max(1e-3, deadline - time.monotonic()),
                                            body)
            if status == 200:
                outputs = payload.get("outputs")
                if signature in self.SINGLE_OUTPUT and not isinstance(outputs, dict):
                    outputs = {self.SINGLE_OUTPUT[signature]: outputs}  # one output: no name
                if not isinstance(outputs, dict):
                    raise ModelUnavailable(f"'{signature}' answer has no outputs object")
                return outputs, pinned
            if status == 404 and version is None and attempt == 0 and not label:
                self._version_at = -math.inf  # the cached version went away: re-read status
                pinned = None
                continue
            message = payload.get("error", "") if isinstance(payload, dict) else ""
            error = ModelVersionNotFound if status == 404 and version is not None \
                else ModelUnavailable
            raise error(f"'{signature}' failed: HTTP {status}: {message}")
        raise ModelUnavailable("unreachable")


# ---------------------------------------------------------------------------- gRPC

_NUMPY_TYPES = {"string": object, "int64": np.int64, "float": np.float32}


def tensor_proto(dtype: str, values):
    """A request tensor from a nested list, by TensorFlow's own conversion (the gRPC
    stubs load TensorFlow anyway; ~0.1 ms a request more than encoding it by hand)."""
    import tensorflow as tf
    if dtype not in _NUMPY_TYPES:
        raise ValueError(f"unsupported dtype {dtype}")
    return tf.make_tensor_proto(np.asarray(values, dtype=_NUMPY_TYPES[dtype]))


def tensor_values(proto) -> np.ndarray:
    """A response tensor -> numpy array (TensorFlow's ``make_ndarray``; strings as str)."""
    import tensorflow as tf
    try:
        array = tf.make_ndarray(proto)
    except (TypeError, ValueError) as e:
        raise ModelUnavailable(f"unreadable output tensor: {e}") from None
    if array.dtype == object:
        flat = [v.decode("utf-8", "replace") for v in array.reshape(-1)]
        array = np.array(flat, dtype=object).reshape(array.shape)
    return array


# gRPC's default reconnect backoff starts at 1 s and grows to 120 s, and a failed channel
# re-resolves its target at most every 30 s: a restarted model server would be ignored for
# seconds to minutes.  Retry the connection every 100-250 ms and allow re-resolution every
# 100 ms instead; ``min_reconnect_backoff_ms`` is gRPC's *connect timeout* (one attempt's
# deadline), 1 s, so a handshake with a busy server is not cut short (each failed call
# still fails fast, within its own deadline).
RECONNECT_OPTIONS = (("grpc.initial_reconnect_backoff_ms", 100),
                     ("grpc.min_reconnect_backoff_ms", 1000),
                     ("grpc.max_reconnect_backoff_ms", 250),
                     ("grpc.dns_min_time_between_resolutions_ms", 100))


def _ignore_state(state) -> None:
    """The connectivity callback of :class:`GrpcModelClient`'s channel watch."""


class GrpcModelClient(_BaseClient):
    """TF Serving's gRPC API (``PredictionService.Predict`` / ``GetModelMetadata``,
    ``ModelService.GetModelStatus``) with a deadline on every call."""

    def __init__(self, target: str, model_name: str, timeout_s: float = 0.05, channel=None,
                 max_message_mb: int = 64, version_label: Optional[str] = None):
        super().__init__(model_name, timeout_s, version_label)
        import grpc
        from tensorflow_serving.apis import (
            get_model_metadata_pb2,
            get_model_status_pb2,
            model_service_pb2_grpc,
            predict_pb2,
            prediction_service_pb2_grpc,
        )
        self._grpc = grpc
        self._pb = (predict_pb2, get_model_metadata_pb2, get_model_status_pb2)
        limit = max_message_mb * 1024 * 1024
        self.channel = channel or grpc.insecure_channel(
            target, options=[("grpc.max_receive_message_length", limit),
                             ("grpc.max_send_message_length", limit), *RECONNECT_OPTIONS])
        self._predict_stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self._model_stub = model_service_pb2_grpc.ModelServiceStub(self.channel)
        # A blocking client whose calls fail fast never polls the channel long enough for
        # the reconnect timers to fire: they then run on gRPC's backup poller, every 5 s
        # (a restarted model server was ignored for 2-4 s; grpc/grpc#38290).  Watching the
        # connectivity state keeps a thread polling it, so the backoff above holds (the
        # watch is what matters: the states themselves are not needed).
        self.channel.subscribe(_ignore_state, try_to_connect=True)

    def close(self) -> None:
        self.channel.unsubscribe(_ignore_state)
        self.channel.close()

    def _error(self, e, timeout: float, what: str) -> ModelUnavailable:
        code = e.code() if hasattr(e, "code") else None
        details = e.details() if hasattr(e, "details") else str(e)
        if code == self._grpc.StatusCode.DEADLINE_EXCEEDED:
            return ModelTimeout(f"{what}: no answer within {timeout * 1000:.0f} ms")
        if code in (self._grpc.StatusCode.UNIMPLEMENTED,) and what == "model metadata":
            return MetadataUnsupported(f"{what}: {code.name}: {details}")
        return ModelUnavailable(f"{what}: {getattr(code, 'name', code)}: {details}")

    def _call(self, method, request, timeout: float, what: str):
        try:
            return method(request, timeout=timeout)
        except self._grpc.RpcError as e:
            error = self._error(e, timeout, what)
            pinned = request.model_spec.HasField("version")
            if pinned and getattr(e, "code", lambda: None)() == self._grpc.StatusCode.NOT_FOUND:
                error = ModelVersionNotFound(str(error))
            raise error from e

    def _spec(self, request, version: Optional[str], signature: Optional[str] = None):
        request.model_spec.name = self.model_name
        if signature:
            request.model_spec.signature_name = signature
        if version:
            if not str(version).isdigit():
                raise ModelUnavailable(f"model versions are integers, got {version!r}")
            request.model_spec.version.value = int(version)
        elif self.version_label:
            request.model_spec.version_label = self.version_label

    def _predict(self, signature, inputs, timeout, version):
        predict_pb2 = self._pb[0]
        request = predict_pb2.PredictRequest()
        self._spec(request, version, signature)
        for name, (dtype, values) in inputs.items():
            request.inputs[name].CopyFrom(tensor_proto(dtype, values))
        response = self._call(self._predict_stub.Predict, request, timeout, f"'{signature}'")
        got = (str(response.model_spec.version.value)
               if response.model_spec.HasField("version") else version)
        return {name: tensor_values(t) for name, t in response.outputs.items()}, got

    def _status(self, timeout):
        if self.version_label:  # status ignores labels; metadata by label names the version
            request = self._pb[1].GetModelMetadataRequest()
            self._spec(request, None)
            request.metadata_field.append("signature_def")
            response = self._call(self._predict_stub.GetModelMetadata, request, timeout,
                                  f"model label {self.version_label!r}")
            return (str(response.model_spec.version.value)
                    if response.model_spec.HasField("version") else None)
        request = self._pb[2].GetModelStatusRequest()
        self._spec(request, None)
        response = self._call(self._model_stub.GetModelStatus, request, timeout, "model status")
        from google.protobuf import json_format
        statuses = [json_format.MessageToDict(s, preserving_proto_field_name=True)
                    for s in response.model_version_status]
        return _newest_available(statuses)

    def _available(self, version, timeout):
        request = self._pb[2].GetModelStatusRequest()
        self._spec(request, version)
        try:
            response = self._call(self._model_stub.GetModelStatus, request, timeout,
                                  "model status")
        except ModelVersionNotFound:
            return False
        from google.protobuf import json_format
        statuses = [json_format.MessageToDict(s, preserving_proto_field_name=True)
                    for s in response.model_version_status]
        return _newest_available(statuses) == str(int(version))

    def _metadata(self, timeout):
        get_model_metadata_pb2 = self._pb[1]
        request = get_model_metadata_pb2.GetModelMetadataRequest()
        self._spec(request, self.release_version)
        request.metadata_field.append("signature_def")
        response = self._call(self._predict_stub.GetModelMetadata, request, timeout,
                              "model metadata")
        defs = get_model_metadata_pb2.SignatureDefMap()
        if "signature_def" not in response.metadata or not response.metadata[
                "signature_def"].Unpack(defs):
            raise MetadataUnsupported("model metadata without signature_def")
        from google.protobuf import json_format
        return json_format.MessageToDict(defs, preserving_proto_field_name=True)["signature_def"]


def make_model_client(url: str, model_name: str, timeout_s: float = 0.05,
                      version_label: Optional[str] = None) -> ModelClient:
    """``grpc://host:port`` (or ``host:port``) -> gRPC; ``http(s)://...`` -> REST.
    ``version_label``: unpinned calls ask for that version label of the model config."""
    if url.startswith(("http://", "https://")):
        return RestModelClient(url, model_name, timeout_s, version_label=version_label)
    return GrpcModelClient(url.removeprefix("grpc://"), model_name, timeout_s,
                           version_label=version_label)


__all__ = ["ModelClient", "GrpcModelClient", "RestModelClient", "make_model_client",
           "Candidates", "Event", "ModelContext", "ModelUnavailable", "ModelTimeout",
           "MetadataUnsupported", "ModelVersionNotFound", "SignatureInfo", "VARIANTS",
           "EMBEDDING_OF", "recommend_inputs", "tensor_proto", "tensor_values"]
