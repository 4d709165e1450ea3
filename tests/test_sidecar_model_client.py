"""The sidecar's model clients.

* Transport behaviour against test doubles: ``TFServingRestTestDouble`` (an HTTP server
  answering TF Serving's REST API shapes) and ``TFServingGrpcTestDouble`` (a gRPC server
  with TF Serving's PredictionService/ModelService) -- deadlines, unreachable servers,
  error statuses, version pinning, the exact request bodies.
* Interoperability (e2e): both clients against the project's TF-Serving-compatible model
  server (serving/model_server) serving a small SavedModel with the STARS serving
  signatures, and the whole sidecar over it.
"""

import json
import math
import shutil
import subprocess
import sys
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import any_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving.sidecar.model_client import (
    Event,
    GrpcModelClient,
    ModelContext,
    ModelTimeout,
    ModelUnavailable,
    ModelVersionNotFound,
    RestModelClient,
    SignatureInfo,
    make_model_client,
    padded_length,
    recommend_inputs,
    tensor_proto,
    tensor_values,
)
from tests.fixtures import free_port

T = 1_700_000_000
WITH_CONTEXT_DEFS = {
    "recommend_with_context": {"inputs": {
        "history_item_ids": {}, "history_event_types": {}, "history_timestamps": {},
        "request_timestamp": {}, "region": {},
        "context_signals": {"tensor_shape": {"dim": [{"size": "-1"}, {"size": "4"}]}},
        "user_num_age": {}, "user_cat_domain": {}}},
    "search": {"inputs": {"query_embeddings": {
        "tensor_shape": {"dim": [{"size": "-1"}, {"size": "3"}]}}}}}



# ---------------------------------------------------------------------------- REST double

