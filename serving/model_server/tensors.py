"""TF Serving's tensor encodings <-> numpy arrays.

* JSON (``util/json_tensor.cc`` semantics): row format ``{"instances": [...]}`` (a list of
  per-example values, or of objects keyed by input name) and columnar format
  ``{"inputs": value | {name: value}}``; strings are JSON strings or ``{"b64": "..."}``;
  responses are ``{"predictions": ...}`` (row) or ``{"outputs": ...}`` (columnar), string
  outputs whose name ends in ``_bytes`` (or that are not UTF-8) as ``{"b64": ...}``.
* Numbers as ``AddValueToTensor`` reads them: any JSON number fills a float/double input
  (an integer too, rounded; beyond float's range +-Infinity, as rapidjson's ``GetFloat``
  casts); integer inputs take JSON integers in rapidjson's ``IsInt``/``IsInt64``/``IsUint``/
  ``IsUint64`` range (int8/int16/uint8 then wrap, as TensorProto's ``int_val`` does); other
  dtypes (half, complex...) are UNIMPLEMENTED.  And as ``WriteDecimal`` writes them: ``%g``
  when that reads back to the same value, else ``%.9g`` (float) / ``%.17g`` (double), ``.0``
  added to whole numbers, ``NaN``/``Infinity``; outputs of other dtypes cannot be written.
* ``TensorProto`` for gRPC, through ``tf.make_ndarray`` / ``tf.make_tensor_proto``.

Every malformed input raises ``ServingError(INVALID_ARGUMENT)`` with TF Serving's message.
"""
from __future__ import annotations

import base64
import binascii
import json
import math
from typing import Mapping, Optional

import numpy as np

from serving.model_server import errors
from serving.model_server.json_text import RawJson, debug_string, json_type, string_text

ROW, COLUMNAR = "row", "columnar"
MAX_RANK = 32  # numpy's; TensorFlow's is 254
_TF_NAMES = {"float32": "float", "float64": "double", "float16": "half"}
# Integer dtypes by the JSON range AddValueToTensor accepts (IsInt, IsInt64, IsUint, IsUint64);
# int8/int16/uint8 take any int32 and are then cast, as TensorProto's int_val is.
_INT_RANGES = {"int32": (-(1 << 31), (1 << 31) - 1), "int16": (-(1 << 31), (1 << 31) - 1),
               "int8": (-(1 << 31), (1 << 31) - 1), "uint8": (-(1 << 31), (1 << 31) - 1),
               "int64": (-(1 << 63), (1 << 63) - 1), "uint32": (0, (1 << 32) - 1),
               "uint64": (0, (1 << 64) - 1)}


def as_dtype(dtype_enum: int):
    import tensorflow as tf
    return tf.dtypes.as_dtype(dtype_enum)


def dtype_string(dtype_enum: int) -> str:
    """TF's ``DataTypeString`` (``float``, ``int64``, ``string``...)."""
    name = as_dtype(dtype_enum).name
    return _TF_NAMES.get(name, name)


# --------------------------------------------------------------------------- JSON -> arrays
def is_b64(value) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _type_error(value, dtype_enum) -> errors.ServingError:
    return errors.invalid_argument(
        f"JSON Value: {debug_string(value)} Type: {json_type(value)} is not of expected type: "
        f"{dtype_string(dtype_enum)}")


def _converter(dtype_enum: int):
    """``value -> python scalar`` for one JSON leaf, checked like TF Serving's AddValueToTensor."""
    name = as_dtype(dtype_enum).name

    if name == "string":
        def convert(value):
            if isinstance(value, str):
                return value.encode("utf-8", "surrogatepass")
            if isinstance(value, dict):
                if not is_b64(value):
                    raise errors.invalid_argument(
                        f"JSON Value: {debug_string(value)} not formatted correctly for base64 "
                        f"data")
                try:
                    return base64.b64decode(value["b64"], validate=True)
                except (binascii.Error, ValueError):
                    raise errors.invalid_argument("Unable to base64 decode") from None
            raise _type_error(value, dtype_enum)
        return convert

    if name in ("float32", "float64"):
        def convert(value):  # IsNumber; the cast to the dtype happens in json_to_array
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise _type_error(value, dtype_enum)
            return float(value)
        return convert

    if name == "bool":
        def convert(value):
            if not isinstance(value, bool):
                raise _type_error(value, dtype_enum)
            return value
        return convert

    if name in _INT_RANGES:
        low, high = _INT_RANGES[name]

        def convert(value):
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise _type_error(value, dtype_enum)
            return value
        return convert

    def unsupported(value):
        raise errors.ServingError(
            errors.Code.UNIMPLEMENTED,
            f"Conversion of JSON Value: {debug_string(value)} to type: {dtype_string(dtype_enum)}")
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
                f"JSON Value: {debug_string(value)} found at incorrect level: {level + 1} in the "
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
    if dtype.name in ("float32", "float64"):
        with np.errstate(over="ignore"):  # beyond float's range: +-inf, as a C cast gives
            return np.asarray(flat, dtype=np.float64).astype(dtype.as_numpy_dtype).reshape(shape)
    if dtype.name in ("int8", "int16", "uint8"):  # int_val (int32) cast to the narrow type
        return np.asarray(flat, dtype=np.int64).astype(dtype.as_numpy_dtype).reshape(shape)
    return np.asarray(flat, dtype=dtype.as_numpy_dtype).reshape(shape)


