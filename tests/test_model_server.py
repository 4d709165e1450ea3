"""The TF-Serving-compatible model server, driven by the official gRPC stubs and plain HTTP."""

import base64
import csv
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving.model_server import serve
from serving.model_server.versions import ModelVersions

NAME = "toy"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _Toy(tf.Module):
    """Version N: ``y = N * sum(x)``, ``label = tag + "-vN"``, ``ids``: ``out = N * n``."""

    def __init__(self, version: int):
        super().__init__()
        self.version = version
        self.scale = tf.Variable(float(version))

    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, "x"),
                                  tf.TensorSpec([None], tf.string, "tag")])
    def predict(self, x, tag):
        return {"y": tf.reduce_sum(x, 1) * self.scale,
                "label": tf.strings.join([tag, f"v{self.version}"], "-"),
                "tag_bytes": tag}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, "n")])
    def ids(self, n):
        return {"out": n * self.version}


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Version 1 and version 2 SavedModels (outside any base path)."""
    root = tmp_path_factory.mktemp("toy_exports")
    paths = {}
    for version in (1, 2):
        module = _Toy(version)
        path = str(root / str(version))
        tf.saved_model.save(module, path, signatures={
            "serving_default": module.predict.get_concrete_function(),
            "ids": module.ids.get_concrete_function()})
        paths[version] = path
    return paths


def _base_with(tmp_path, exports, *versions):
    base = tmp_path / "base" / NAME
    base.mkdir(parents=True)
    for version in versions:
        shutil.copytree(exports[version], base / str(version))
    return base


@pytest.fixture(scope="module")
def server(exports, tmp_path_factory):
    base = tmp_path_factory.mktemp("served") / NAME
    shutil.copytree(exports[1], base / "1")
    running = serve(str(base), NAME, rest_port=0, grpc_port=0, poll_seconds=0.5,
                    host="127.0.0.1", max_request_mb=1)
    yield running
    running.stop()
    assert running.stopped


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as ch:
        yield ch


def _predict_request(name=NAME, signature="", version=None, **inputs):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    if signature:
        request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    return request


def _http(server, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
    try:
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        conn.request(method, path, body=data, headers=headers or {})
        response = conn.getresponse()
        payload = response.read()
        return response.status, json.loads(payload) if payload else None
    finally:
        conn.close()


def _grpc_error(call, request):
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=30)
    return info.value.code(), info.value.details()


# ------------------------------------------------------------------------------ gRPC
def test_grpc_predict_metadata_status(server, channel):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    response = stub.Predict(_predict_request(
        x=np.array([[1.0, 2.0], [3.0, 4.5]], np.float32),
        tag=np.array([b"a", "é".encode()], object)), timeout=30)
    assert response.model_spec.name == NAME and response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["y"]), [3.0, 7.5])
    assert tf.make_ndarray(response.outputs["label"]).tolist() == [b"a-v1", "é-v1".encode()]

    filtered = stub.Predict(_predict_request(signature="ids", n=np.array([2, 5], np.int64)),
                            timeout=30)
    assert tf.make_ndarray(filtered.outputs["out"]).tolist() == [2, 5]

    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = NAME
    request.metadata_field.append("signature_def")
    metadata = stub.GetModelMetadata(request, timeout=30)
    assert metadata.model_spec.version.value == 1
    signatures = get_model_metadata_pb2.SignatureDefMap()
    metadata.metadata["signature_def"].Unpack(signatures)
    default = signatures.signature_def["serving_default"]
    assert set(default.inputs) == {"x", "tag"}
    assert set(default.outputs) == {"y", "label", "tag_bytes"}
    assert "ids" in signatures.signature_def

    status_stub = model_service_pb2_grpc.ModelServiceStub(channel)
    status_request = get_model_status_pb2.GetModelStatusRequest()
    status_request.model_spec.name = NAME
    status = status_stub.GetModelStatus(status_request, timeout=30)
    [entry] = status.model_version_status
    assert entry.version == 1
    assert entry.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert entry.status.error_code == 0 and entry.status.error_message == ""


def test_grpc_errors_follow_tf_serving(server, channel):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    ok_inputs = dict(x=np.zeros([1, 2], np.float32), tag=np.array([b"t"], object))
    assert _grpc_error(stub.Predict, _predict_request(name="nope", **ok_inputs)) == (
        grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(nope)")
    assert _grpc_error(stub.Predict, _predict_request(version=7, **ok_inputs)) == (
        grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Specific({NAME}, 7)")
    assert _grpc_error(stub.Predict, _predict_request(signature="nope", **ok_inputs)) == (
        grpc.StatusCode.FAILED_PRECONDITION, 'Serving signature key "nope" not found.')
    code, message = _grpc_error(stub.Predict, _predict_request(x=ok_inputs["x"]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message.startswith("input size does not match signature: 1!=2")
    assert "Missing but required: {tag}" in message
    code, message = _grpc_error(stub.Predict, _predict_request(
        x=np.array([["a", "b"]], object), tag=ok_inputs["tag"]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "to be float but string is provided" in message
    # Shapes are not checked against the signature: the graph refuses what it cannot take.
    code, message = _grpc_error(stub.Predict, _predict_request(
        x=np.zeros([3], np.float32), tag=ok_inputs["tag"]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message.startswith("Invalid reduction dimension")
    code, message = _grpc_error(stub.Predict, _predict_request(
        signature="ids", n=np.array([1], np.int64), **{"extra": np.array([1], np.int64)}))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "Sent extra: {extra}" in message

    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = NAME
    assert _grpc_error(stub.GetModelMetadata, request) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "GetModelMetadataRequest must specify at least one metadata_field")

    status_stub = model_service_pb2_grpc.ModelServiceStub(channel)
    status_request = get_model_status_pb2.GetModelStatusRequest()
    status_request.model_spec.name = "nope"
    assert _grpc_error(status_stub.GetModelStatus, status_request) == (
        grpc.StatusCode.NOT_FOUND, "Could not find any versions of model nope")
    status_request.model_spec.name = NAME
    status_request.model_spec.version.value = 9
    assert _grpc_error(status_stub.GetModelStatus, status_request) == (
        grpc.StatusCode.NOT_FOUND, f"Could not find version 9 of model {NAME}")


# ------------------------------------------------------------------------------ REST
def test_rest_predict_row_and_columnar(server):
    row = {"instances": [{"x": [1.0, 2.0], "tag": "a"},
                         {"x": [0.5, 0.25], "tag": {"b64": base64.b64encode(b"\xffz").decode()}}]}
    code, body = _http(server, "POST", f"/v1/models/{NAME}:predict", row)
    assert code == 200, body
    first, second = body["predictions"]
    assert first == {"y": 3.0, "label": "a-v1",
                     "tag_bytes": {"b64": base64.b64encode(b"a").decode()}}
    assert second["y"] == 0.75
    assert second["label"] == {"b64": base64.b64encode(b"\xffz-v1").decode()}

    columnar = {"signature_name": "serving_default",
                "inputs": {"x": [[0.1, 0.2]], "tag": ["c"]}}
    code, body = _http(server, "POST", f"/v1/models/{NAME}/versions/1:predict", columnar)
    assert code == 200, body
    assert body["outputs"]["y"] == [pytest.approx(0.3)] and body["outputs"]["label"] == ["c-v1"]

    # One input and one output: plain lists on both sides.
    code, body = _http(server, "POST", f"/v1/models/{NAME}:predict",
                       {"signature_name": "ids", "instances": [3, 4]})
    assert (code, body) == (200, {"predictions": [3, 4]})
    code, body = _http(server, "POST", f"/v1/models/{NAME}:predict",
                       {"signature_name": "ids", "inputs": [7]})
    assert (code, body) == (200, {"outputs": [7]})


def test_rest_status_and_metadata(server):
    expected = {"model_version_status": [{"version": "1", "state": "AVAILABLE",
                                          "status": {"error_code": "OK", "error_message": ""}}]}
    assert _http(server, "GET", f"/v1/models/{NAME}") == (200, expected)
    assert _http(server, "GET", f"/v1/models/{NAME}/versions/1") == (200, expected)
    code, body = _http(server, "GET", f"/v1/models/{NAME}/metadata")
    assert code == 200
    assert body["model_spec"] == {"name": NAME, "signature_name": "", "version": "1"}
    signatures = body["metadata"]["signature_def"]["signature_def"]
    assert signatures["serving_default"]["method_name"] == "tensorflow/serving/predict"
    assert signatures["serving_default"]["inputs"]["x"]["dtype"] == "DT_FLOAT"
    assert signatures["ids"]["outputs"]["out"]["dtype"] == "DT_INT64"
    code, body = _http(server, "GET", f"/v1/models/{NAME}/versions/1/metadata")
    assert code == 200 and body["model_spec"]["version"] == "1"


@pytest.mark.parametrize("method,path,body,status,message", [
    ("POST", "/v1/models/nope:predict", {"instances": [1]}, 404,
     "Servable not found for request: Latest(nope)"),
    ("POST", f"/v1/models/{NAME}/versions/3:predict", {"instances": [1]}, 404,
     f"Servable not found for request: Specific({NAME}, 3)"),
    ("POST", f"/v1/models/{NAME}:predict", {"signature_name": "nope", "instances": [1]}, 400,
     'Serving signature name: "nope" not found in signature def'),
    ("POST", f"/v1/models/{NAME}:predict", b"{not json", 400, "JSON Parse error"),
    ("POST", f"/v1/models/{NAME}:predict", b"", 400, "JSON Parse error: The document is empty"),
    ("POST", f"/v1/models/{NAME}:predict", [1, 2], 400, "Is not object"),
    ("POST", f"/v1/models/{NAME}:predict", {"signature_name": 3, "inputs": [1]}, 400,
     "'signature_name' key must be a string value"),
    ("POST", f"/v1/models/{NAME}:predict", {"signature_name": "ids"}, 400,
     "Missing 'inputs' or 'instances' key"),
    ("POST", f"/v1/models/{NAME}:predict", {"signature_name": "ids", "instances": ["x"]}, 400,
     "is not of expected type: int64"),
    ("POST", f"/v1/models/{NAME}:predict", {"signature_name": "ids", "instances": [1.5]}, 400,
     "is not of expected type: int64"),
    ("POST", f"/v1/models/{NAME}:predict", {"instances": [{"x": [1, "a"], "tag": "t"}]}, 400,
     "is not of expected type: float"),
    ("POST", f"/v1/models/{NAME}:predict", {"inputs": {"x": [[1, 2], [3]], "tag": ["a", "b"]}},
     400, "Encountered list at unexpected size"),
    ("POST", f"/v1/models/{NAME}:predict", {"inputs": {"x": [1, 2, 3], "tag": ["a"]}}, 400,
     "Invalid reduction dimension"),
    ("POST", f"/v1/models/{NAME}:predict", {"inputs": {"x": [[1, 2]]}}, 400,
     "Missing named input: tag in 'inputs' object."),
    ("POST", f"/v1/models/{NAME}:predict", {"instances": [{"x": [1, 2]}]}, 400,
     "keys must be equal to: tag,x"),
    ("POST", f"/v1/models/{NAME}:predict", {"instances": [1, 2]}, 400,
     "instances is a plain list, but expecting list of objects"),
    ("POST", f"/v1/models/{NAME}:predict", {"instances": []}, 400, "No values in 'instances'"),
    ("POST", f"/v1/models/{NAME}:predict", {"instances": [{"x": [1, 2], "tag": {"b64": "%%"}}]},
     400, "Unable to base64 decode"),
    ("POST", f"/v1/models/{NAME}:classify", {"examples": []}, 400,
     "'examples' value is an empty array"),
    ("GET", "/v1/models", None, 400, "Missing model name in request."),
    ("GET", "/v1/models/nope", None, 404, "Could not find any versions of model nope"),
    ("GET", f"/v1/models/{NAME}/versions/5", None, 404,
     f"Could not find version 5 of model {NAME}"),
    ("GET", "/v1/models/nope/metadata", None, 404, "Servable not found for request: Latest(nope)"),
    ("PUT", f"/v1/models/{NAME}", None, 400, "Malformed request: PUT"),
    ("GET", "/elsewhere", None, 404, "Not found"),
])
def test_rest_errors_follow_tf_serving(server, method, path, body, status, message):
    code, payload = _http(server, method, path, body)
    assert code == status, payload
    assert message in payload["error"]


def test_oversized_requests_are_refused(server, channel):
    big = {"signature_name": "ids", "instances": list(range(300_000))}  # ~2 MB > 1 MB
    code, payload = _http(server, "POST", f"/v1/models/{NAME}:predict", big)
    assert code == 413 and "exceeds the limit" in payload["error"]
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    code, _ = _grpc_error(stub.Predict, _predict_request(
        signature="ids", n=np.arange(300_000, dtype=np.int64)))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    # ...and the server is still fine afterwards.
    assert _http(server, "POST", f"/v1/models/{NAME}:predict",
                 {"signature_name": "ids", "instances": [1]}) == (200, {"predictions": [1]})


def test_row_cap_and_slow_clients(exports, tmp_path):
    """Requests of more than ``max_batch_rows`` rows are refused on both APIs; a REST
    client that trickles its request is cut off at the read deadline (others are served
    meanwhile), while an idle keep-alive connection is not."""
    base = _base_with(tmp_path, exports, 1)
    with serve(str(base), NAME, rest_port=0, grpc_port=0, poll_seconds=0, host="127.0.0.1",
               max_batch_rows=10, rest_read_timeout_s=0.5) as running:
        code, payload = _http(running, "POST", f"/v1/models/{NAME}:predict",
                              {"signature_name": "ids", "instances": list(range(11))})
        assert code == 400 and "11 rows; at most 10" in payload["error"]
        assert _http(running, "POST", f"/v1/models/{NAME}:predict",
                     {"signature_name": "ids", "instances": list(range(10))})[0] == 200
        with grpc.insecure_channel(f"127.0.0.1:{running.grpc_port}") as ch:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
            code, details = _grpc_error(stub.Predict, _predict_request(
                signature="ids", n=np.arange(11, dtype=np.int64)))
            assert code == grpc.StatusCode.INVALID_ARGUMENT and "at most 10" in details
        with socket.create_connection(("127.0.0.1", running.rest_port), timeout=5) as slow, \
                socket.create_connection(("127.0.0.1", running.rest_port), timeout=5) as idle:
            slow.sendall(b"POST /v1/models/toy:predict HTTP/1.1\r\n")
            started = time.monotonic()
            assert _http(running, "GET", f"/v1/models/{NAME}")[0] == 200  # not blocked
            time.sleep(0.3)
            slow.sendall(b"Host: x\r\n")  # a byte now and then does not extend it
            assert slow.recv(1024) == b""  # cut off, nothing answered
            assert time.monotonic() - started < 1.5
            time.sleep(0.3)  # idle for longer than the read deadline: still usable
            idle.sendall(f"GET /v1/models/{NAME} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            assert idle.recv(65536).startswith(b"HTTP/1.1 200")


def test_batching_server_answers_each_caller_its_own_rows(exports, tmp_path):
    """With --enable_batching, concurrent gRPC and REST calls are merged, and each caller
    gets exactly its own answer."""
    from concurrent.futures import ThreadPoolExecutor

    from serving.model_server.batching import BatchingParameters
    base = _base_with(tmp_path, exports, 1)
    with serve(str(base), NAME, rest_port=0, grpc_port=0, poll_seconds=0, host="127.0.0.1",
               batching=BatchingParameters(max_batch_size=16, batch_timeout_micros=20_000,
                                           num_batch_threads=1)) as running, \
            grpc.insecure_channel(f"127.0.0.1:{running.grpc_port}") as ch:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)

        def grpc_call(n):
            response = stub.Predict(_predict_request(
                signature="ids", n=np.array([n, n + 1000], np.int64)), timeout=30)
            return tf.make_ndarray(response.outputs["out"]).tolist()

        def rest_call(n):
            return _http(running, "POST", f"/v1/models/{NAME}:predict",
                         {"signature_name": "ids", "instances": [n]})[1]["predictions"]
        with ThreadPoolExecutor(12) as pool:
            got = list(pool.map(grpc_call, range(12)))
            assert got == [[n, n + 1000] for n in range(12)]
            assert list(pool.map(rest_call, range(12))) == [[n] for n in range(12)]
        assert running.batcher.batches < running.batcher.batched_calls == 24


# ------------------------------------------------------------------------------ versions
def test_hot_swap_without_failed_requests(exports, tmp_path):
    base = _base_with(tmp_path, exports, 1)
    running = serve(str(base), NAME, rest_port=0, grpc_port=0, poll_seconds=0.2,
                    host="127.0.0.1")
    answers, failures, stop = [], [], threading.Event()

    def client():
        with grpc.insecure_channel(f"127.0.0.1:{running.grpc_port}") as ch:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    if i % 2:
                        response = stub.Predict(_predict_request(
                            signature="ids", n=np.array([10], np.int64)), timeout=30)
                        answers.append((response.model_spec.version.value,
                                        int(tf.make_ndarray(response.outputs["out"])[0])))
                    else:
                        code, body = _http(running, "POST", f"/v1/models/{NAME}:predict",
                                           {"signature_name": "ids", "instances": [10]})
                        assert code == 200, body
                        answers.append((None, body["predictions"][0]))
                except Exception as e:  # noqa: BLE001 - every failure is a test failure
                    failures.append(repr(e))

    threads = [threading.Thread(target=client) for _ in range(2)]
    try:
        for t in threads:
            t.start()
        time.sleep(0.5)
        shutil.copytree(exports[2], base / "2")   # not atomic: the poller may see it half-copied
        assert running.versions.wait_for_version(2, timeout=60), running.versions.status()
        assert running.versions.wait_for_version(1, "END", timeout=30)
        seen = len(answers)
        deadline = time.time() + 30
        while len(answers) < seen + 10 and time.time() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    try:
        assert not failures, failures[:3]
        values = [value for _, value in answers]
        assert values[0] == 10 and values[-1] == 20
        assert set(values) == {10, 20}
        assert {v for v, value in answers if v is not None} == {1, 2}
        assert all(value == 2 * 10 for v, value in answers if v == 2)
        code, body = _http(running, "GET", f"/v1/models/{NAME}")
        assert code == 200
        states = {s["version"]: s["state"] for s in body["model_version_status"]}
        assert states == {"1": "END", "2": "AVAILABLE"}
        assert running.versions.serving_versions() == [2]
        code, body = _http(running, "POST", f"/v1/models/{NAME}/versions/1:predict",
                           {"signature_name": "ids", "instances": [1]})
        assert code == 404
    finally:
        running.stop()


def _look_twice(versions):
    """A new version directory loads on the second look, once its files are settled."""
    versions.poll()
    versions.poll()


def test_old_version_retires_after_in_flight_requests(exports, tmp_path):
    from serving.model_server.predict import run_predict
    base = _base_with(tmp_path, exports, 1)
    versions = ModelVersions(str(base), NAME, poll_seconds=0).start()
    try:
        with versions.handle() as held:
            assert held.version == 1
            shutil.copytree(exports[2], base / "2")
            _look_twice(versions)
            assert versions.serving_versions() == [2]
            assert {s.version: s.state for s in versions.status()} == {1: "UNLOADING",
                                                                       2: "AVAILABLE"}
            # The request that holds version 1 still completes on it.
            _, out = run_predict(held, "ids", {"n": np.array([3], np.int64)})
            assert out["out"].tolist() == [3]
        assert versions.status(1)[0].state == "END"
        assert held.model is None
    finally:
        versions.stop()


def test_failed_version_is_reported_and_never_replaces_a_good_one(exports, tmp_path):
    base = _base_with(tmp_path, exports, 1)
    broken = base / "3"
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"not a saved model")
    # At start-up the newest version is broken: the older good one is served.
    versions = ModelVersions(str(base), NAME, poll_seconds=0, max_load_retries=0).start()
    try:
        assert versions.serving_versions() == [1]
        states = {s.version: s for s in versions.status()}
        assert states[1].state == "AVAILABLE"
        assert states[3].state == "END" and states[3].error_code != grpc.StatusCode.OK
        assert states[3].error_message
        # A later good version replaces version 1; a broken newer one does not replace it.
        shutil.copytree(exports[2], base / "2")
        _look_twice(versions)
        assert versions.serving_versions() == [2]
        broken4 = base / "4"
        shutil.copytree(exports[2], broken4)
        (broken4 / "saved_model.pb").write_bytes(b"\x00garbage")
        _look_twice(versions)
        assert versions.serving_versions() == [2]
        assert versions.status(4)[0].state == "END" and versions.status(4)[0].error_message
    finally:
        versions.stop()


def test_latest_n_and_specific_version_policies(exports, tmp_path):
    base = _base_with(tmp_path, exports, 1, 2)
    versions = ModelVersions(str(base), NAME, poll_seconds=0, num_latest=2).start()
    try:
        assert versions.serving_versions() == [1, 2]
        with versions.handle() as latest:
            assert latest.version == 2
        with versions.handle(1) as specific:
            assert specific.version == 1
    finally:
        versions.stop()
    versions = ModelVersions(str(base), NAME, poll_seconds=0, specific_versions=[1]).start()
    try:
        assert versions.serving_versions() == [1]
    finally:
        versions.stop()


def test_serves_a_savedmodel_with_scann_ops(tmp_path):
    """The ``Scann`` op namespace is registered before loading (models/serving.py's index)."""
    from models.serving import SCANN_NAMESPACE, make_index

    class _Search(tf.Module):
        def __init__(self):
            super().__init__()
            rng = np.random.default_rng(0)
            embeddings = tf.constant(rng.normal(size=(120, 8)).astype(np.float32))
            ids = tf.constant([f"item{i}" for i in range(120)])
            self.index = make_index("scann", embeddings, ids, k=5)

        @tf.function(input_signature=[tf.TensorSpec([None, 8], tf.float32, "query_embeddings")])
        def search(self, query_embeddings):
            scores, ids = self.index(query_embeddings, k=5)
            return {"ids": ids, "scores": scores}

    module = _Search()
    base = tmp_path / "scann_base"
    tf.saved_model.save(module, str(base / "1"),
                        signatures={"serving_default": module.search.get_concrete_function()},
                        options=tf.saved_model.SaveOptions(namespace_whitelist=[SCANN_NAMESPACE]))
    # A fresh process (`stars serve model --no-native`): nothing imported scann for it.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        rest_port = probe.getsockname()[1]
    log = open(tmp_path / "server.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "serving.model_server.server", "--no-native",
         "--model-base-path", str(base), "--model-name", "scann_toy", "--host", "127.0.0.1",
         "--port", "0", "--rest-api-port", str(rest_port)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        ready = json.loads(process.stdout.readline() or "null")
        assert ready and ready["versions"] == [1], (tmp_path / "server.log").read_text()[-3000:]
        with grpc.insecure_channel(f"127.0.0.1:{ready['grpc_port']}") as ch:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
            response = stub.Predict(_predict_request(
                name="scann_toy", query_embeddings=np.ones([2, 8], np.float32)), timeout=60)
        ids = tf.make_ndarray(response.outputs["ids"])
        assert ids.shape == (2, 5)
        assert all(len(set(row.tolist())) == 5 for row in ids)
        with urllib.request.urlopen(f"http://127.0.0.1:{rest_port}/v1/models/scann_toy",
                                    timeout=30) as reply:
            assert json.load(reply)["model_version_status"][0]["state"] == "AVAILABLE"
        process.send_signal(signal.SIGTERM)  # clean shutdown
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()


# ------------------------------------------------------------------------------ command line
def test_cli_registers_model_under_serve():
    import argparse

    from serving.model_server.cli import add_serve_model_parser, run_serve_model
    parser = argparse.ArgumentParser(prog="stars")
    serve_parser = parser.add_subparsers(dest="command").add_parser("serve")
    add_serve_model_parser(serve_parser.add_subparsers(dest="serve_command"))
    args = parser.parse_args(["serve", "model", "--model-base-path", "/m", "--port", "9000",
                              "--rest_api_port", "0", "--no-native"])
    assert args.func is run_serve_model
    assert (args.model_base_path, args.model_name, args.port, args.rest_api_port,
            args.no_native) == ("/m", "stars", 9000, 0, True)


def test_main_execs_a_native_tensorflow_model_server(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "argv.txt"
    fake = bin_dir / "tensorflow_model_server"
    fake.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {record}\n")
    fake.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    subprocess.run([sys.executable, "-m", "serving.model_server.server", "--model-base-path",
                    "models/toy", "--model-name", "toy", "--port", "9500",
                    "--rest-api-port", "9501", "--file-system-poll-wait-seconds", "5"],
                   cwd=REPO, env=env, check=True, timeout=120, capture_output=True)
    assert record.read_text().split() == [
        "--port=9500", "--rest_api_port=9501", "--model_name=toy",
        f"--model_base_path={os.path.join(REPO, 'models/toy')}",
        "--file_system_poll_wait_seconds=5"]
    # the serving flags that TF Serving shares are passed on with its spelling
    batching = tmp_path / "batching.pbtxt"
    batching.write_text("max_batch_size { value: 8 }\n")
    subprocess.run([sys.executable, "-m", "serving.model_server.server", "--model-base-path",
                    "models/toy", "--tensorflow_intra_op_parallelism", "1",
                    "--tensorflow-inter-op-parallelism", "2", "--enable_batching",
                    "--batching_parameters_file", str(batching)],
                   cwd=REPO, env=env, check=True, timeout=120, capture_output=True)
    assert record.read_text().split()[-4:] == [
        "--tensorflow_intra_op_parallelism=1", "--tensorflow_inter_op_parallelism=2",
        "--enable_batching=true", f"--batching_parameters_file={batching}"]


def test_native_model_config_for_non_default_policies():
    import argparse

    from serving.model_server import server as server_module
    args = server_module.build_parser().parse_args(
        ["--model-base-path", "/m/stars", "--versions", "3,4"])
    argv = server_module.native_argv("/bin/tensorflow_model_server", args)
    config_flag = [a for a in argv if a.startswith("--model_config_file=")]
    assert config_flag and not any(a.startswith("--model_name") for a in argv)
    text = open(config_flag[0].split("=", 1)[1]).read()
    os.unlink(config_flag[0].split("=", 1)[1])
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2
    [model] = text_format.Parse(
        text, model_server_config_pb2.ModelServerConfig()).model_config_list.config
    assert (model.name, model.base_path, model.model_platform) == ("stars", "/m/stars",
                                                                   "tensorflow")
    assert list(model.model_version_policy.specific.versions) == [3, 4]
    assert isinstance(args, argparse.Namespace)


# ------------------------------------------------------------------------------ e2e
@pytest.mark.e2e
def test_serves_the_pushed_stars_scann_model(pushed_model):
    config, model_base = pushed_model
    with open(os.path.join(config.data_dir, "interactions.csv")) as f:
        rows = list(csv.DictReader(f))
    users = {}
    for row in rows:
        users.setdefault(row["user_id"], []).append(row)
    histories = [events[-5:] for events in list(users.values())[:2]]
    width = max(len(h) for h in histories)

    def pad(values, fill):
        return [values + [fill] * (width - len(values))]
    ids = np.array(sum((pad([e["item_id"] for e in h], "") for h in histories), []), object)
    kinds = np.array(sum((pad([e["event_type"] for e in h], "") for h in histories), []), object)
    stamps = np.array(sum((pad([int(e["timestamp"]) for e in h], 0) for h in histories), []),
                      np.int64)
    now = np.array([max(int(e["timestamp"]) for e in h) + 60 for h in histories], np.int64)

    running = serve(model_base, config.model_name, rest_port=0, grpc_port=0, poll_seconds=0,
                    host="127.0.0.1")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.grpc_port}") as ch:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
            response = stub.Predict(_predict_request(
                name=config.model_name, signature="serving_default", history_item_ids=ids,
                history_event_types=kinds, history_timestamps=stamps, request_timestamp=now),
                timeout=120)
        gi_ids = tf.make_ndarray(response.outputs["gi_ids"])
        ni_ids = tf.make_ndarray(response.outputs["ni_ids"])
        k = min(config.top_k, len({r["item_id"] for r in rows}))
        assert gi_ids.shape[0] == 2 and gi_ids.shape[1] <= config.top_k
        for name, block in (("gi_ids", gi_ids), ("ni_ids", ni_ids)):
            for row in block:  # K distinct ids per user
                assert len(row) == gi_ids.shape[1] > 0
                assert len(set(row.tolist())) == len(row), (name, row.tolist())
        assert gi_ids.shape[1] <= k
        # REST on the same model, columnar.
        code, body = _http(running, "POST", f"/v1/models/{config.model_name}:predict", {
            "inputs": {"history_item_ids": ids.astype(str).tolist(),
                       "history_event_types": kinds.astype(str).tolist(),
                       "history_timestamps": stamps.tolist(), "request_timestamp": now.tolist()}})
        assert code == 200, body
        assert [len(set(r)) for r in body["outputs"]["gi_ids"]] == [gi_ids.shape[1]] * 2
    finally:
        running.stop()


# ------------------------------------------------------------------ gRPC socket and arguments

def test_channel_arguments_parse_as_tf_serving_does():
    from serving.model_server.grpc_service import parse_channel_arguments
    assert parse_channel_arguments("grpc.max_connection_age_ms=2000,grpc.lb_policy_name=grpclb") \
        == [("grpc.max_connection_age_ms", 2000), ("grpc.lb_policy_name", "grpclb")]
    assert parse_channel_arguments("") == []
    with pytest.raises(ValueError, match="--grpc_channel_arguments: expected key=value"):
        parse_channel_arguments("grpc.max_connection_age_ms")


def test_grpc_on_a_unix_socket_with_channel_arguments(exports, tmp_path):
    """--grpc_socket_path serves gRPC on a Unix socket beside the port; a channel argument
    overrides ours (a 1 KiB receive limit refuses a 2 KiB request)."""
    base = _base_with(tmp_path, exports, 1)
    socket_path = str(tmp_path / "model.sock")
    running = serve(str(base), NAME, rest_port=None, grpc_port=0, poll_seconds=0,
                    host="127.0.0.1", grpc_socket_path=socket_path,
                    grpc_channel_arguments="grpc.max_receive_message_length=1024")
    try:
        small = _predict_request(x=np.ones((2, 2), np.float32), tag=np.array([b"a", b"b"]))
        with grpc.insecure_channel(f"unix:{socket_path}") as unix_channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(unix_channel)
            answer = stub.Predict(small, timeout=30)
            assert tf.make_ndarray(answer.outputs["y"]).tolist() == [2.0, 2.0]
            big = _predict_request(x=np.ones((128, 2), np.float32),
                                   tag=np.array([b"t"] * 128))
            code, _ = _grpc_error(stub.Predict, big)
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        with grpc.insecure_channel(f"127.0.0.1:{running.grpc_port}") as tcp_channel:
            answer = prediction_service_pb2_grpc.PredictionServiceStub(tcp_channel).Predict(
                small, timeout=30)
            assert tf.make_ndarray(answer.outputs["y"]).tolist() == [2.0, 2.0]
    finally:
        running.stop()


def test_grpc_outputs_are_in_their_typed_fields_as_tf_serving_sends_them(server, channel):
    """TF Serving fills ``float_val`` & co. (``Tensor::AsProtoField``), not ``tensor_content``:
    a client reading ``outputs['y'].float_val`` gets every row."""
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    answer = stub.Predict(_predict_request(x=np.array([[1, 2], [3, 4], [5, 6]], np.float32),
                                           tag=np.array([b"a", b"b", b"c"])), timeout=30)
    y = answer.outputs["y"]
    assert not y.tensor_content and list(y.float_val) == [3.0, 7.0, 11.0]
    assert [d.size for d in y.tensor_shape.dim] == [3]
    ids = stub.Predict(_predict_request(signature="ids", n=np.array([1, 2], np.int64)),
                       timeout=30).outputs["out"]
    assert not ids.tensor_content and list(ids.int64_val) == [1, 2]
    assert list(answer.outputs["label"].string_val) == [b"a-v1", b"b-v1", b"c-v1"]


# ------------------------------------------------------------------ pushes copied in place

class _Vocabulary(tf.Module):
    """``index`` of a word in ``assets/vocab.txt``: the answer depends on an asset file."""

    def __init__(self, vocab_path: str):
        super().__init__()
        self.vocab = tf.saved_model.Asset(vocab_path)
        self.table = tf.lookup.StaticHashTable(tf.lookup.TextFileInitializer(
            self.vocab, tf.string, tf.lookup.TextFileIndex.WHOLE_LINE,
            tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER), -1)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, "word")])
    def lookup(self, word):
        return {"index": self.table.lookup(word)}


