"""Classify, Regress, MultiInference, Predict's shapes and JSON numbers, as TF Serving answers.

The model is ``half_plus_two`` as TF Serving's ``saved_model_half_plus_two.py`` generator
defines it (``y = 0.5 x + 2``, ``y2 = 0.5 x + 3``, ``y3 = 0.5 x2 + 3``; ``tf.Example``
features ``x`` and ``x2`` (default 0)), written here with a few extra signatures for the
error paths.  Expected answers and messages come from TF Serving's ``classifier.cc``,
``regressor.cc``, ``multi_inference.cc``, ``util.cc``, ``json_tensor.cc``,
``http_rest_api_handler.cc`` and ``tensorflow_model_server_test.py``.
"""
import http.client
import json
import math

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    classification_pb2,
    inference_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from serving.model_server import json_text, serve, tensors

NAME = "half_plus_two"
VERSION = 123
DBL_MAX = 1.7976931348623157e308


class _HalfPlusTwo(tf.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = tf.Variable(0.5), tf.Variable(2.0), tf.Variable(3.0)

    @staticmethod
    def _feature(serialized, key="x"):
        return tf.io.parse_example(serialized, {
            "x": tf.io.FixedLenFeature([1], tf.float32),
            "x2": tf.io.FixedLenFeature([1], tf.float32, default_value=[0.0])})[key]

    @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32)])
    def predict(self, x):
        return {"y": self.a * x + self.b}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def regress_x_to_y(self, inputs):
        return {"outputs": self.a * self._feature(inputs) + self.b}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def regress_x_to_y2(self, inputs):
        return {"outputs": self.a * self._feature(inputs) + self.c}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def regress_x2_to_y3(self, inputs):
        return {"outputs": self.a * self._feature(inputs, "x2") + self.c}

    @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32)])
    def regress_from_floats(self, inputs):  # ``inputs`` is not a string: fed examples fail
        return {"outputs": self.a * inputs + self.c}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def classify_x_to_y(self, inputs):
        return {"scores": self.a * self._feature(inputs) + self.b}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def classify_x_to_y_y2(self, inputs):
        x = self._feature(inputs)
        classes = tf.tile(tf.constant([["y", "y2"]]), [tf.shape(x)[0], 1])
        return {"classes": classes,
                "scores": tf.concat([self.a * x + self.b, self.a * x + self.c], 1)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def regress_two_columns(self, inputs):
        y = self.a * self._feature(inputs) + self.b
        return {"outputs": tf.concat([y, y], 1)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def classify_int_scores(self, inputs):
        return {"scores": tf.cast(self._feature(inputs), tf.int64)}

    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32)])
    def matmul(self, x):
        return {"y": tf.matmul(x, tf.ones([2, 1]))}

    @tf.function(input_signature=[tf.TensorSpec(None, tf.float32)])
    def echo(self, x):
        return {"y": tf.identity(x)}

    @tf.function(input_signature=[tf.TensorSpec(None, tf.float64)])
    def echo_double(self, x):
        return {"y": tf.identity(x)}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("inference") / NAME
    module = _HalfPlusTwo()
    signatures = {name: getattr(module, name).get_concrete_function() for name in (
        "regress_x_to_y", "regress_x_to_y2", "regress_x2_to_y3", "regress_from_floats",
        "classify_x_to_y", "classify_x_to_y_y2", "regress_two_columns", "classify_int_scores",
        "matmul", "echo", "echo_double")}
    signatures["serving_default"] = module.predict.get_concrete_function()
    tf.saved_model.save(module, str(base / str(VERSION)), signatures=signatures)
    running = serve(str(base), NAME, rest_port=0, grpc_port=0, poll_seconds=0,
                    host="127.0.0.1")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def stub(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)


def _post(server, path, body):
    """(status, raw text, parsed JSON) of a REST call."""
    conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=60)
    try:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        conn.request("POST", path, body=data)
        response = conn.getresponse()
        text = response.read().decode()
        return response.status, text, json.loads(text)
    finally:
        conn.close()


def _grpc_error(call, request):
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=60)
    return info.value.code(), info.value.details()


def _examples(target, *xs):
    for x in xs:
        example = target.examples.add()
        if x is not None:
            example.features.feature["x"].float_list.value.append(x)


def _classification_request(signature, *xs):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = NAME
    request.model_spec.signature_name = signature
    _examples(request.input.example_list, *xs)
    return request


