"""Classify, Regress and MultiInference on ``tf.Example`` signatures, as TF Serving runs them.

TF Serving (``classifier.cc``, ``regressor.cc``, ``multi_inference.cc``, ``util.cc``) turns
the request's ``Input`` into one string vector: each ``tf.Example`` serialized, and with
``example_list_with_context`` the context's bytes followed by the example's (so the two are
merged, the example winning).  That vector feeds the signature's only input, ``inputs``; the
outputs ``classes``/``scores`` (classify) or ``outputs`` (regress) are checked for shape and
dtype and copied into the result protos.  The signature's method name is not checked
(``--enable_signature_method_name_check`` is off by default): its inputs and outputs are.

The REST API builds the ``Input`` from JSON (``json_tensor.cc``: ``examples`` and an optional
``context``, each an object whose values' JSON types choose a bytes, float or int64 list) and
answers ``{"results": ...}``.  All messages are TF Serving's.
"""
from __future__ import annotations

import base64
import binascii
from typing import Any, Optional

import numpy as np

from serving.model_server import errors, predict
from serving.model_server.json_text import RawJson, debug_string, json_type, string_text

CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
INPUTS, CLASSES, SCORES, OUTPUTS = "inputs", "classes", "scores", "outputs"
_INT64 = (-(1 << 63), (1 << 63) - 1)


# ------------------------------------------------------------------------------ Input
def serialized_examples(input_proto) -> np.ndarray:
    """``InputToSerializedExampleTensor``: the string vector fed to ``inputs``."""
    kind = input_proto.WhichOneof("kind")
    if kind == "example_list":
        examples = [e.SerializeToString() for e in input_proto.example_list.examples]
    elif kind == "example_list_with_context":
        listed = input_proto.example_list_with_context
        context = listed.context.SerializeToString()
        examples = [context + e.SerializeToString() for e in listed.examples]
    else:
        examples = []
    if not examples:
        raise errors.invalid_argument("Input is empty.")
    array = np.empty(len(examples), dtype=object)
    array[:] = examples
    return array


def _example_from_json(value: Any, example) -> None:
    """``MakeExampleFromJsonObject``: each key one Feature; a list is its values."""
    if not isinstance(value, dict):
        raise errors.invalid_argument(
            f"Example must be JSON object but got JSON {json_type(value)}")
    example.SetInParent()
    for name, content in value.items():
        kind: Optional[str] = None
        values: list = []
        for item in content if isinstance(content, list) else [content]:
            if item is None or isinstance(item, list) or (
                    isinstance(item, dict) and not (len(item) == 1
                                                    and isinstance(item.get("b64"), str))):
                raise errors.invalid_argument(
                    f"Feature: {name} has element with unexpected JSON type: "
                    f"{json_type(item)}")
            if isinstance(item, (dict, str)):
                want = "bytes"
            elif isinstance(item, float):
                want = "float"
            else:  # an integer or a boolean
                want = "int64"
            if kind is not None and kind != want:
                raise errors.invalid_argument(
                    f"Unexpected element type in feature: {name} expecting type: {kind}")
            kind = want
            if isinstance(item, dict):
                try:
                    values.append(base64.b64decode(item["b64"], validate=True))
                except (binascii.Error, ValueError):
                    raise errors.invalid_argument("Unable to base64 decode") from None
            elif isinstance(item, str):
                values.append(item.encode("utf-8", "surrogatepass"))
            elif isinstance(item, float):
                with np.errstate(over="ignore"):  # GetFloat: a C cast, +-inf beyond range
                    values.append(float(np.float32(item)))
            else:
                if not _INT64[0] <= item <= _INT64[1]:
                    raise errors.invalid_argument(
                        f"Feature: {name} has uint64_t element. Only int64_t is supported.")
                values.append(int(item))
        feature = example.features.feature[name]
        if kind == "bytes":
            feature.bytes_list.value.extend(values)
        elif kind == "float":
            feature.float_list.value.extend(values)
        elif kind == "int64":
            feature.int64_list.value.extend(values)


