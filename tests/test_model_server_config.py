"""``stars serve model`` with TF Serving's model config file, version labels, config reloads
(file poll and gRPC HandleReloadConfigRequest), Prometheus monitoring and the REST deadline;
the sidecar's model client addressing a version by label."""

import http.client
import json
import os
import shutil
import subprocess
import sys
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from prometheus_client.parser import text_string_to_metric_families
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving.model_server import ServingError, serve
from serving.model_server.server import ConfigFilePoller

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METRICS = "/monitoring/prometheus/metrics"


class _Scale(tf.Module):
    """Version N: ``y = N * x``: every answer says which version computed it."""

    def __init__(self, factor: float):
        super().__init__()
        self.factor = tf.Variable(factor)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, "x")])
    def scale(self, x):
        return {"y": x * self.factor}


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("scale_exports")
    paths = {}
    for factor in (1, 2, 3):
        module = _Scale(float(factor))
        paths[factor] = str(root / str(factor))
        tf.saved_model.save(module, paths[factor],
                            signatures={"serving_default": module.scale.get_concrete_function()})
    return paths


def _base(root, name, exports, versions):
    """``<root>/<name>/<v>/`` holding the export ``factor`` for each ``v: factor``."""
    base = root / name
    base.mkdir(parents=True, exist_ok=True)
    for version, factor in versions.items():
        shutil.copytree(exports[factor], base / str(version))
    return str(base)


def _config(*models) -> str:
    """A ModelServerConfig text: ``models`` are ``(name, base, policy, labels)``."""
    entries = []
    for name, base, policy, labels in models:
        label_text = "".join(f'    version_labels {{ key: "{k}" value: {v} }}\n'
                             for k, v in labels.items())
        entries.append(f'  config {{\n    name: "{name}"\n    base_path: "{base}"\n'
                       f'    model_platform: "tensorflow"\n'
                       f"    model_version_policy {{ {policy} }}\n{label_text}  }}\n")
    return "model_config_list {\n" + "".join(entries) + "}\n"