def _regression_request(signature, *xs):
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = NAME
    request.model_spec.signature_name = signature
    _examples(request.input.example_list, *xs)
    return request


# ------------------------------------------------------------------------------ gRPC
def test_grpc_classify_and_regress(stub):
    """tensorflow_model_server_test.py _TestClassify / _TestRegress (x = 2 -> 3)."""
    result = stub.Classify(_classification_request("classify_x_to_y", 2.0), timeout=60)
    assert [[(c.label, c.score) for c in r.classes] for r in result.result.classifications] \
        == [[("", 3.0)]]
    assert (result.model_spec.name, result.model_spec.signature_name,
            result.model_spec.version.value) == (NAME, "classify_x_to_y", VERSION)

    result = stub.Classify(_classification_request("classify_x_to_y_y2", 2.0, 4.0), timeout=60)
    assert [[(c.label, c.score) for c in r.classes] for r in result.result.classifications] \
        == [[("y", 3.0), ("y2", 4.0)], [("y", 4.0), ("y2", 5.0)]]

    result = stub.Regress(_regression_request("regress_x_to_y", 2.0, 6.0), timeout=60)
    assert [r.value for r in result.result.regressions] == [3.0, 5.0]
    assert (result.model_spec.signature_name, result.model_spec.version.value) == (
        "regress_x_to_y", VERSION)


def test_grpc_regress_with_context(stub):
    """example_list_with_context: each example is the context merged with it (util.cc)."""
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = NAME
    request.model_spec.signature_name = "regress_x2_to_y3"
    listed = request.input.example_list_with_context
    listed.context.features.feature["x"].float_list.value.append(0.0)
    listed.context.features.feature["x2"].float_list.value.append(2.0)
    listed.examples.add().features.feature["x"].float_list.value.append(1.0)
    listed.examples.add().features.feature["x2"].float_list.value.append(10.0)
    result = stub.Regress(request, timeout=60)
    assert [r.value for r in result.result.regressions] == [4.0, 8.0]  # 0.5 * x2 + 3


def test_grpc_multi_inference(stub):
    """tensorflow_model_server_test.py _TestMultiInference."""
    request = inference_pb2.MultiInferenceRequest()
    for signature, method in (("regress_x_to_y", "tensorflow/serving/regress"),
                              ("classify_x_to_y", "tensorflow/serving/classify")):
        task = request.tasks.add()
        task.model_spec.name = NAME
        task.model_spec.signature_name = signature
        task.method_name = method
    _examples(request.input.example_list, 2.0)
    result = stub.MultiInference(request, timeout=60)
    assert len(result.results) == 2
    assert result.results[0].regression_result.regressions[0].value == 3.0
    assert result.results[1].classification_result.classifications[0].classes[0].score == 3.0
    for task, answer in zip(request.tasks, result.results):
        assert (answer.model_spec.name, answer.model_spec.signature_name,
                answer.model_spec.version.value) == (NAME, task.model_spec.signature_name,
                                                     VERSION)


def _multi(*tasks, examples=(2.0,)):
    request = inference_pb2.MultiInferenceRequest()
    for name, signature, method in tasks:
        task = request.tasks.add()
        task.model_spec.name = name
        task.model_spec.signature_name = signature
        task.method_name = method
    _examples(request.input.example_list, *examples)
    return request


CLASSIFY, REGRESS = "tensorflow/serving/classify", "tensorflow/serving/regress"


@pytest.mark.parametrize("request_,code,message", [
    (_multi((NAME, "regress_x_to_y", REGRESS), (NAME, "regress_x_to_y", CLASSIFY)),
     grpc.StatusCode.INVALID_ARGUMENT, "Duplicate evaluation of signature: regress_x_to_y"),
    (_multi((NAME, "regress_x_to_y", REGRESS), ("other", "classify_x_to_y", CLASSIFY)),
     grpc.StatusCode.INVALID_ARGUMENT,
     "All ModelSpecs in a MultiInferenceRequest must access the same model name."),
    (_multi((NAME, "regress_x_to_y", "tensorflow/serving/predict")),
     grpc.StatusCode.UNIMPLEMENTED,
     "Unsupported signature method_name: tensorflow/serving/predict"),
    (_multi((NAME, "nope", REGRESS)), grpc.StatusCode.INVALID_ARGUMENT,
     "Requested signature not found in model graph: nope"),
    (_multi((NAME, "regress_x_to_y", REGRESS), examples=()), grpc.StatusCode.INVALID_ARGUMENT,
     "Input is empty."),
    (_multi(), grpc.StatusCode.INVALID_ARGUMENT, "ModelSpec has no name specified."),
])
def test_grpc_multi_inference_errors(stub, request_, code, message):
    assert _grpc_error(stub.MultiInference, request_) == (code, message)