def input_from_json(document: dict):
    """``FillClassifyRegressRequestFromJson`` after the signature name: the ``Input``."""
    from tensorflow_serving.apis import input_pb2
    request_input = input_pb2.Input()
    has_context = "context" in document
    if has_context:
        _example_from_json(document["context"],
                           request_input.example_list_with_context.context)
    if "examples" not in document:
        raise errors.invalid_argument(
            f"JSON Value: {debug_string(document)} When method is classify, key 'examples' is "
            f"expected and was not found")
    examples = document["examples"]
    if not isinstance(examples, list):
        raise errors.invalid_argument(
            f"JSON Value: {debug_string(document)} Expecting 'examples' value to be an "
            f"list/array")
    if not examples:
        raise errors.invalid_argument(
            f"JSON Value: {debug_string(document)} 'examples' value is an empty array")
    target = (request_input.example_list_with_context.examples if has_context
              else request_input.example_list.examples)
    for value in examples:
        _example_from_json(value, target.add())
    return request_input


# ------------------------------------------------------------------------------ signatures
def _signature_text(signature) -> str:
    from google.protobuf import text_format
    return text_format.MessageToString(signature)


def check_classification_signature(signature) -> list[str]:
    """``PreProcessClassification``: the output aliases to fetch (``classes``, ``scores``)."""
    if len(signature.inputs) != 1:
        raise errors.invalid_argument("Expected one input Tensor.")
    if len(signature.outputs) not in (1, 2):
        raise errors.invalid_argument(
            f"Expected one or two output Tensors, found {len(signature.outputs)}")
    if INPUTS not in signature.inputs:
        raise errors.invalid_argument(
            f"No classification inputs found in SignatureDef: {_signature_text(signature)}")
    wanted = [alias for alias in (CLASSES, SCORES) if alias in signature.outputs]
    if not wanted:
        raise errors.invalid_argument(
            f'Expected classification signature outputs to contain at least one of "{CLASSES}" '
            f'or "{SCORES}". Signature was: {_signature_text(signature)}')
    return wanted


def check_regression_signature(signature) -> list[str]:
    """``PreProcessRegression``: the output alias to fetch (``outputs``)."""
    if len(signature.inputs) != 1:
        raise errors.invalid_argument("Expected one input Tensor.")
    if len(signature.outputs) != 1:
        raise errors.invalid_argument("Expected one output Tensor.")
    if INPUTS not in signature.inputs:
        raise errors.invalid_argument(
            f"No regression inputs found in SignatureDef: {_signature_text(signature)}")
    if OUTPUTS not in signature.outputs:
        raise errors.invalid_argument(
            f"No regression outputs found in SignatureDef: {_signature_text(signature)}")
    return [OUTPUTS]


_CHECKS = {CLASSIFY_METHOD: check_classification_signature,
           REGRESS_METHOD: check_regression_signature}


def _lookup(servable, signature_name: str, method: str) -> tuple[str, Any, list[str]]:
    """``GetClassificationSignatureDef`` / ``GetRegressionSignatureDef``."""
    key = signature_name or predict.DEFAULT_SIGNATURE
    signature = servable.signature_defs.get(key)
    if signature is None or servable.signature(key) is None:
        raise errors.invalid_argument(f"No signature was found with the name: {key}")
    return key, signature, _CHECKS[method](signature)


def _run(servable, key: str, signature, examples: np.ndarray, wanted: list[str],
         max_rows: Optional[int], batcher) -> dict:
    inputs = {INPUTS: examples}
    predict.check_rows(inputs, max_rows)
    predict.check_inputs(signature, inputs)  # a non-string ``inputs`` fails as TF fails
    return predict.call_signature(servable, key, signature, inputs, wanted, batcher)


def _model_spec(target, name: str, signature_name: str, version: int) -> None:
    """``MakeModelSpec``: the request's name and signature (default filled in), the version."""
    target.name = name
    target.signature_name = signature_name or predict.DEFAULT_SIGNATURE
    target.version.value = version