class TFServingRestTestDouble:
    """TestDouble of TF Serving's REST API (not a model): versions 1 and 2 AVAILABLE;
    ``search`` answers ids ``v<version>-<n>``; ``context_offset`` answers its lone output
    without a name, as TF Serving does.  Records (method, path, body); ``delay_s`` and
    ``gone`` (versions answering 404) inject failures."""

    def __init__(self):
        self.requests, self.delay_s, self.gone = [], 0.0, set()
        self.versions = ["1", "2"]
        self.defs = WITH_CONTEXT_DEFS
        double = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            wbufsize = -1

            def log_message(self, *args):
                pass

            def _send(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                double.requests.append(("GET", self.path, None))
                if self.path == "/v1/models/stars":
                    return self._send(200, {"model_version_status": [
                        {"version": v, "state": "AVAILABLE",
                         "status": {"error_code": "OK", "error_message": ""}}
                        for v in double.versions]})
                if self.path == "/v1/models/stars/metadata":
                    return self._send(200, {"model_spec": {"name": "stars", "version": "2"},
                                            "metadata": {"signature_def": {
                                                "signature_def": double.defs}}})
                self._send(404, {"error": "Not found"})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                double.requests.append(("POST", self.path, body))
                if double.delay_s:
                    time.sleep(double.delay_s)
                version = self.path.split("/versions/")[1].split(":")[0] \
                    if "/versions/" in self.path else "2"
                if version in double.gone or version not in double.versions:
                    return self._send(404, {"error": f"Servable not found for request: "
                                                     f"Specific(stars, {version})"})
                signature = body["signature_name"]
                if signature == "search":
                    rows = len(body["inputs"]["query_embeddings"])
                    return self._send(200, {"outputs": {
                        "ids": [[f"v{version}-{n}" for n in range(5)]] * rows,
                        "scores": [[5.0 - n for n in range(5)]] * rows}})
                if signature == "search_after_items" and "search_after_items" in double.defs:
                    after = [any(row) for row in body["inputs"]["history_item_ids"]]
                    return self._send(200, {"outputs": {
                        "ids": [[f"{'after-' if a else ''}v{version}-{n}" for n in range(5)]
                                for a in after],
                        "scores": [[5.0 - n for n in range(5)]] * len(after)}})
                if signature == "context_offset":
                    return self._send(200, {"outputs": [[0.5, 0.25, 0.0]]})
                if signature in ("recommend", "recommend_with_context"):
                    return self._send(200, {"outputs": {
                        "gi_ids": [["a", "b", ""]], "gi_scores": [[2.0, 1.0, float("-inf")]],
                        "ni_ids": [["c", "a", "d"]], "ni_scores": [[3.0, 2.0, 1.0]]}})
                self._send(400, {"error": f"unknown signature {signature}"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def rest():
    double = TFServingRestTestDouble()
    yield double
    double.stop()


def test_rest_search_pins_the_newest_version_and_reads_status_once(rest):
    client = RestModelClient(rest.url, "stars", timeout_s=1.0)
    got = client.search({"gi": [1, 0, 0], "ni": np.array([0, 1, 0])}, 3)
    assert got.model_version == "2" and got.ids["gi"] == [f"v2-{n}" for n in range(5)]
    assert got.scores["ni"][0] == 5.0
    assert got.exhausted  # 5 rows for 3 asked: a fixed top K, asking again gives the same
    assert rest.requests[0][:2] == ("GET", "/v1/models/stars")
    assert rest.requests[1] == ("POST", "/v1/models/stars/versions/2:predict",
                                {"signature_name": "search",
                                 "inputs": {"query_embeddings": [[1.0, 0.0, 0.0],
                                                                 [0.0, 1.0, 0.0]]}})
    client.search({"gi": [1, 0, 0]}, 3)
    assert [r[0] for r in rest.requests] == ["GET", "POST", "POST"]  # status cached
    got = client.search({"gi": [1, 0, 0]}, 10, version="1")
    assert got.model_version == "1" and got.exhausted  # 5 < 10: the index has no more
    with pytest.raises(ModelVersionNotFound):
        client.search({"gi": [1, 0, 0]}, 3, version="9")


def test_rest_search_merges_the_latest_items_only_where_the_model_serves_it(rest):
    """Stored latest items go to ``search_after_items`` on the NI row (the GI row gets
    none), when the model's metadata lists that signature; otherwise plain ``search``."""
    queries = {"gi": [1, 0, 0], "ni": [0, 1, 0]}
    client = RestModelClient(rest.url, "stars", timeout_s=1.0)
    got = client.search(queries, 3, latest_items=("a", "b"))
    assert rest.requests[-1][2]["signature_name"] == "search" and got.ids["ni"][0] == "v2-0"
    rest.defs = {**WITH_CONTEXT_DEFS, "search_after_items": {"inputs": {
        "query_embeddings": {}, "history_item_ids": {}}}}
    client = RestModelClient(rest.url, "stars", timeout_s=1.0)
    got = client.search(queries, 3, latest_items=("a", "b"))
    assert rest.requests[-1] == ("POST", "/v1/models/stars/versions/2:predict", {
        "signature_name": "search_after_items",
        "inputs": {"query_embeddings": [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
                   # padded to the batch job's 8 items: one shape for every call
                   "history_item_ids": [[""] * 8, ["a", "b"] + [""] * 6]}})
    assert got.ids["ni"][0] == "after-v2-0" and got.ids["gi"][0] == "v2-0"
    client.search(queries, 3)                        # nothing stored: the index alone
    assert rest.requests[-1][2]["signature_name"] == "search"
    client.search({"gi": [1, 0, 0]}, 3, latest_items=("a",))   # GI only: nothing to merge
    assert rest.requests[-1][2]["signature_name"] == "search"
    # A (pinned) version without the signature, though the metadata listed it: the index.
    rest.defs = WITH_CONTEXT_DEFS
    got = client.search(queries, 3, latest_items=("a", "b"), version="1")
    assert [r[2]["signature_name"] for r in rest.requests[-2:]] == ["search_after_items",
                                                                     "search"]
    assert got.ids["ni"][0] == "v1-0" and got.model_version == "1"


def test_rest_rereads_status_when_the_cached_version_disappears(rest):
    client = RestModelClient(rest.url, "stars", timeout_s=1.0)
    client.search({"gi": [1, 0, 0]}, 3)
    rest.versions = ["3"]
    got = client.search({"gi": [1, 0, 0]}, 3)
    assert got.model_version == "3" and got.ids["gi"][0] == "v3-0"
    assert [(m, p) for m, p, _ in rest.requests[2:]] == [
        ("POST", "/v1/models/stars/versions/2:predict"), ("GET", "/v1/models/stars"),
        ("POST", "/v1/models/stars/versions/3:predict")]


def test_rest_recommend_uses_metadata_for_context_inputs(rest):
    client = RestModelClient(rest.url, "stars", timeout_s=1.0)
    events = [Event("i1", "view", T - 5), Event("i2", "purchase", T - 1)]
    context = ModelContext(T, (1.0, 0.0), "us", {"age": 31, "domain": "x.org", "other": 1})
    got = client.recommend(events, context, 2)
    assert got.ids == {"gi": ["a", "b"], "ni": ["c", "a", "d"]}  # padding dropped
    body = rest.requests[-1][2]
    assert body["signature_name"] == "recommend_with_context"
    assert body["inputs"] == {  # histories padded to 8, 16, 32, ... ("" = no event)
        "history_item_ids": [["i1", "i2"] + [""] * 6],
        "history_event_types": [["view", "purchase"] + [""] * 6],
        "history_timestamps": [[T - 5, T - 1] + [0] * 6], "request_timestamp": [T],
        "region": ["us"],
        "context_signals": [[1.0, 0.0, 0.0, 0.0]], "user_num_age": [31.0],
        "user_cat_domain": ["x.org"]}
    offset, version = client.context_offset(T, (0.0, 1.0))
    assert offset.tolist() == [0.5, 0.25, 0.0] and version == "2"
    assert rest.requests[-1][2]["inputs"] == {"request_timestamp": [T],
                                              "context_signals": [[0.0, 1.0, 0.0, 0.0]]}


def test_recommend_inputs_defaults():
    info = SignatureInfo.from_signature_defs(WITH_CONTEXT_DEFS)
    assert info == SignatureInfo(True, 4, ("age",), ("domain",), 3)
    name, inputs = recommend_inputs([], ModelContext(T), info)
    assert name == "recommend_with_context"
    assert inputs["history_item_ids"] == ("string", [[""] * 8])
    assert [padded_length(n) for n in (0, 1, 8, 9, 16, 17, 200)] == [8, 8, 8, 16, 16, 32, 256]
    assert math.isnan(inputs["user_num_age"][1][0]) and inputs["user_cat_domain"][1] == [""]
    name, inputs = recommend_inputs([Event("a")], ModelContext(T), SignatureInfo())
    assert name == "recommend" and set(inputs) == {
        "history_item_ids", "history_event_types", "history_timestamps", "request_timestamp"}


def test_rest_timeouts_and_unreachable(rest):
    client = RestModelClient(rest.url, "stars", timeout_s=1.0)
    client.model_version()
    rest.delay_s = 0.5
    started = time.perf_counter()
    with pytest.raises(ModelTimeout):
        client.search({"gi": [1, 0, 0]}, 3, timeout_s=0.05)
    assert time.perf_counter() - started < 0.3
    with pytest.raises(ModelTimeout):
        client.search({"gi": [1, 0, 0]}, 3, timeout_s=0.0)
    dead = RestModelClient(f"http://127.0.0.1:{free_port()}", "stars", timeout_s=1.0)
    with pytest.raises(ModelUnavailable) as e:
        dead.search({"gi": [1, 0, 0]}, 3)
    assert not isinstance(e.value, ModelTimeout) and "unreachable" in str(e.value)


# ---------------------------------------------------------------------------- gRPC double

class TFServingGrpcTestDouble(prediction_service_pb2_grpc.PredictionServiceServicer,
                              model_service_pb2_grpc.ModelServiceServicer):
    """TestDouble of TF Serving's gRPC services (not a model): answers ``search`` with
    ids ``g<n>`` and reports version 4 (or the pinned one); version 9 is NOT_FOUND."""

    def __init__(self, port=0):
        self.requests, self.delay_s = [], 0.0
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(self, self.server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(self, self.server)
        self.port = self.server.add_insecure_port(f"127.0.0.1:{port}")
        self.server.start()

    def Predict(self, request, context):
        self.requests.append(request)
        if self.delay_s:
            time.sleep(self.delay_s)
        version = request.model_spec.version.value if request.model_spec.HasField(
            "version") else 4
        if version == 9:
            context.abort(grpc.StatusCode.NOT_FOUND, "Servable not found: version 9")
        response = predict_pb2.PredictResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = version
        response.model_spec.signature_name = request.model_spec.signature_name
        rows = [int(d.size) for d in request.inputs["query_embeddings"].tensor_shape.dim][0]
        response.outputs["ids"].CopyFrom(tensor_proto("string", [["g0", "g1", "g2"]] * rows))
        response.outputs["scores"].CopyFrom(
            tf.make_tensor_proto(np.array([[3.0, 2.0, 1.0]] * rows, np.float32)))
        return response

    def GetModelMetadata(self, request, context):
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        defs = get_model_metadata_pb2.SignatureDefMap()
        defs.signature_def["search"].inputs["query_embeddings"].tensor_shape.dim.add().size = -1
        defs.signature_def["search"].inputs["query_embeddings"].tensor_shape.dim.add().size = 3
        packed = any_pb2.Any()
        packed.Pack(defs)
        response.metadata["signature_def"].CopyFrom(packed)
        return response

    def GetModelStatus(self, request, context):
        response = get_model_status_pb2.GetModelStatusResponse()
        for version, state in ((3, 30), (4, 30), (5, 10)):  # 30 AVAILABLE, 10 START
            entry = response.model_version_status.add()
            entry.version, entry.state = version, state
        return response

    def stop(self):
        self.server.stop(0)


def test_tensor_protos_roundtrip_with_tensorflow():
    for dtype, values in (("string", [["a", "ü", ""]]), ("int64", [[1, -2], [3, 4]]),
                          ("float", [[0.5, -1.25]])):
        proto = tensor_proto(dtype, values)
        want = tf.make_ndarray(proto)
        if dtype == "string":
            want = np.vectorize(lambda b: b.decode())(want)
        assert np.array_equal(tensor_values(proto), want)
        assert np.array_equal(tensor_values(tf.make_tensor_proto(want)), want)
    compact = tf.make_tensor_proto(np.zeros((2, 3), np.float32))  # may use one value
    assert tensor_values(compact).shape == (2, 3)


def test_grpc_client_versions_deadlines_and_errors():
    double = TFServingGrpcTestDouble()
    try:
        client = make_model_client(f"grpc://127.0.0.1:{double.port}", "stars", 1.0)
        assert isinstance(client, GrpcModelClient) and client.model_version() == "4"
        got = client.search({"gi": [1, 2, 3], "ni": [0, 0, 1]}, 2)
        assert got.model_version == "4" and got.ids == {"gi": ["g0", "g1", "g2"],
                                                        "ni": ["g0", "g1", "g2"]}
        request = double.requests[-1]
        assert request.model_spec.name == "stars" and request.model_spec.signature_name == \
            "search" and not request.model_spec.HasField("version")
        assert tf.make_ndarray(request.inputs["query_embeddings"]).tolist() == [[1, 2, 3],
                                                                               [0, 0, 1]]
        assert client.search({"gi": [1, 2, 3]}, 2, version="3").model_version == "3"
        with pytest.raises(ModelVersionNotFound, match="NOT_FOUND"):
            client.search({"gi": [1, 2, 3]}, 2, version="9")
        assert client.signature_info().query_dim == 3
        assert not client.signature_info().has_context
        double.delay_s = 0.5
        started = time.perf_counter()
        with pytest.raises(ModelTimeout):
            client.search({"gi": [1, 2, 3]}, 2, timeout_s=0.05)
        assert time.perf_counter() - started < 0.3
    finally:
        double.stop()
    with pytest.raises(ModelUnavailable) as e:
        client.search({"gi": [1, 2, 3]}, 2, timeout_s=0.5)
    assert ("UNAVAILABLE" in str(e.value) or "CANCELLED" in str(e.value)) and \
        not isinstance(e.value, ModelTimeout)


# A model server in another process (only GetModelStatus, raw bytes): a server in the test's
# own process would poll gRPC's event engine for the client and hide how it reconnects.
_STATUS_SERVER = """
import sys, grpc
from concurrent import futures
answer = bytes.fromhex(sys.argv[2])
handler = grpc.method_handlers_generic_handler("tensorflow.serving.ModelService", {
    "GetModelStatus": grpc.unary_unary_rpc_method_handler(lambda request, context: answer)})
server = grpc.server(futures.ThreadPoolExecutor(2), handlers=(handler,))
server.add_insecure_port(f"127.0.0.1:{sys.argv[1]}")
server.start()
print("up", flush=True)
server.wait_for_termination()
"""


def _status_server(port: int) -> subprocess.Popen:
    from tensorflow_serving.apis import get_model_status_pb2
    answer = get_model_status_pb2.GetModelStatusResponse()
    status = answer.model_version_status.add(version=4)
    status.state = get_model_status_pb2.ModelVersionStatus.AVAILABLE
    process = subprocess.Popen([sys.executable, "-c", _STATUS_SERVER, str(port),
                                answer.SerializeToString().hex()], stdout=subprocess.PIPE,
                               text=True)
    assert process.stdout.readline().strip() == "up"
    return process


def test_grpc_client_uses_a_restarted_server_within_half_a_second():
    """gRPC's default reconnect backoff (1 s, growing to 120 s) would ignore a restarted
    model server for seconds after an outage of a second or two; the client's reconnect
    settings retry the connection every 100-250 ms, and its connectivity watch keeps the
    retries running while every call fails fast (else they wait for gRPC's 5 s backup
    poller)."""
    port = free_port()
    server = _status_server(port)
    client = make_model_client(f"grpc://127.0.0.1:{port}", "stars", 0.1)
    try:
        assert client.model_version() == "4"
        server.kill()
        server.wait()
        down_until = time.monotonic() + 1.5
        while time.monotonic() < down_until:  # calls during the outage fail fast
            with pytest.raises(ModelUnavailable):
                client.model_version(timeout_s=0.1)
            time.sleep(0.05)
        server = _status_server(port)
        restarted = time.monotonic()
        while True:
            try:
                assert client.model_version(timeout_s=0.1) == "4"
                break
            except ModelUnavailable:
                assert time.monotonic() - restarted < 8.0
                time.sleep(0.02)
        assert time.monotonic() - restarted < 0.5
    finally:
        server.kill()
        server.wait()
        client.close()


# ---------------------------------------------------------------------------- e2e

D, N, K = 8, 60, 20


class FakeStarsModule(tf.Module):
    """A SavedModel with the STARS serving signatures (models/serving.py), not the STARS
    model: item embeddings are random; h_gen is the mean of the history's embeddings,
    h_next the last one's; Δ_ctx = 0.1 * signals[0] on every dimension, + 0.01 * age.
    With ``after_items``, ``search_after_items`` lifts each row's given items by 100 (a
    stand-in for the successor merge: visible at the top of the answer)."""

    def __init__(self, seed, after_items=False):
        super().__init__()
        self.after_items = after_items
        rng = np.random.default_rng(seed)
        self.item_ids = [f"it{i}" for i in range(N)]
        self.table_values = rng.normal(size=(N, D)).astype(np.float32)
        self.embeddings = tf.Variable(self.table_values)
        self.ids = tf.constant(self.item_ids)
        self.lookup = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
            self.ids, tf.range(N, dtype=tf.int64)), -1)

    def _top(self, queries):
        scores, index = tf.math.top_k(tf.matmul(queries, self.embeddings, transpose_b=True), K)
        return tf.gather(self.ids, index), scores

    def _encode(self, item_ids):
        """As the STARS model reads a history: "" (padding) and unknown ids are no event,
        wherever they are; h_next is the latest known event's."""
        index = self.lookup.lookup(item_ids)
        known = index >= 0
        found = tf.cast(known, tf.float32)[..., None]
        vectors = tf.gather(self.embeddings, tf.maximum(index, 0)) * found
        gen = tf.reduce_sum(vectors, 1) / tf.maximum(tf.reduce_sum(found, 1), 1.0)
        positions = tf.range(tf.shape(index)[1])[None, :]
        latest = tf.reduce_max(tf.where(known, positions, 0), axis=1)
        return gen, tf.gather(vectors, latest, batch_dims=1)

    def signatures(self):
        history = [tf.TensorSpec([None, None], tf.string, "history_item_ids"),
                   tf.TensorSpec([None, None], tf.string, "history_event_types"),
                   tf.TensorSpec([None, None], tf.int64, "history_timestamps"),
                   tf.TensorSpec([None], tf.int64, "request_timestamp")]
        context = [tf.TensorSpec([None], tf.string, "region"),
                   tf.TensorSpec([None, 4], tf.float32, "context_signals"),
                   tf.TensorSpec([None], tf.float32, "user_num_age"),
                   tf.TensorSpec([None], tf.string, "user_cat_domain")]

        def answer(gen, nxt):
            gi_ids, gi_scores = self._top(gen)
            ni_ids, ni_scores = self._top(nxt)
            return {"gi_ids": gi_ids, "gi_scores": gi_scores, "ni_ids": ni_ids,
                    "ni_scores": ni_scores}

        @tf.function(input_signature=history)
        def recommend(*args):
            return answer(*self._encode(args[0]))

        @tf.function(input_signature=history + context)
        def recommend_with_context(*args):
            gen, nxt = self._encode(args[0])
            age = tf.where(tf.math.is_nan(args[6]), 0.0, args[6])
            delta = (0.1 * args[5][:, :1] + 0.01 * age[:, None]) * tf.ones([1, D])
            return answer(gen + delta, nxt + delta)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, "request_timestamp"),
                                      tf.TensorSpec([None, 4], tf.float32, "context_signals")])
        def context_offset(request_timestamp, context_signals):
            return {"offset": 0.1 * context_signals[:, :1] * tf.ones([1, D])}

        @tf.function(input_signature=[tf.TensorSpec([None, D], tf.float32, "query_embeddings")])
        def search(query_embeddings):
            ids, scores = self._top(query_embeddings)
            return {"ids": ids, "scores": scores}

        @tf.function(input_signature=[tf.TensorSpec([None, D], tf.float32, "query_embeddings"),
                                      tf.TensorSpec([None, None], tf.string, "history_item_ids")])
        def search_after_items(query_embeddings, history_item_ids):
            index = self.lookup.lookup(history_item_ids)
            lift = tf.reduce_sum(tf.one_hot(index, N) * 100.0, axis=1)   # -1: no lift
            scores = tf.matmul(query_embeddings, self.embeddings, transpose_b=True) + lift
            top, order = tf.math.top_k(scores, K)
            return {"ids": tf.gather(self.ids, order), "scores": top}

        signatures = {"serving_default": recommend.get_concrete_function(),
                      "recommend": recommend.get_concrete_function(),
                      "recommend_with_context": recommend_with_context.get_concrete_function(),
                      "context_offset": context_offset.get_concrete_function(),
                      "search": search.get_concrete_function()}
        if self.after_items:
            signatures["search_after_items"] = search_after_items.get_concrete_function()
        return signatures


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from serving.model_server import serve
    base = tmp_path_factory.mktemp("fake_stars") / "stars"
    modules = {}
    for version in (1, 2):
        module = FakeStarsModule(seed=version, after_items=version == 2)  # 1 predates it
        tf.saved_model.save(module, str(base / str(version)), signatures=module.signatures())
        modules[version] = module
    server = serve(str(base), "stars", rest_port=0, grpc_port=0, poll_seconds=0,
                   host="127.0.0.1", num_latest=2)
    yield server, modules
    server.stop()
    shutil.rmtree(base, ignore_errors=True)