def _write(path, text):
    """Replaces the file at once (as a ConfigMap update does), so a poll never reads half."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _http(server, method, path, body=None):
    conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
    try:
        conn.request(method, path, body=None if body is None else json.dumps(body))
        response = conn.getresponse()
        payload = response.read()
        if response.getheader("Content-Type", "").startswith("application/json"):
            return response.status, json.loads(payload) if payload else None
        return response.status, payload.decode()
    finally:
        conn.close()


def _rest_predict(server, model, selector=""):
    """``(status, y of input 1.0 | error)``; ``selector``: "/versions/N" or "/labels/L"."""
    code, body = _http(server, "POST", f"/v1/models/{model}{selector}:predict",
                       {"instances": [1.0]})
    return (code, body["predictions"][0]) if code == 200 else (code, body["error"])


def _grpc_request(message, name, version=None, label=None):
    request = message()
    request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    return request


def _grpc_predict(channel, name, version=None, label=None):
    request = _grpc_request(predict_pb2.PredictRequest, name, version, label)
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([1.0], np.float32)))
    response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
        request, timeout=30)
    return response.model_spec.version.value, float(tf.make_ndarray(response.outputs["y"])[0])


def _grpc_error(call, request):
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=60)
    return info.value.code(), info.value.details()


def _reload(channel, config_text):
    request = model_management_pb2.ReloadConfigRequest()
    text_format.Parse(config_text, request.config)
    return model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest(
        request, timeout=120)


def _eventually(check, timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


# ------------------------------------------------------------------------------ config file
def test_two_models_with_labels_over_rest_and_grpc_and_the_poll(exports, tmp_path):
    """Two models from one config file; labels answer over REST and gRPC with TF Serving's
    errors; the poll applies a policy change, then a label move, then a model removal, and
    refuses (changing nothing) a label that points at a version not available."""
    alpha = _base(tmp_path, "alpha", exports, {1: 1, 2: 2, 3: 3})
    beta = _base(tmp_path, "beta", exports, {7: 3})
    config_file = str(tmp_path / "models.pbtxt")
    _write(config_file, _config(
        ("alpha", alpha, "specific { versions: 1 versions: 2 }", {"stable": 1, "canary": 2}),
        ("beta", beta, "latest { num_versions: 1 }", {})))
    with serve(rest_port=0, grpc_port=0, poll_seconds=0, host="127.0.0.1",
               model_config_file=config_file, model_config_poll_seconds=0.2,
               allow_version_labels_for_unavailable_models=True) as server, \
            grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        assert server.models.names() == ["alpha", "beta"]
        assert server.models.get("alpha").serving_versions() == [1, 2]
        # REST: by label, by version, latest; the other model.
        assert _rest_predict(server, "alpha", "/labels/stable") == (200, 1.0)
        assert _rest_predict(server, "alpha", "/labels/canary") == (200, 2.0)
        assert _rest_predict(server, "alpha") == (200, 2.0)
        assert _rest_predict(server, "beta") == (200, 3.0)
        assert _rest_predict(server, "alpha", "/labels/nope") == (
            400, "Unrecognized servable version label: nope")
        assert _rest_predict(server, "gamma", "/labels/stable") == (
            400, "Unrecognized servable version label: stable")
        code, body = _http(server, "GET", "/v1/models/alpha/labels/stable/metadata")
        assert code == 200 and body["model_spec"]["version"] == "1"
        # TF Serving's status does not look at the label: every version.
        code, body = _http(server, "GET", "/v1/models/alpha/labels/canary")
        assert code == 200 and [s["version"] for s in body["model_version_status"]] == ["1", "2"]
        # gRPC: Predict and GetModelMetadata by label.
        assert _grpc_predict(channel, "alpha", label="stable") == (1, 1.0)
        assert _grpc_predict(channel, "alpha", label="canary") == (2, 2.0)
        assert _grpc_predict(channel, "beta") == (7, 3.0)
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        metadata_request = _grpc_request(get_model_metadata_pb2.GetModelMetadataRequest,
                                         "alpha", label="stable")
        metadata_request.metadata_field.append("signature_def")
        assert stub.GetModelMetadata(metadata_request, timeout=30).model_spec.version.value == 1
        bad = _grpc_request(predict_pb2.PredictRequest, "alpha", label="nope")
        assert _grpc_error(stub.Predict, bad) == (
            grpc.StatusCode.INVALID_ARGUMENT, "Unrecognized servable version label: nope")
        assert _grpc_error(stub.Predict, _grpc_request(predict_pb2.PredictRequest, "")) == (
            grpc.StatusCode.INVALID_ARGUMENT, "ModelSpec has no name specified.")

        # 1. The poll applies a policy change: version 3 loads, the labels stay.
        _write(config_file, _config(
            ("alpha", alpha, "specific { versions: 1 versions: 2 versions: 3 }",
             {"stable": 1, "canary": 2}),
            ("beta", beta, "latest { num_versions: 1 }", {})))
        assert server.models.get("alpha").wait_for_version(3, timeout=60)
        assert _eventually(lambda: _rest_predict(server, "alpha") == (200, 3.0))
        assert _rest_predict(server, "alpha", "/labels/canary") == (200, 2.0)
        # 2. ... then a label move to the version now AVAILABLE, and beta removed.
        _write(config_file, _config(
            ("alpha", alpha, "specific { versions: 1 versions: 2 versions: 3 }",
             {"stable": 1, "canary": 3})))
        assert _eventually(lambda: _rest_predict(server, "alpha", "/labels/canary")
                           == (200, 3.0))
        assert _eventually(lambda: _rest_predict(server, "beta") == (
            404, "Servable not found for request: Latest(beta)"))
        assert _eventually(lambda: _http(server, "GET", "/v1/models/beta")[1][
            "model_version_status"][0]["state"] == "END", timeout=60)
        # 3. Moving an existing label to a version not loaded is refused even with
        #    --allow_version_labels_for_unavailable_models: nothing changes.
        refused = _config(("alpha", alpha, "specific { versions: 1 versions: 2 versions: 3 }",
                           {"stable": 1, "canary": 9}))
        _write(config_file, refused)
        poller = ConfigFilePoller(config_file, server.models, 1.0)
        assert poller.poll() is False
        assert _rest_predict(server, "alpha", "/labels/canary") == (200, 3.0)
        # ... and a file that does not parse changes nothing either.
        _write(config_file, "model_config_list { config { name: ")
        assert poller.poll() is False
        assert server.models.labels("alpha") == {"stable": 1, "canary": 3}


def test_labels_at_start_need_the_allow_flag(exports, tmp_path):
    """TF Serving checks labels before loading anything: at start every version is
    unavailable, so labels in the initial config need
    --allow_version_labels_for_unavailable_models (its docs' "startup" case).  With the
    flag, a label on a version that never loads answers NOT_FOUND for that version."""
    alpha = _base(tmp_path, "alpha", exports, {1: 1})
    with pytest.raises(ServingError) as info:
        serve(rest_port=0, grpc_port=None, poll_seconds=0, host="127.0.0.1",
              model_config=_config(("alpha", alpha, "", {"stable": 1})))
    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert info.value.message == ("Request to assign label to version 1 of model alpha, which "
                                  "is not currently available for inference")
    text = _config(("alpha", alpha, "", {"stable": 1, "later": 4}))
    with serve(rest_port=0, grpc_port=None, poll_seconds=0, host="127.0.0.1", model_config=text,
               allow_version_labels_for_unavailable_models=True) as server:
        assert _rest_predict(server, "alpha", "/labels/stable") == (200, 1.0)
        assert _rest_predict(server, "alpha", "/labels/later") == (
            404, "Servable not found for request: Specific(alpha, 4)")


def test_handle_reload_config_request(exports, tmp_path):
    """gRPC ModelService.HandleReloadConfigRequest: TF Serving's two-step canary (a label
    may only move to a version already AVAILABLE), a model added, refused configs."""
    alpha = _base(tmp_path, "alpha", exports, {1: 1, 2: 2})
    beta = _base(tmp_path, "beta", exports, {1: 3})
    with serve(rest_port=0, grpc_port=0, poll_seconds=0, host="127.0.0.1",
               model_config=_config(("alpha", alpha, "specific { versions: 1 }", {}))) \
            as server, grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        model_stub = model_service_pb2_grpc.ModelServiceStub(channel)
        request = model_management_pb2.ReloadConfigRequest()
        # One step (load version 2 and label it) is refused: version 2 is not loaded yet.
        text_format.Parse(_config(("alpha", alpha, "specific { versions: 1 versions: 2 }",
                                   {"canary": 2})), request.config)
        assert _grpc_error(model_stub.HandleReloadConfigRequest, request) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "Request to assign label to version 2 of model alpha, which is not currently "
            "available for inference")
        assert server.models.get("alpha").serving_versions() == [1]
        # Two steps: load it, then label it; beta added on the way (loaded on return).
        response = _reload(channel, _config(
            ("alpha", alpha, "specific { versions: 1 versions: 2 }", {"stable": 1}),
            ("beta", beta, "", {})))
        assert response.status.error_code == 0
        assert server.models.get("alpha").serving_versions() == [1, 2]
        assert _grpc_predict(channel, "beta") == (1, 3.0)
        _reload(channel, _config(
            ("alpha", alpha, "specific { versions: 1 versions: 2 }", {"stable": 1, "canary": 2}),
            ("beta", beta, "", {})))
        assert _grpc_predict(channel, "alpha", label="canary") == (2, 2.0)
        assert _grpc_predict(channel, "alpha", label="stable") == (1, 1.0)
        # Policy "all" and a label kept: nothing else moves.
        _reload(channel, _config(("alpha", alpha, "all {}", {"stable": 1}),
                                 ("beta", beta, "", {})))
        assert _grpc_predict(channel, "alpha", label="stable") == (1, 1.0)
        assert _grpc_error(prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict,
                           _grpc_request(predict_pb2.PredictRequest, "alpha",
                                         label="canary"))[0] == grpc.StatusCode.INVALID_ARGUMENT
        # Refused configs: ServerCore's and HandleReloadConfigRequest's own checks.
        for text, code, message in (
                (_config(("alpha", "relative/path", "", {})), grpc.StatusCode.INVALID_ARGUMENT,
                 "Expected model alpha to have an absolute path or URI; got "
                 "base_path()=relative/path"),
                (_config(("alpha", alpha, "", {}), ("alpha", beta, "", {})),
                 grpc.StatusCode.INVALID_ARGUMENT,
                 "Illegal to list model alpha multiple times in config list"),
                (_config(("gamma", str(tmp_path / "missing"), "", {})),
                 grpc.StatusCode.INVALID_ARGUMENT,
                 f"Could not find base path {tmp_path / 'missing'} for servable gamma"),
                (_config(("alpha", alpha, "", {})).replace("tensorflow", "tflite"),
                 grpc.StatusCode.INVALID_ARGUMENT,
                 "Model alpha requests unsupported platform tflite")):
            request = model_management_pb2.ReloadConfigRequest()
            text_format.Parse(text, request.config)
            assert _grpc_error(model_stub.HandleReloadConfigRequest, request) == (code, message)
        custom = model_management_pb2.ReloadConfigRequest()
        custom.config.custom_model_config.type_url = "type.googleapis.com/x"
        assert _grpc_error(model_stub.HandleReloadConfigRequest, custom) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "ServerModelConfig type not supported by HandleReloadConfigRequest. Only "
            "ModelConfigList is currently supported")
        assert server.models.names() == ["alpha", "beta"]
        # GetModelStatus of every model; metric names are answered.
        status_request = _grpc_request(get_model_status_pb2.GetModelStatusRequest, "beta")
        [state] = model_stub.GetModelStatus(status_request, timeout=30).model_version_status
        assert state.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
        request = model_management_pb2.ReloadConfigRequest()
        request.config.CopyFrom(server.models.config)
        request.metric_names.append("/tensorflow/serving/request_count")
        [metric] = model_stub.HandleReloadConfigRequest(request, timeout=30).metric
        assert metric.name == "/tensorflow/serving/request_count"


def test_a_bad_config_file_fails_at_start(tmp_path):
    """TF Serving's testBadModelConfig: the parser's message, and the file named."""
    bad = tmp_path / "bad_model_config.txt"
    bad.write_text("improperly formatted file")
    process = subprocess.run(
        [sys.executable, "-m", "serving.model_server.server", "--no-native",
         "--model_config_file", str(bad), "--port", "0", "--rest_api_port", "0"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert process.returncode == 2
    assert "Error parsing text-format tensorflow.serving.ModelServerConfig: 1:1:" \
        in process.stderr
    assert f"Invalid protobuf file: '{bad}'" in process.stderr


def test_command_line_policy_flags_and_native_argv(tmp_path):
    """--num-latest/--versions are the one model's policy: with a config file they are an
    error; TF Serving's flags reach a native tensorflow_model_server with its spelling."""
    from serving.model_server import server as server_module
    parser = server_module.build_parser()
    with pytest.raises(ValueError, match="with --model_config_file"):
        server_module._check_policy_flags(parser.parse_args(
            ["--model_config_file", "/c.pbtxt", "--num-latest", "2"]))
    with pytest.raises(ValueError, match="model_base_path and .*model_config_file are empty"):
        server_module._check_policy_flags(parser.parse_args([]))
    args = parser.parse_args([
        "--model_config_file", "conf/models.pbtxt", "--model_config_file_poll_wait_seconds",
        "30", "--allow_version_labels_for_unavailable_models=true", "--monitoring_config_file",
        "conf/monitoring.pbtxt", "--rest_api_timeout_in_ms", "5000", "--enable_batching=false"])
    server_module._check_policy_flags(args)
    assert args.allow_unavailable_labels is True and args.enable_batching is False
    argv = server_module.native_argv("/bin/tensorflow_model_server", args)
    assert argv[1:] == [
        "--port=8500", "--rest_api_port=8501",
        f"--model_config_file={os.path.abspath('conf/models.pbtxt')}",
        "--model_config_file_poll_wait_seconds=30", "--file_system_poll_wait_seconds=1",
        "--allow_version_labels_for_unavailable_models=true",
        f"--monitoring_config_file={os.path.abspath('conf/monitoring.pbtxt')}",
        "--rest_api_timeout_in_ms=5000"]
    assert parser.parse_args(["--model_base_path", "/m", "--enable_batching"]).enable_batching