@pytest.fixture(scope="module")
def vocabulary_export(tmp_path_factory):
    """A SavedModel whose assets/vocab.txt is "a", "b", "c" (so "c" -> 2)."""
    root = tmp_path_factory.mktemp("vocabulary")
    (root / "vocab.txt").write_text("a\nb\nc\n")
    module = _Vocabulary(str(root / "vocab.txt"))
    tf.saved_model.save(module, str(root / "export"),
                        signatures={"serving_default": module.lookup.get_concrete_function()})
    return root / "export"


def _index_of(versions, word: str, version=None) -> int:
    from serving.model_server.predict import run_predict
    with versions.handle(version) as servable:
        _, out = run_predict(servable, "serving_default", {"word": np.array([word.encode()])})
    return int(out["index"][0])


def _rewrite(path, text: str, bump_s: int) -> None:
    path.write_text(text)
    stat = path.stat()  # a distinct modification time, even within one clock tick
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + bump_s * 1_000_000_000))


def test_a_push_copied_in_place_is_loaded_only_once_its_files_settle(
        vocabulary_export, exports, tmp_path):
    """Version 2 arrives file by file (assets last, written twice): no poll loads it while
    its files change; once they settle it is served, with the final assets."""
    base = _base_with(tmp_path, exports, 1)
    versions = ModelVersions(str(base), NAME, poll_seconds=0).start()
    try:
        target = base / "2"
        shutil.copytree(vocabulary_export, target, ignore=shutil.ignore_patterns("assets"))
        versions.poll()  # complete SavedModel files, assets still missing: first look
        (target / "assets").mkdir()
        _rewrite(target / "assets" / "vocab.txt", "c\n", 1)  # half-written
        versions.poll()
        assert versions.serving_versions() == [1]
        _rewrite(target / "assets" / "vocab.txt", "a\nb\nc\n", 2)  # the copy finishes
        versions.poll()
        assert versions.serving_versions() == [1]
        versions.poll()  # unchanged since the last look: settled
        assert versions.serving_versions() == [2]
        assert _index_of(versions, "c") == 2
    finally:
        versions.stop()


def test_a_serving_version_whose_files_change_is_reloaded(vocabulary_export, tmp_path):
    """Assets re-pushed into the serving version: once settled the version is loaded again
    and swapped in; it stays AVAILABLE throughout, and a request holding the old copy
    finishes on it."""
    base = tmp_path / "base" / NAME
    shutil.copytree(vocabulary_export, base / "1")
    versions = ModelVersions(str(base), NAME, poll_seconds=0).start()
    try:
        assert _index_of(versions, "c") == 2
        with versions.handle() as old:
            _rewrite(base / "1" / "assets" / "vocab.txt", "c\nb\na\n", 1)
            versions.poll()  # changed since the last look: not settled yet
            assert _index_of(versions, "c") == 2
            versions.poll()
            assert _index_of(versions, "c") == 0  # the new assets
            assert versions.status(1)[0].state == "AVAILABLE"
            assert old.model is not None  # held: retired only after the request
        assert old.model is None
        assert versions.serving_versions() == [1] and versions.status(1)[0].state == "AVAILABLE"
    finally:
        versions.stop()
