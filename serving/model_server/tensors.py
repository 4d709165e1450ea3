"""TF Serving's tensor encodings <-> numpy arrays.

* JSON (``util/json_tensor.cc`` semantics): row format ``{"instances": [...]}`` (a list of
  per-example values, or of objects keyed by input name) and columnar format
  ``{"inputs": value | {name: value}}``; strings are JSON strings or ``{"b64": "..."}``;
  responses are ``{"predictions": ...}`` (row) or ``{"outputs": ...}`` (columnar), string
  outputs whose name ends in ``_bytes`` (or that are not UTF-8) as ``{"b64": ...}``.
* ``TensorProto`` for gRPC, through ``tf.make_ndarray`` / ``tf.make_tensor_proto``.

Every malformed input raises ``ServingError(INVALID_ARGUMENT)`` with TF Serving's message.
"""
from __future__ import annotations

import base64
import binascii
import json
from typing import Mapping, Optional

import numpy as np

from serving.model_server import errors

ROW, COLUMNAR = "row", "columnar"
MAX_RANK = 32
_FLOAT_DIGITS = {np.dtype(np.float16): 11, np.dtype(np.float32): 24, np.dtype(np.float64): 53}
_TF_NAMES = {"float32": "float", "float64": "double", "float16": "half"}


def as_dtype(dtype_enum: int):
    import tensorflow as tf
    return tf.dtypes.as_dtype(dtype_enum)


def dtype_string(dtype_enum: int) -> str:
    """TF's ``DataTypeString`` (``float``, ``int64``, ``string``...)."""
    name = as_dtype(dtype_enum).name
    return _TF_NAMES.get(name, name)


# --------------------------------------------------------------------------- JSON -> arrays
def _json_text(value, limit: int = 200) -> str:
    try:
        text = json.dumps(value, separators=(",", ":"))
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _json_type(value) -> str:
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def is_b64(value) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _type_error(value, dtype_enum) -> errors.ServingError:
    return errors.invalid_argument(
        f"JSON Value: {_json_text(value)} Type: {_json_type(value)} is not of expected type: "
        f"{dtype_string(dtype_enum)}")


def _converter(dtype_enum: int):
    """``value -> python scalar`` for one JSON leaf, checked like TF Serving's AddValueToTensor."""
    dtype = as_dtype(dtype_enum)
    np_dtype = np.dtype(dtype.as_numpy_dtype) if dtype.name != "string" else None

    if dtype.name == "string":
        def convert(value):
            if isinstance(value, str):
                return value.encode("utf-8", "surrogatepass")
            if isinstance(value, dict):
                if not is_b64(value):
                    raise errors.invalid_argument(
                        f"JSON Value: {_json_text(value)} not formatted correctly for base64 data")
                try:
                    return base64.b64decode(value["b64"], validate=True)
                except (binascii.Error, ValueError):
                    raise errors.invalid_argument("Unable to base64 decode") from None
            raise _type_error(value, dtype_enum)
        return convert

    if dtype.is_floating:
        assert np_dtype is not None  # a floating dtype is not a string
        digits = _FLOAT_DIGITS.get(np_dtype, 53)
        max_int = (1 << digits) - 1
        finfo = np.finfo(np_dtype)

        def convert(value):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise _type_error(value, dtype_enum)
            if isinstance(value, int):
                if abs(value) > max_int:
                    raise errors.invalid_argument(
                        f"Cannot convert JSON value: {value} to {dtype_string(dtype_enum)} "
                        f"without loss of precision.")
                return float(value)
            if np.isfinite(value) and not (finfo.min <= value <= finfo.max):
                raise errors.invalid_argument(
                    f"Cannot convert JSON value: {_json_text(value)} to "
                    f"{dtype_string(dtype_enum)} without loss of precision.")
            return value
        return convert

    if dtype.is_bool:
        def convert(value):
            if not isinstance(value, bool):
                raise _type_error(value, dtype_enum)
            return value
        return convert

    if dtype.is_integer:
        info = np.iinfo(np_dtype)

        def convert(value):
            if isinstance(value, bool) or not isinstance(value, int):
                raise _type_error(value, dtype_enum)
            if not info.min <= value <= info.max:
                raise _type_error(value, dtype_enum)
            return value
        return convert

    def unsupported(value):
        raise errors.ServingError(
            errors.Code.UNIMPLEMENTED,
            f"Conversion of JSON Value: {_json_text(value)} to type: {dtype_string(dtype_enum)}")
    return unsupported