# ------------------------------------------------------------------------------ monitoring
def test_prometheus_metrics_on_the_rest_port(exports, tmp_path):
    """TF Serving's testPrometheusEndpoint, and the counts and latencies it keeps."""
    alpha = _base(tmp_path, "alpha", exports, {1: 1, 2: 2})
    monitoring = tmp_path / "monitoring_config.txt"
    monitoring.write_text('prometheus_config: {\n  enable: true,\n  path: "%s"\n}\n' % METRICS)
    with serve(alpha, "alpha", rest_port=0, grpc_port=0, poll_seconds=0, host="127.0.0.1",
               num_latest=2, monitoring_config_file=str(monitoring)) as server, \
            grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        for _ in range(2):
            assert _rest_predict(server, "alpha")[0] == 200
        assert _rest_predict(server, "alpha", "/versions/5")[0] == 404
        assert _http(server, "GET", "/v1/models/alpha")[0] == 200
        assert _grpc_predict(channel, "alpha", version=1) == (1, 1.0)
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        _grpc_error(stub.Predict, _grpc_request(predict_pb2.PredictRequest, "alpha", label="x"))

        conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
        conn.request("GET", METRICS)
        response = conn.getresponse()
        page = response.read().decode()
        conn.close()
        assert response.status == 200
        assert response.getheader("Content-Type").startswith("text/plain")
        assert "# TYPE" in page
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for family in text_string_to_metric_families(page) for s in family.samples}

        def value(name, **labels):
            return samples.get((name, tuple(sorted(labels.items()))))
        count = ":tensorflow:serving:request_count_total"
        assert value(count, model_name="alpha", status="OK") == 4  # 2 + status + gRPC
        assert value(count, model_name="alpha", status="NOT_FOUND") == 1
        assert value(count, model_name="alpha", status="INVALID_ARGUMENT") == 1
        latency = ":tensorflow:serving:request_latency_count"
        assert value(latency, model_name="alpha", API="predict", entrypoint="REST") == 2
        assert value(latency, model_name="alpha", API="", entrypoint="REST") == 1
        assert value(latency, model_name="alpha", API="Predict", entrypoint="GRPC") == 1
        assert value(":tensorflow:serving:request_latency_sum", model_name="alpha",
                     API="predict", entrypoint="REST") > 0
        for version in ("1", "2"):
            assert value("stars_model_server_version_state", model_name="alpha",
                         version=version, state="AVAILABLE") == 1
    # Without a monitoring config there is no such page.
    with serve(alpha, "alpha", rest_port=0, grpc_port=None, poll_seconds=0,
               host="127.0.0.1") as server:
        assert _http(server, "GET", METRICS)[0] == 404