def _numpy_top(table, query):
    scores = table @ np.asarray(query, np.float32)
    order = np.argsort(-scores, kind="stable")[:K]
    return [f"it{i}" for i in order], scores[order]


@pytest.mark.e2e
def test_both_clients_against_the_model_server(served):
    server, modules = served
    grpc_client = GrpcModelClient(f"127.0.0.1:{server.grpc_port}", "stars", timeout_s=5.0)
    rest_client = RestModelClient(f"http://127.0.0.1:{server.rest_port}", "stars", 5.0)
    query = np.linspace(-1, 1, D)
    for client in (grpc_client, rest_client):
        assert client.model_version() == "2"
        info = client.signature_info()
        assert info == SignatureInfo(True, 4, ("age",), ("domain",), D, True)
        for version in ("1", "2"):
            got = client.search({"gi": query, "ni": -query}, K, version=version)
            want_ids, want_scores = _numpy_top(modules[int(version)].table_values, query)
            assert got.model_version == version and got.ids["gi"] == want_ids
            np.testing.assert_allclose(got.scores["gi"], want_scores, rtol=1e-5, atol=1e-5)
            assert got.ids["ni"] == _numpy_top(modules[int(version)].table_values, -query)[0]
        # Stored latest items: NI merged by version 2's search_after_items, GI not; version
        # 1 has no such signature, so its answer is the index alone.
        got = client.search({"gi": query, "ni": -query}, K, version="2",
                            latest_items=("it7", "nope", "it5"))
        assert sorted(got.ids["ni"][:2]) == ["it5", "it7"] and got.model_version == "2"
        assert got.ids["gi"] == _numpy_top(modules[2].table_values, query)[0]
        got = client.search({"gi": query, "ni": -query}, K, version="1",
                            latest_items=("it7", "it5"))
        assert got.ids["ni"] == _numpy_top(modules[1].table_values, -query)[0]
        assert client.search({"gi": query}, K).model_version == "2"
        with pytest.raises(ModelVersionNotFound):
            client.search({"gi": query}, K, version="7")
        offset, version = client.context_offset(T, (2.0,))
        np.testing.assert_allclose(offset, np.full(D, 0.2), rtol=1e-6)
        assert version == "2"
    events = [Event("it3", "view", T - 9), Event("nope", "view", T - 5),
              Event("it8", "purchase", T - 1)]
    context = ModelContext(T, (1.0, 0, 0, 0), "us", {"age": 30.0, "domain": "x"})
    a = grpc_client.recommend(events, context, K)
    b = rest_client.recommend(events, context, K)
    assert a.ids == b.ids and a.model_version == b.model_version == "2"
    table = modules[2].table_values
    gen = (table[3] + table[8]) / 2 + 0.1 + 0.3
    assert a.ids["gi"] == _numpy_top(table, gen)[0]
    assert a.ids["ni"] == _numpy_top(table, table[8] + 0.4)[0]