def test_grpc_classify_regress_errors(stub):
    def classify(*args):
        return _grpc_error(stub.Classify, _classification_request(*args))

    def regress(*args):
        return _grpc_error(stub.Regress, _regression_request(*args))
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    assert classify("nope", 1.0) == (invalid, "No signature was found with the name: nope")
    code, message = classify("", 1.0)  # serving_default is a predict signature on ``x``
    assert code == invalid
    assert message.startswith("No classification inputs found in SignatureDef: inputs {")
    code, message = regress("classify_x_to_y_y2", 1.0)
    assert (code, message) == (invalid, "Expected one output Tensor.")
    assert classify("classify_x_to_y") == (invalid, "Input is empty.")
    assert regress("regress_two_columns", 1.0) == (
        invalid, "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] "
                 "but got [1,2]")
    assert classify("classify_int_scores", 1.0) == (
        invalid, "Expected scores Tensor of DT_FLOAT. Got: DT_INT64")
    assert regress("regress_from_floats", 1.0) == (
        invalid, "Expects arg[0] to be float but string is provided")
    code, message = regress("regress_x_to_y", None)  # an example without the feature x
    assert code == invalid and "x" in message and "[Op:" not in message
    request = _regression_request("regress_x_to_y", 1.0)
    request.model_spec.name = "nope"
    assert _grpc_error(stub.Regress, request) == (
        grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(nope)")
    request.ClearField("model_spec")
    assert _grpc_error(stub.Regress, request) == (invalid, "Missing ModelSpec")


# ------------------------------------------------------------------------------ REST
def test_rest_classify_and_regress(server):
    """tensorflow_model_server_test.py testClassifyREST / testRegressREST and
    http_rest_api_handler_test.cc (versions and labels of the path)."""
    path = f"/v1/models/{NAME}"
    assert _post(server, f"{path}:classify",
                 {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]})[2] == \
        {"results": [[["", 3.0]]]}
    assert _post(server, f"{path}:regress",
                 {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]})[2] == \
        {"results": [3.0]}
    assert _post(server, f"{path}/versions/{VERSION}:regress",
                 {"signature_name": "regress_x_to_y", "examples": [{"x": 80.0}]})[2] == \
        {"results": [42.0]}
    status, text, body = _post(server, f"{path}:classify", {
        "signature_name": "classify_x_to_y_y2", "examples": [{"x": 2.0}, {"x": [4.0]}]})
    assert status == 200 and body == {"results": [[["y", 3.0], ["y2", 4.0]],
                                                  [["y", 4.0], ["y2", 5.0]]]}
    # The context's features are every example's, an example's own ones win.
    assert _post(server, f"{path}:regress", {
        "signature_name": "regress_x2_to_y3", "context": {"x2": 2.0, "x": 0.0},
        "examples": [{}, {"x2": 10.0}]})[2] == {"results": [4.0, 8.0]}
    assert _post(server, f"{path}/versions/9:regress",
                 {"signature_name": "regress_x_to_y", "examples": [{"x": 1.0}]})[:1] == (404,)


def _document(**members):
    return json_text.debug_string(members)