# ------------------------------------------------------------------------------ results
def _shape_text(shape) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def _dtype_name(array: np.ndarray) -> str:
    """``DataType_Name`` (``DT_FLOAT``, ``DT_STRING``...)."""
    import tensorflow as tf
    from tensorflow.core.framework import types_pb2
    if array.dtype == object or array.dtype.kind in "SU":
        return "DT_STRING"
    return types_pb2.DataType.Name(tf.dtypes.as_dtype(array.dtype).as_datatype_enum)


def classification_result(outputs: dict, num_examples: int, result) -> None:
    """``PostProcessClassificationResult``: one ``Classifications`` per example."""
    checked = {}
    for alias, dtype_name in ((CLASSES, "DT_STRING"), (SCORES, "DT_FLOAT")):
        if alias not in outputs:
            continue
        array = np.asarray(outputs[alias])
        if array.ndim != 2:
            raise errors.invalid_argument(
                f"Expected Tensor shape: [batch_size num_classes] but got "
                f"{_shape_text(array.shape)}")
        if _dtype_name(array) != dtype_name:
            raise errors.invalid_argument(
                f"Expected {alias} Tensor of {dtype_name}. Got: {_dtype_name(array)}")
        if array.shape[0] != num_examples:
            raise errors.invalid_argument(
                f"Expected {alias} output batch size of {num_examples}. Got: {array.shape[0]}")
        checked[alias] = array
    classes, scores = checked.get(CLASSES), checked.get(SCORES)
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise errors.invalid_argument(
            f"Tensors class and score should match in dim_size(1). Got {classes.shape[1]} vs. "
            f"{scores.shape[1]}")
    for i in range(num_examples):
        classifications = result.classifications.add()
        labels = classes[i].tolist() if classes is not None else None
        values = scores[i].tolist() if scores is not None else None
        for c in range(len(labels if labels is not None else values or [])):
            entry = classifications.classes.add()
            if labels is not None:  # a proto string: bytes that are not UTF-8 are replaced
                entry.label = labels[c].decode("utf-8", "replace")
            if values is not None:
                entry.score = values[c]


def regression_result(outputs: dict, num_examples: int, result) -> None:
    """``PostProcessRegressionResult``: one value per example."""
    array = np.asarray(outputs[OUTPUTS])
    if not (array.ndim == 1 or (array.ndim == 2 and array.shape[1] == 1)):
        raise errors.invalid_argument(
            f"Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but "
            f"got {_shape_text(array.shape)}")
    if num_examples != array.shape[0]:
        raise errors.invalid_argument(
            f"Input batch size did not match output batch size: {num_examples} vs. "
            f"{array.shape[0]}")
    if _dtype_name(array) != "DT_FLOAT":
        raise errors.invalid_argument(
            f"Expected output Tensor of DT_FLOAT.  Got: {_dtype_name(array)}")
    if array.size != num_examples:
        raise errors.invalid_argument(
            f"Expected output batch size to be {num_examples}.  Got: {array.size}")
    for value in array.ravel().tolist():
        result.regressions.add(value=value)


# ------------------------------------------------------------------------------ the APIs
def _run_api(servable, request, method: str, response, write_result, max_rows, batcher):
    """The shared body of ``RunClassify`` / ``RunRegress``: look the signature up for
    ``method``, run it on the request's examples, write the result into ``response``."""
    spec = request.model_spec
    key, signature, wanted = _lookup(servable, spec.signature_name, method)
    _model_spec(response.model_spec, spec.name, spec.signature_name, servable.version)
    examples = serialized_examples(request.input)
    outputs = _run(servable, key, signature, examples, wanted, max_rows, batcher)
    write_result(outputs, len(examples), response.result)
    return response


def classify(servable, request, max_rows: Optional[int] = None, batcher=None):
    """``RunClassify``: a ``ClassificationRequest`` on a held servable -> response."""
    from tensorflow_serving.apis import classification_pb2
    return _run_api(servable, request, CLASSIFY_METHOD,
                    classification_pb2.ClassificationResponse(), classification_result,
                    max_rows, batcher)