# ------------------------------------------------------------------------------ REST deadline
def test_rest_api_timeout_in_ms(exports, tmp_path):
    """A REST inference call past --rest_api_timeout_in_ms answers 504 DEADLINE_EXCEEDED on
    time; status calls and fast calls are not affected."""
    from serving.model_server.versions import load_saved_model
    alpha = _base(tmp_path, "alpha", exports, {1: 1})

    class _Slow:
        def __init__(self, model, seconds):
            self.model, self.seconds = model, seconds
            self.signatures = {key: self._slow(fn) for key, fn in model.signatures.items()}

        def _slow(self, fn):
            def call(**feeds):
                if float(feeds["x"].numpy()[0]) > 10:
                    time.sleep(self.seconds)
                return fn(**feeds)
            return call

    with serve(alpha, "alpha", rest_port=0, grpc_port=None, poll_seconds=0, host="127.0.0.1",
               loader=lambda path: _Slow(load_saved_model(path), 2.0),
               rest_api_timeout_s=0.3) as server:
        started = time.monotonic()
        code, body = _http(server, "POST", "/v1/models/alpha:predict", {"instances": [99.0]})
        assert (code, time.monotonic() - started < 1.5) == (504, True)
        assert "Deadline exceeded" in body["error"]
        assert _rest_predict(server, "alpha") == (200, 1.0)
        assert _http(server, "GET", "/v1/models/alpha")[0] == 200


