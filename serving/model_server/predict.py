"""Predict on one loaded version: signature lookup, input checks, the call, output filter.

Shared by REST and gRPC.  Checks and messages follow TF Serving's ``predict_util.cc``:
unknown signature -> FAILED_PRECONDITION (``Serving signature key "x" not found.``); a wrong
set of inputs or a wrong dtype -> INVALID_ARGUMENT, before any TF call.  Shapes are not
checked against the SignatureDef: TF Serving feeds the tensors as given and the graph decides
(``{"instances": [2.0, 3.0]}`` to an input of shape [-1, 1] is answered), so a shape the graph
cannot take fails with TensorFlow's own message and code.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Optional

import numpy as np

from serving.model_server import errors
from serving.model_server.tensors import dtype_string

DEFAULT_SIGNATURE = "serving_default"


def find_signature(servable, signature_name: str):
    """``(key, SignatureDef)``; FAILED_PRECONDITION as TF Serving when there is no such key."""
    key = signature_name or DEFAULT_SIGNATURE
    signature = servable.signature_defs.get(key)
    if signature is None or servable.signature(key) is None:
        raise errors.ServingError(errors.Code.FAILED_PRECONDITION,
                                  f'Serving signature key "{key}" not found.')
    return key, signature


def check_inputs(signature, inputs: Mapping[str, np.ndarray]) -> None:
    """The request's inputs against the SignatureDef: names and dtypes (TensorFlow refuses a
    fed tensor of another dtype with this message; shapes are the graph's business)."""
    expected = signature.inputs
    if len(inputs) > len(expected) or (len(inputs) < len(expected) and not signature.defaults):
        sent, wanted = set(inputs), set(expected)
        raise errors.invalid_argument(
            f"input size does not match signature: {len(inputs)}!={len(expected)} "
            f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(wanted))}}}). "
            f"Sent extra: {{{','.join(sorted(sent - wanted))}}}. "
            f"Missing but required: {{{','.join(sorted(wanted - sent))}}}.")
    import tensorflow as tf
    for name, array in inputs.items():
        if name not in expected:
            raise errors.invalid_argument(
                f"input tensor alias not found in signature: {name}. Inputs expected to be in "
                f"the set {{{','.join(sorted(expected))}}}.")
        info = expected[name]
        want = tf.dtypes.as_dtype(info.dtype)
        try:
            got = tf.dtypes.as_dtype(array.dtype)
        except TypeError:
            got = None
        if got != want:
            position = sorted(expected).index(name)
            got_name = dtype_string(got.as_datatype_enum) if got is not None else str(array.dtype)
            raise errors.invalid_argument(
                f"Expects arg[{position}] to be {dtype_string(info.dtype)} but {got_name} is "
                f"provided")


def select_outputs(signature, output_filter: Iterable[str]) -> list[str]:
    """Output aliases to return: ``output_filter`` (checked) or all of the signature's."""
    names = list(output_filter)
    if not names:
        return sorted(signature.outputs)
    seen = set()
    for alias in names:
        if alias not in signature.outputs:
            raise errors.invalid_argument(
                f"output tensor alias not found in signature: {alias} Outputs expected to be "
                f"in the set {{{','.join(sorted(signature.outputs))}}}.")
        if alias in seen:
            raise errors.invalid_argument(f"duplicate output tensor alias: {alias}")
        seen.add(alias)
    return names


def check_rows(inputs: Mapping[str, np.ndarray], max_rows: Optional[int]) -> None:
    """A request's rows (the inputs' first dimension) are capped: one request must not hold
    the server for longer than any other caller would wait."""
    if not max_rows:
        return
    rows = max((a.shape[0] for a in inputs.values() if np.ndim(a) >= 1), default=0)
    if rows > max_rows:
        raise errors.invalid_argument(f"The request has {rows} rows; at most {max_rows} are "
                                      "accepted per request (--max-batch-rows): split it")


def run_predict(servable, signature_name: str, inputs: Mapping[str, np.ndarray],
                output_filter: Iterable[str] = (), max_rows: Optional[int] = None,
                batcher=None) -> tuple[str, dict]:
    """Runs a signature; returns ``(signature key, {output alias: array})``.  With a
    ``batcher`` (``batching.Batcher``) the call may run merged with concurrent ones."""
    check_rows(inputs, max_rows)
    key, signature = find_signature(servable, signature_name)
    check_inputs(signature, inputs)
    wanted = select_outputs(signature, output_filter)
    return key, call_signature(servable, key, signature, inputs, wanted, batcher)


def call_signature(servable, key: str, signature, inputs: Mapping[str, np.ndarray],
                   wanted: Iterable[str], batcher=None) -> dict:
    """Runs signature ``key`` on checked inputs; ``{output alias: array}`` for ``wanted``.
    Shared with Classify/Regress (``inference``): they batch and fail the same way."""
    import tensorflow as tf
    wanted = tuple(wanted)
    function = servable.signature(key)
    if function is None:  # unloaded under us: cannot happen while the handle is held
        raise errors.ServingError(errors.Code.UNAVAILABLE, "Servable is being unloaded")

    def call(arrays: Mapping[str, np.ndarray]) -> dict:
        feeds = {name: tf.constant(array, dtype=tf.dtypes.as_dtype(signature.inputs[name].dtype))
                 for name, array in arrays.items()}
        result = function(**feeds)
        return {alias: np.asarray(result[alias].numpy()) for alias in wanted}
    try:
        if batcher is None:
            return call(inputs)
        return batcher.run((id(servable), key, wanted), inputs, call)
    except errors.ServingError:
        raise
    except Exception as e:  # noqa: BLE001 - TF errors keep their code; the rest is mapped
        raise errors.from_exception(e) from None


__all__ = ["DEFAULT_SIGNATURE", "find_signature", "check_inputs", "check_rows",
           "select_outputs", "run_predict", "call_signature"]