@pytest.mark.parametrize("body,message", [
    ({"signature_name": 100, "examples": [{"x": 1.0}]},
     'JSON Value: {\n    "signature_name": 100,\n    "examples": [{\n            "x": 1.0\n'
     "        }]\n} not formatted correctly. 'signature_name' key must be a string value."),
    ({"signature_name": "regress_x_to_y"},
     'JSON Value: {\n    "signature_name": "regress_x_to_y"\n} When method is classify, key '
     "'examples' is expected and was not found"),
    ({"examples": {"x": 1.0}},
     'JSON Value: {\n    "examples": {\n        "x": 1.0\n    }\n} Expecting \'examples\' value '
     "to be an list/array"),
    ({"examples": []}, 'JSON Value: {\n    "examples": []\n} \'examples\' value is an empty array'),
    ({"examples": [[1]]}, "Example must be JSON object but got JSON Array"),
    ({"context": "x", "examples": [{"x": 1.0}]}, "Example must be JSON object but got JSON String"),
    ({"examples": [{"names": None}]}, "Feature: names has element with unexpected JSON type: Null"),
    ({"examples": [{"names": [1, 2.5]}]},
     "Unexpected element type in feature: names expecting type: int64"),
    ({"examples": [{"names": ["a", 1]}]},
     "Unexpected element type in feature: names expecting type: bytes"),
    ({"examples": [{"names": {"a": 1}}]},
     "Feature: names has element with unexpected JSON type: Object"),
    ({"examples": [{"names": [[1]]}]},
     "Feature: names has element with unexpected JSON type: Array"),
    ({"examples": [{"names": 18446744073709551615}]},
     "Feature: names has uint64_t element. Only int64_t is supported."),
    ({"examples": [{"names": {"b64": "%%"}}]}, "Unable to base64 decode"),
    (b"", "JSON Parse error: The document is empty"),
    (b"examples = [1]", "JSON Parse error: Invalid value. at offset: 0"),
    (b'{"examples": [{"x": 1.0}', "JSON Parse error: Missing a comma or ']' after an array "
                                  "element. at offset: 24"),
    ([1], "JSON Value: [1] Is not object"),
])
@pytest.mark.parametrize("verb", ["classify", "regress"])
def test_rest_classify_regress_refuses_malformed_bodies(server, verb, body, message):
    """json_tensor.cc FillClassifyRegressRequestFromJson (ClassifyRegressRequestTest.JsonErrors)
    and ParseJson: 400 and TF Serving's message, before the model is looked up."""
    status, _, answer = _post(server, f"/v1/models/nope:{verb}", body)
    assert (status, answer) == (400, {"error": message})


def test_rest_classify_regress_model_errors(server):
    path = f"/v1/models/{NAME}"
    assert _post(server, f"{path}:regress", {"signature_name": "nope",
                                             "examples": [{"x": 1.0}]})[::2] == (
        400, {"error": "No signature was found with the name: nope"})
    assert _post(server, f"{path}:classify", {"signature_name": "classify_int_scores",
                                              "examples": [{"x": 1.0}]})[::2] == (
        400, {"error": "Expected scores Tensor of DT_FLOAT. Got: DT_INT64"})
    status, _, answer = _post(server, f"{path}:regress", {"signature_name": "regress_x_to_y",
                                                         "examples": [{"x": 1}]})
    assert status == 400 and "Data types don't match" in answer["error"]  # int64_list for x


def test_rest_version_that_does_not_fit_int64(server):
    """http_rest_api_handler_test.cc: the version is absl::SimpleAtoi'd into an int64."""
    for verb in ("regress", "predict"):
        assert _post(server, f"/v1/models/{NAME}/versions/18446744073709551615:{verb}",
                     {"examples": [{"x": 1.0}]})[::2] == (
            400, {"error": "Failed to convert version: 18446744073709551615 to numeric."})