def _dense_shape(value) -> list:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if len(shape) > MAX_RANK:
            raise errors.invalid_argument(f"JSON value is nested deeper than rank {MAX_RANK}")
        if not value:
            break
        value = value[0]
    return shape


def _fill(value, level: int, shape: list, convert, out: list) -> None:
    rank = len(shape)
    if not isinstance(value, list):
        if level != rank:
            raise errors.invalid_argument(
                f"JSON Value: {_json_text(value)} found at incorrect level: {level + 1} in the "
                f"JSON DOM. Expected at level: {rank}")
        out.append(convert(value))
        return
    if level >= rank:
        raise errors.invalid_argument(
            f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(value) != shape[level]:
        raise errors.invalid_argument(
            f"Encountered list at unexpected size: {len(value)} at level: {level} expected "
            f"size: {shape[level]}")
    for item in value:
        _fill(item, level + 1, shape, convert, out)


def json_to_array(value, dtype_enum: int) -> np.ndarray:
    """One dense tensor from a JSON value (scalar, list, nested lists) of the given TF dtype."""
    shape = _dense_shape(value)
    flat: list = []
    _fill(value, 0, shape, _converter(dtype_enum), flat)
    dtype = as_dtype(dtype_enum)
    if dtype.name == "string":
        array = np.empty(len(flat), dtype=object)
        array[:] = flat
        return array.reshape(shape)
    return np.asarray(flat, dtype=dtype.as_numpy_dtype).reshape(shape)


def _shape_text(shape) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def instances_to_arrays(instances, input_infos: Mapping) -> dict:
    """Row format: ``instances`` (a list, one element per example) -> ``{input: [B, ...]}``."""
    if not isinstance(instances, list):
        raise errors.invalid_argument("Excepting 'instances' to be an list/array")
    if not instances:
        raise errors.invalid_argument("No values in 'instances' array")
    names = sorted(input_infos)

    def is_object(v):
        return isinstance(v, dict) and not is_b64(v)

    if not isinstance(instances[0], dict) and len(names) > 1:
        raise errors.invalid_argument(
            "instances is a plain list, but expecting list of objects as multiple input "
            "tensors required as per tensorinfo_map")
    objects = is_object(instances[0])
    columns: dict[str, list] = {}
    shapes: dict[str, list] = {}

    def add(name, value):
        if name not in input_infos:
            raise errors.invalid_argument(f"JSON object: does not have named input: {name}")
        array = json_to_array(value, input_infos[name].dtype)
        if name not in shapes:
            shapes[name] = list(array.shape)
        elif array.size != int(np.prod(shapes[name])):
            raise errors.invalid_argument(
                f"Expecting tensor size: {int(np.prod(shapes[name]))} but got: {array.size}")
        elif list(array.shape) != shapes[name]:
            raise errors.invalid_argument(
                f"Expecting shape {_shape_text(shapes[name])} but got: "
                f"{_shape_text(array.shape)}")
        columns.setdefault(name, []).append(array)

    for i, element in enumerate(instances):
        if objects:
            if not is_object(element):
                raise errors.invalid_argument(
                    f"Expecting object but got list at item {i} of input list")
            for key, value in element.items():
                try:
                    add(key, value)
                except errors.ServingError as e:
                    raise errors.ServingError(
                        e.code, f"Failed to process element: {i} key: {key} of 'instances' "
                                f"list. Error: {e.code.name}: {e.message}") from None
            if set(element) != set(names):
                raise errors.invalid_argument(
                    f"Failed to process element: {i} of 'instances' list. JSON object: "
                    f"{_json_text(element)} keys must be equal to: {','.join(names)}")
        else:
            if is_object(element):
                raise errors.invalid_argument(
                    f"Expecting value/list but got object at item {i} of input list")
            try:
                add(names[0], element)
            except errors.ServingError as e:
                raise errors.ServingError(
                    e.code, f"Failed to process element: {i} of 'instances' list. Error: "
                            f"{e.code.name}: {e.message}") from None
    return {name: np.stack(arrays) if arrays[0].dtype != object else _stack_objects(arrays)
            for name, arrays in columns.items()}


def _stack_objects(arrays: list) -> np.ndarray:
    out = np.empty((len(arrays),) + arrays[0].shape, dtype=object)
    for i, array in enumerate(arrays):
        out[i, ...] = array
    return out


def inputs_to_arrays(inputs, input_infos: Mapping) -> dict:
    """Columnar format: ``inputs`` (one value, or an object keyed by input) -> arrays."""
    names = sorted(input_infos)
    if not isinstance(inputs, dict) or is_b64(inputs):
        if len(names) > 1:
            raise errors.invalid_argument(
                "inputs is a plain value/list, but expecting an object as multiple input "
                "tensors required as per tensorinfo_map")
        return {names[0]: json_to_array(inputs, input_infos[names[0]].dtype)}
    out = {}
    for name in names:
        if name not in inputs:
            raise errors.invalid_argument(f"Missing named input: {name} in 'inputs' object.")
        out[name] = json_to_array(inputs[name], input_infos[name].dtype)
    return out


def request_to_arrays(document, input_infos: Mapping) -> tuple[dict, str]:
    """A parsed predict request body -> (``{input: array}``, ``ROW`` | ``COLUMNAR``)."""
    if not input_infos:
        raise errors.invalid_argument("Failed to get input map for signature")
    has_instances, has_inputs = "instances" in document, "inputs" in document
    if has_instances and has_inputs:
        raise errors.invalid_argument(
            f"JSON Value: {_json_text(document)} Not formatted correctly expecting only one of "
            f"'inputs' or 'instances' keys to exist ")
    try:
        if has_instances:
            return instances_to_arrays(document["instances"], input_infos), ROW
        if has_inputs:
            return inputs_to_arrays(document["inputs"], input_infos), COLUMNAR
    except RecursionError:
        raise errors.invalid_argument("JSON value is nested too deeply") from None
    raise errors.invalid_argument("Missing 'inputs' or 'instances' key")


# --------------------------------------------------------------------------- arrays -> JSON
def _string_value(value: bytes, as_bytes: bool):
    if not as_bytes:
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return {"b64": base64.b64encode(value).decode("ascii")}


def array_to_json(array: np.ndarray, name: str = ""):
    """One output tensor -> nested JSON lists (TF Serving's value formatting)."""
    array = np.asarray(array)
    if array.dtype == object or array.dtype.kind in "SU":
        as_bytes = name.endswith("_bytes")
        flat = [_string_value(v if isinstance(v, bytes) else str(v).encode("utf-8"), as_bytes)
                for v in array.ravel()]
    elif array.dtype.kind == "f" and array.dtype != np.float64:
        # Shortest repr that round-trips in the tensor's own precision (0.1, not 0.100000001).
        flat = [float(text) for text in array.ravel().astype(str)]
    elif array.dtype.kind == "c":
        raise errors.invalid_argument(
            f"Failed to write JSON value for tensor type: {array.dtype.name}")
    else:
        return array.tolist()
    holder = np.empty(len(flat), dtype=object)
    holder[:] = flat
    return holder.reshape(array.shape).tolist()


def outputs_to_json(outputs: Mapping, fmt: str) -> dict:
    """``{output: array}`` -> ``{"predictions": ...}`` (row) or ``{"outputs": ...}``."""
    if not outputs:
        raise errors.invalid_argument("Cannot convert empty tensor map to JSON")
    names = sorted(outputs)
    if fmt == COLUMNAR:
        if len(names) == 1:
            return {"outputs": array_to_json(outputs[names[0]], names[0])}
        return {"outputs": {n: array_to_json(outputs[n], n) for n in names}}
    batch: Optional[int] = None
    for name in names:
        shape = np.shape(outputs[name])
        if not shape:
            raise errors.invalid_argument(f"Tensor name: {name} has no shape information ")
        if batch is not None and shape[0] != batch:
            raise errors.invalid_argument(
                f"Tensor name: {name} has inconsistent batch size: {shape[0]} expecting: "
                f"{batch}")
        batch = shape[0]
    columns = {n: array_to_json(outputs[n], n) for n in names}
    if len(names) == 1:
        return {"predictions": columns[names[0]]}
    return {"predictions": [{n: columns[n][i] for n in names} for i in range(batch or 0)]}


# --------------------------------------------------------------------------- TensorProto
def tensor_proto_to_array(proto) -> np.ndarray:
    """gRPC ``TensorProto`` -> array (strings as an object array of bytes)."""
    import tensorflow as tf
    try:
        return tf.make_ndarray(proto)
    except Exception as e:  # noqa: BLE001 - a malformed proto is the client's error
        raise errors.invalid_argument(f"Unable to parse tensor proto: {e}") from None


def array_to_tensor_proto(array: np.ndarray):
    import tensorflow as tf
    return tf.make_tensor_proto(np.asarray(array))


__all__ = ["ROW", "COLUMNAR", "request_to_arrays", "instances_to_arrays", "inputs_to_arrays",
           "json_to_array", "outputs_to_json", "array_to_json", "tensor_proto_to_array",
           "array_to_tensor_proto", "dtype_string", "is_b64"]