def _shape_text(shape) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def instances_to_arrays(instances, input_infos: Mapping) -> dict:
    """Row format: ``instances`` (a non-empty list, one element per example) ->
    ``{input: [B, ...]}``."""
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
                    f"{debug_string(element)} keys must be equal to: {','.join(names)}")
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


def signature_name(document: dict) -> str:
    """``FillSignature``: the optional ``signature_name``, which must be a string."""
    name = document.get("signature_name", "")
    if not isinstance(name, str):
        raise errors.invalid_argument(
            f"JSON Value: {debug_string(document)} not formatted correctly. 'signature_name' key "
            f"must be a string value.")
    return name


def request_to_arrays(document, input_infos: Mapping,
                      signature_name: str = "") -> tuple[dict, str]:
    """A parsed predict request body -> (``{input: array}``, ``ROW`` | ``COLUMNAR``)."""
    if not input_infos:
        raise errors.invalid_argument(
            f"Failed to get input map for signature: {signature_name or 'DEFAULT'}")
    has_instances, has_inputs = "instances" in document, "inputs" in document
    if has_instances and has_inputs:
        raise errors.invalid_argument(
            f"JSON Value: {debug_string(document)} Not formatted correctly expecting only one "
            f"of 'inputs' or 'instances' keys to exist ")
    if has_instances:
        instances = document["instances"]
        if not isinstance(instances, list):
            raise errors.invalid_argument(
                f"JSON Value: {debug_string(document)} Expecting 'instances' to be an list/array")
        if not instances:
            raise errors.invalid_argument(
                f"JSON Value: {debug_string(document)} No values in 'instances' array")
        return instances_to_arrays(instances, input_infos), ROW
    if has_inputs:
        return inputs_to_arrays(document["inputs"], input_infos), COLUMNAR
    raise errors.invalid_argument("Missing 'inputs' or 'instances' key")


# --------------------------------------------------------------------------- arrays -> JSON
_WRITABLE = {"float32", "float64", "int32", "int16", "int8", "uint8", "int64", "uint32",
             "uint64", "bool"}


def decimal_texts(values) -> list[str]:
    """``WriteDecimal`` for each float32/float64 value (see the module docstring)."""
    flat = np.asarray(values).ravel()
    single = flat.dtype == np.float32
    numbers = flat.astype(np.float64).tolist()
    texts = ["%g" % v for v in numbers]
    with np.errstate(over="ignore", invalid="ignore"):
        back = np.array(texts, dtype=np.float32 if single else np.float64)
    full = "%.9g" if single else "%.17g"
    for i in np.flatnonzero(back != flat).tolist():  # NaN included: replaced below
        texts[i] = full % numbers[i]
    out = [t if "." in t or "e" in t else t + ".0" for t in texts]
    for i in np.flatnonzero(~np.isfinite(flat)).tolist():
        value = numbers[i]
        out[i] = "NaN" if math.isnan(value) else ("-Infinity" if value < 0 else "Infinity")
    return out


_string_json_text = json.JSONEncoder(ensure_ascii=False).encode  # C-accelerated for a str


def _string_json(value: bytes, as_bytes: bool) -> str:
    if not as_bytes:
        try:
            return _string_json_text(value.decode("utf-8"))
        except UnicodeDecodeError:
            pass
    return '{"b64":"' + base64.b64encode(value).decode("ascii") + '"}'


def _strings_json(values, as_bytes: bool) -> list[str]:
    """String values as JSON strings; ``{"b64": ...}`` for ``*_bytes`` outputs and for bytes
    that are not UTF-8 (TF Serving writes those raw, which is not JSON)."""
    raw = [v if isinstance(v, bytes) else str(v).encode("utf-8") for v in values]
    if not as_bytes:
        try:
            return [_string_json_text(v.decode("utf-8")) for v in raw]
        except UnicodeDecodeError:
            pass
    return [_string_json(v, as_bytes) for v in raw]


def _leaf_texts(array: np.ndarray, name: str) -> list[str]:
    """Each value's JSON text, as ``AddSingleValueAndAdvance`` writes it."""
    flat = array.ravel()
    if array.dtype == object or array.dtype.kind in "SU":
        return _strings_json(flat.tolist(), name.endswith("_bytes"))
    try:
        dtype = as_dtype(array.dtype)
    except TypeError:
        raise errors.invalid_argument(
            f"Failed to write JSON value for tensor type: {array.dtype.name}") from None
    if dtype.name not in _WRITABLE:
        raise errors.invalid_argument(
            f"Failed to write JSON value for tensor type: {dtype_string(dtype.as_datatype_enum)}")
    if dtype.name in ("float32", "float64"):
        return decimal_texts(flat)
    if dtype.name == "bool":
        return ["true" if v else "false" for v in flat.tolist()]
    return [str(v) for v in flat.tolist()]