# ------------------------------------------------------------------------------ Predict
def test_predict_feeds_shapes_as_given(server, stub):
    """testPredictREST / testPredictColumnarREST: [3] to an input of shape [-1, 1]."""
    path = f"/v1/models/{NAME}:predict"
    assert _post(server, path, {"instances": [2.0, 3.0, 4.0]})[2] == \
        {"predictions": [3.0, 3.5, 4.0]}
    assert _post(server, path, {"inputs": [2.0, 3.0, 4.0]})[2] == {"outputs": [3.0, 3.5, 4.0]}
    request = predict_pb2.PredictRequest()
    request.model_spec.name = NAME
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([2.0, 3.0, 4.0], np.float32)))
    response = stub.Predict(request, timeout=60)
    assert tf.make_ndarray(response.outputs["y"]).tolist() == [3.0, 3.5, 4.0]
    # A shape the graph cannot take: TensorFlow's own message, INVALID_ARGUMENT.
    status, _, answer = _post(server, path, {"signature_name": "matmul",
                                             "instances": [[1.0, 2.0, 3.0]]})
    assert status == 400
    assert answer["error"].startswith("Matrix size-incompatible: In[0]: [1,3], In[1]: [2,1]")
    request = predict_pb2.PredictRequest()
    request.model_spec.name = NAME
    request.model_spec.signature_name = "matmul"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.ones([1, 3], np.float32)))
    code, message = _grpc_error(stub.Predict, request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "Matrix size-incompatible" in message


def test_predict_json_numbers(server):
    """json_tensor_test.cc: MixedInputForFloatTensor, FloatTensorWithPrecisionLoss,
    FloatTensorThatExceedsMaxReturnsInf, FromJsonSingleFloatTensorSixDigitPrecision /
    NonFinite; the written text is WriteDecimal's."""
    path = f"/v1/models/{NAME}:predict"

    def echo(values, signature="echo"):
        status, text, _ = _post(server, path, {"signature_name": signature, "inputs": values})
        assert status == 200, text
        return text

    assert echo([1, 2.0, 3, 4, 5.003, 0.007, 0.0]) == \
        '{"outputs":[1.0,2.0,3.0,4.0,5.003,0.007,0.0]}'
    assert echo([1435774380]) == '{"outputs":[1.43577434e+09]}'  # float32's nearest, %.9g
    assert echo([DBL_MAX, -DBL_MAX, 1e39]) == '{"outputs":[Infinity,-Infinity,Infinity]}'
    assert echo([2.2250738585072014e-308]) == '{"outputs":[0.0]}'
    assert echo([1 / 3, 0.1, 1e6, 1234567.0, 100000, 9e-5, 1e-45]) == \
        '{"outputs":[0.333333343,0.1,1e+06,1234567.0,100000.0,9e-05,1.4013e-45]}'
    assert echo([1 / 3, 0.1, 2, 1e300], "echo_double") == \
        '{"outputs":[0.33333333333333331,0.1,2.0,1e+300]}'
    status, text, _ = _post(server, path, b'{"signature_name": "echo", "inputs": [NaN, -Inf]}')
    assert (status, text) == (200, '{"outputs":[NaN,-Infinity]}')
    # Integers for an integer input stay within its JSON range.
    status, _, answer = _post(server, path, {"signature_name": "echo", "inputs": ["a"]})
    assert status == 400 and answer["error"] == \
        'JSON Value: "a" Type: String is not of expected type: float'


def test_rest_json_as_rapidjson_reads_it(server):
    """json_tensor_test.cc DeeplyNestedWellFormed / DeeplyNestedMalformed; rapidjson's
    kParseStopWhenDoneFlag (trailing text ignored) and its parse errors."""
    path = f"/v1/models/{NAME}:predict"
    deep = (b'{"signature_name": "echo", "instances": [1], "nested": ' + b"[" * 500000
            + b"]" * 500000 + b"}")
    assert _post(server, path, deep)[::2] == (200, {"predictions": [1.0]})
    malformed = b'{"signature_name": ' + b"[" * 500000 + b"]" * 500000 + b"}"
    status, _, answer = _post(server, path, malformed)
    assert status == 400 and answer["error"].endswith(
        "not formatted correctly. 'signature_name' key must be a string value.")
    assert _post(server, path, b'{"signature_name": "echo", "inputs": [1]} trailing')[::2] == (
        200, {"outputs": [1.0]})
    assert _post(server, path, b'{"inputs": [1, 2,]}')[::2] == (
        400, {"error": "JSON Parse error: Invalid value. at offset: 17"})
    assert _post(server, path, b'{"inputs": [1e400]}')[::2] == (
        400, {"error": "JSON Parse error: Number too big to be stored in double. at offset: 12"})


# ------------------------------------------------------------------------------ units
def test_decimal_texts_follow_write_decimal():
    values = np.array([0.2, 1 / 3, 3.0, 9000000.0, 0.00003, -0.0, math.inf, math.nan],
                      np.float32)
    assert tensors.decimal_texts(values) == [
        "0.2", "0.333333343", "3.0", "9e+06", "3e-05", "-0.0", "Infinity", "NaN"]


def test_debug_string_is_rapidjsons_pretty_writer():
    assert json_text.debug_string({"a": [1, 2.5, {"b": None}], "c": {}, "d": 1e30}) == (
        '{\n    "a": [1, 2.5, {\n            "b": null\n        }],\n    "c": {},\n'
        '    "d": 1e30\n}')
    assert json_text.debug_string([0.000001, 1e-7, 1e21, 123.0, "\x01"]) == \
        '[0.000001, 1e-7, 1e21, 123.0, "\\u0001"]'
    long = json_text.debug_string(list(range(1000)))
    assert 256 <= len(long) < 270 and long.startswith("[0, 1, 2")