@pytest.mark.e2e
def test_the_sidecar_over_the_model_server(served):
    import http.client

    from serving.sidecar.api import SidecarApp
    from serving.sidecar.filters import EmbeddedFilterBackend
    from serving.sidecar.popularity import Popularity
    from serving.sidecar.recommender import Recommender, RecommenderConfig
    from serving.sidecar.server import make_server
    from serving.sidecar.user_store import InMemoryUserEmbeddingStore
    server, modules = served
    catalog = EmbeddedFilterBackend({"item_id": f"it{i}", "regions": ["us"] if i % 3 else ["*"],
                                     "categories": ["A"], "in_stock": True, "price": float(i)}
                                    for i in range(N))
    store = InMemoryUserEmbeddingStore()
    store.put("u1", modules[1].table_values[5], modules[1].table_values[6], "1")
    for model in (GrpcModelClient(f"127.0.0.1:{server.grpc_port}", "stars", 5.0),
                  RestModelClient(f"http://127.0.0.1:{server.rest_port}", "stars", 5.0)):
        recommender = Recommender(model, catalog, Popularity(catalog), store,
                                  RecommenderConfig(budget_s=10.0, model_timeout_s=5.0))
        http_server = make_server(SidecarApp(recommender), "127.0.0.1", 0)
        threading.Thread(target=http_server.serve_forever, args=(0.05,), daemon=True).start()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", http_server.server_address[1],
                                              timeout=30)
            for body, embedding, version in (
                    ({"user_id": "u1", "k": 6, "filters": {"region": "eu"}}, "stored", "1"),
                    ({"user_id": "u2", "k": 6, "events": [{"item_id": "it4"}],
                      "filters": {"price": {"max": 30}}}, "encoded", "2")):
                conn.request("POST", "/v1/recommendations", body=json.dumps(body),
                             headers={"Content-Type": "application/json"})
                response = conn.getresponse()
                answer = json.loads(response.read())
                assert response.status == 200, answer
                assert answer["user_embedding"] == embedding and not answer["degraded"]
                assert answer["model_version"] == version and len(answer["items"]) == 6
                ids = [int(i["item_id"][2:]) for i in answer["items"]]
                if embedding == "stored":
                    assert all(i % 3 == 0 for i in ids)  # sold in 'eu' = everywhere
                else:
                    assert all(i <= 30 for i in ids)
            conn.close()
        finally:
            http_server.shutdown()
            http_server.server_close()