def _nest(texts: list[str], shape: tuple, down_to: int = 0) -> list[str]:
    """Leaf texts (row-major) -> one JSON array text per index of ``shape[:down_to]``."""
    items = texts
    for axis in range(len(shape) - 1, down_to - 1, -1):
        size, groups = shape[axis], int(np.prod(shape[:axis], dtype=np.int64))
        items = ["[" + ",".join(items[g * size:(g + 1) * size]) + "]" for g in range(groups)]
    return items


def array_to_json(array: np.ndarray, name: str = "") -> RawJson:
    """One output tensor -> its JSON text (nested lists; TF Serving's value formatting)."""
    array = np.asarray(array)
    return RawJson(_nest(_leaf_texts(array, name), array.shape)[0])


def outputs_to_json(outputs: Mapping, fmt: str) -> dict:
    """``{output: array}`` -> ``{"predictions": ...}`` (row) or ``{"outputs": ...}``, the
    tensors as ``RawJson`` (written by ``json_text.json_bytes``)."""
    if not outputs:
        raise errors.invalid_argument("Cannot convert empty tensor map to JSON")
    names = sorted(outputs)
    arrays = {n: np.asarray(outputs[n]) for n in names}
    if fmt == COLUMNAR:
        if len(names) == 1:
            return {"outputs": array_to_json(arrays[names[0]], names[0])}
        return {"outputs": RawJson("{" + ",".join(
            f"{string_text(n)}:{array_to_json(arrays[n], n)}" for n in names) + "}")}
    batch: Optional[int] = None
    for name in names:
        shape = arrays[name].shape
        if not shape:
            raise errors.invalid_argument(f"Tensor name: {name} has no shape information ")
        if batch is not None and shape[0] != batch:
            raise errors.invalid_argument(
                f"Tensor name: {name} has inconsistent batch size: {shape[0]} expecting: "
                f"{batch}")
        batch = shape[0]
    rows = {n: _nest(_leaf_texts(arrays[n], n), arrays[n].shape, 1) for n in names}
    if len(names) == 1:
        items = rows[names[0]]
    else:
        items = ["{" + ",".join(f"{string_text(n)}:{rows[n][i]}" for n in names) + "}"
                 for i in range(batch or 0)]
    return {"predictions": RawJson("[" + ",".join(items) + "]")}


# --------------------------------------------------------------------------- TensorProto
def tensor_proto_to_array(proto) -> np.ndarray:
    """gRPC ``TensorProto`` -> array (strings as an object array of bytes)."""
    import tensorflow as tf
    try:
        return tf.make_ndarray(proto)
    except Exception as e:  # noqa: BLE001 - a malformed proto is the client's error
        raise errors.invalid_argument(f"Unable to parse tensor proto: {e}") from None


__all__ = ["ROW", "COLUMNAR", "signature_name", "request_to_arrays", "instances_to_arrays",
           "inputs_to_arrays", "json_to_array", "outputs_to_json", "array_to_json", "decimal_texts",
           "tensor_proto_to_array", "array_to_tensor_proto", "dtype_string", "is_b64"]


# TensorProto's typed field per dtype: TF Serving answers with ``Tensor::AsProtoField``
# (``predict_util.cc``), so clients reading ``float_val`` & co. find their values there;
# ``tf.make_tensor_proto`` packs more than one value into ``tensor_content`` instead.
_PROTO_FIELDS = {"float32": "float_val", "float64": "double_val", "int32": "int_val",
                 "int16": "int_val", "int8": "int_val", "uint8": "int_val", "uint16": "int_val",
                 "int64": "int64_val", "uint32": "uint32_val", "uint64": "uint64_val",
                 "bool": "bool_val", "float16": "half_val", "bfloat16": "half_val",
                 "complex64": "scomplex_val", "complex128": "dcomplex_val"}


def array_to_tensor_proto(array: np.ndarray):
    """Array -> gRPC ``TensorProto`` with the values in their typed field, as TF Serving's
    responses have them (``tf.make_tensor_proto`` builds it; only the layout changes)."""
    import tensorflow as tf
    proto = tf.make_tensor_proto(np.asarray(array))
    if not proto.tensor_content:
        return proto
    values = tf.make_ndarray(proto).reshape(-1)
    proto.tensor_content = b""
    name = tf.dtypes.as_dtype(proto.dtype).name
    field = getattr(proto, _PROTO_FIELDS[name])
    if name in ("float16", "bfloat16"):  # half_val holds the 16-bit patterns
        field.extend(values.view(np.uint16).tolist())
    elif name.startswith("complex"):  # real and imaginary parts, interleaved
        field.extend(np.column_stack([values.real, values.imag]).reshape(-1).tolist())
    else:
        field.extend(values.tolist())
    return proto