# ------------------------------------------------------------------------------ sidecar
def test_the_sidecar_addresses_a_version_by_label(tmp_path):
    """`stars serve sidecar --model-version-label stable`: unpinned calls go to the
    label's version, not the latest; calls pinned to a stored embedding's version keep it;
    moving the label (a config reload) moves the sidecar."""
    from serving.sidecar.cli import add_serve_sidecar_parser
    from serving.sidecar.model_client import (
        Event,
        GrpcModelClient,
        ModelContext,
        RestModelClient,
    )
    from tests.test_sidecar_model_client import FakeStarsModule

    base = tmp_path / "stars"
    for version in (1, 2):
        module = FakeStarsModule(seed=version)
        tf.saved_model.save(module, str(base / str(version)), signatures=module.signatures())
    text = _config(("stars", str(base), "all {}", {"stable": 1}))
    with serve(rest_port=0, grpc_port=0, poll_seconds=0, host="127.0.0.1", model_config=text,
               allow_version_labels_for_unavailable_models=True) as server, \
            grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        clients = (GrpcModelClient(f"127.0.0.1:{server.grpc_port}", "stars", 5.0,
                                   version_label="stable"),
                   RestModelClient(f"http://127.0.0.1:{server.rest_port}", "stars", 5.0,
                                   status_ttl_s=0.0, version_label="stable"))
        query, now = np.linspace(-1, 1, 8), 1_700_000_000
        context = ModelContext(now, (1.0, 0, 0, 0), "us", {"age": 30.0, "domain": "x"})
        for client in clients:
            assert client.model_version() == "1"
            assert client.search({"gi": query}, 5).model_version == "1"
            assert client.search({"gi": query}, 5, version="2").model_version == "2"
            assert client.recommend([Event("it3", "view", now - 9)], context,
                                    5).model_version == "1"
            assert client.context_offset(now, (1.0,))[1] == "1"
        # Unlabelled, the same calls go to the latest version.
        assert GrpcModelClient(f"127.0.0.1:{server.grpc_port}", "stars",
                               5.0).search({"gi": query}, 5).model_version == "2"
        _reload(channel, _config(("stars", str(base), "all {}", {"stable": 2})))
        for client in clients:
            assert client.model_version() == "2"
            assert client.search({"gi": query}, 5).model_version == "2"

    import argparse
    parser = argparse.ArgumentParser(prog="stars")
    add_serve_sidecar_parser(parser.add_subparsers(dest="serve_command"))
    args = parser.parse_args(["sidecar", "--data-dir", "/d", "--model-version-label", "stable"])
    assert args.model_version_label == "stable"