def regress(servable, request, max_rows: Optional[int] = None, batcher=None):
    """``RunRegress``: a ``RegressionRequest`` on a held servable -> response."""
    from tensorflow_serving.apis import regression_pb2
    return _run_api(servable, request, REGRESS_METHOD, regression_pb2.RegressionResponse(),
                    regression_result, max_rows, batcher)


def multi_inference(servable, request, max_rows: Optional[int] = None, batcher=None):
    """``TensorFlowMultiInferenceRunner::Infer``: classify/regress tasks of one model on one
    ``Input`` (the servable is the first task's).  TF Serving fetches every task's outputs in
    one session run; here each task's signature is called on the same examples."""
    from tensorflow_serving.apis import inference_pb2
    model_name = ""
    seen: set[str] = set()
    plan = []
    for task in request.tasks:
        name = task.model_spec.name
        if not name:
            raise errors.invalid_argument("Found ModelSpec with an empty model name.")
        if not model_name:
            model_name = name
        elif model_name != name:
            raise errors.invalid_argument(
                "All ModelSpecs in a MultiInferenceRequest must access the same model name.")
        key = task.model_spec.signature_name or predict.DEFAULT_SIGNATURE
        if key in seen:
            raise errors.invalid_argument(f"Duplicate evaluation of signature: {key}")
        seen.add(key)
        signature = servable.signature_defs.get(key)
        if signature is None or servable.signature(key) is None:
            raise errors.invalid_argument(f"Requested signature not found in model graph: {key}")
        if task.method_name not in _CHECKS:
            raise errors.ServingError(errors.Code.UNIMPLEMENTED,
                                      f"Unsupported signature method_name: {task.method_name}")
        plan.append((task, key, signature, _CHECKS[task.method_name](signature)))
    examples = serialized_examples(request.input)
    outputs = [_run(servable, key, signature, examples, wanted, max_rows, batcher)
               for _, key, signature, wanted in plan]
    response = inference_pb2.MultiInferenceResponse()
    for (task, _, _, _), task_outputs in zip(plan, outputs):
        result = response.results.add()
        if task.method_name == CLASSIFY_METHOD:
            classification_result(task_outputs, len(examples), result.classification_result)
        else:
            regression_result(task_outputs, len(examples), result.regression_result)
        _model_spec(result.model_spec, task.model_spec.name, task.model_spec.signature_name,
                    servable.version)
    return response


# ------------------------------------------------------------------------------ JSON results
def classification_json(result) -> dict:
    """``MakeJsonFromClassificationResult``: ``{"results": [[[label, score], ...], ...]}``."""
    from serving.model_server.tensors import decimal_texts
    if not result.classifications:
        raise errors.invalid_argument("Cannot convert empty ClassificationResults to JSON")
    rows = []
    for classifications in result.classifications:
        classes = classifications.classes
        scores = decimal_texts(np.array([c.score for c in classes], np.float32))
        rows.append("[" + ",".join(f"[{string_text(c.label)},{score}]"
                                   for c, score in zip(classes, scores)) + "]")
    return {"results": RawJson("[" + ",".join(rows) + "]")}


def regression_json(result) -> dict:
    """``MakeJsonFromRegressionResult``: ``{"results": [value, ...]}``."""
    from serving.model_server.tensors import decimal_texts
    if not result.regressions:
        raise errors.invalid_argument("Cannot convert empty RegressionResults to JSON")
    values = decimal_texts(np.array([r.value for r in result.regressions], np.float32))
    return {"results": RawJson("[" + ",".join(values) + "]")}


__all__ = ["CLASSIFY_METHOD", "REGRESS_METHOD", "serialized_examples", "input_from_json",
           "check_classification_signature", "check_regression_signature",
           "classification_result", "regression_result", "classify", "regress",
           "multi_inference", "classification_json", "regression_json"]