# ------------------------------------------------------------------------------ deploy
def test_deploy_files_share_one_model_config():
    """deploy/: one model config and one monitoring config, read by TF Serving and by
    `stars serve model` with the same flags (compose, its Python override, Kubernetes)."""
    import yaml

    from serving.model_server import model_config
    from serving.model_server import server as server_module
    deploy = os.path.join(REPO, "deploy")
    config = model_config.read_model_server_config(
        os.path.join(deploy, "config", "model_config.pbtxt"))
    model_config.validate(config)
    assert [m.base_path for m in config.model_config_list.config] == ["/models/stars"]
    monitoring = model_config.read_monitoring_config(
        os.path.join(deploy, "config", "monitoring_config.pbtxt"))
    assert model_config.prometheus_path(monitoring) == METRICS
    with open(os.path.join(deploy, "docker-compose.yml")) as f:
        compose = yaml.safe_load(f)["services"]["tfserving"]
    with open(os.path.join(deploy, "docker-compose.python-model-server.yml")) as f:
        python = yaml.safe_load(f)["services"]["tfserving"]
    with open(os.path.join(deploy, "k8s", "tfserving.yaml")) as f:
        [deployment] = [d for d in yaml.safe_load_all(f) if d["kind"] == "Deployment"]
    k8s_args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "./config:/config:ro" in compose["volumes"]
    assert python["command"] == compose["command"]
    assert python["entrypoint"][:3] == ["stars", "serve", "model"]
    for flags in (compose["command"], k8s_args):
        assert "--model_config_file=/config/model_config.pbtxt" in flags
        assert "--monitoring_config_file=/config/monitoring_config.pbtxt" in flags
        args = server_module.build_parser().parse_args(python["entrypoint"][3:] + flags)
        server_module._check_policy_flags(args)
        assert args.allow_unavailable_labels and args.config_poll_seconds == 60
        assert args.enable_batching and \
            args.batching_parameters_file == "/config/batching_parameters.pbtxt"
    # the batching the reliability benchmark measured: no wait, batches form under load
    from serving.model_server.batching import BatchingParameters
    params = BatchingParameters.from_file(
        os.path.join(deploy, "config", "batching_parameters.pbtxt"))
    assert params.batch_timeout_micros == 0 and params.max_batch_size >= 8
