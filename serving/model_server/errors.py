"""TF Serving's error model: one canonical code per failure, mapped to gRPC and HTTP.

The HTTP mapping is TF Serving's ``ToHTTPStatusCode`` (model_servers/http_server.cc);
the messages used across the package follow TF Serving's own wording where it has one.
"""
from __future__ import annotations

import re

import grpc

Code = grpc.StatusCode

HTTP_STATUS = {
    Code.OK: 200, Code.CANCELLED: 499, Code.UNKNOWN: 500, Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504, Code.NOT_FOUND: 404, Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403, Code.RESOURCE_EXHAUSTED: 429, Code.FAILED_PRECONDITION: 400,
    Code.ABORTED: 409, Code.OUT_OF_RANGE: 400, Code.UNIMPLEMENTED: 501, Code.INTERNAL: 500,
    Code.UNAVAILABLE: 503, Code.DATA_LOSS: 500, Code.UNAUTHENTICATED: 401,
}


class ServingError(Exception):
    """A request failure with its canonical code (``grpc.StatusCode``) and message."""

    def __init__(self, code: grpc.StatusCode, message: str, http_status: int | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = http_status or HTTP_STATUS.get(code, 500)

    def __repr__(self):
        return f"ServingError({self.code.name}, {self.message!r})"


def invalid_argument(message: str) -> ServingError:
    return ServingError(Code.INVALID_ARGUMENT, message)


def not_found(message: str) -> ServingError:
    return ServingError(Code.NOT_FOUND, message)


def servable_not_found(name: str, version: int | None) -> ServingError:
    """TF Serving's manager message (``ServableRequest::DebugString``)."""
    request = f"Specific({name}, {version})" if version is not None else f"Latest({name})"
    return not_found(f"Servable not found for request: {request}")


def code_from_int(value: int) -> grpc.StatusCode:
    """A canonical code number (TF ``OpError.error_code``, ``tensorflow.error.Code``) -> gRPC."""
    for code in grpc.StatusCode:
        if code.value[0] == value:
            return code
    return Code.UNKNOWN


def tf_error_code(code: grpc.StatusCode) -> int:
    """gRPC code -> ``tensorflow.error.Code`` (for ``StatusProto`` in model status)."""
    from tensorflow.core.protobuf import error_codes_pb2
    return error_codes_pb2.Code.Value(code.name) if code.name in error_codes_pb2.Code.keys() \
        else error_codes_pb2.UNKNOWN


# What eager Python adds around a kernel's message: TF Serving (C++) returns the message alone.
_EAGER_PREFIX = re.compile(r"\AGraph execution error:\s*(?:Detected at node .*?"
                           r"<stack traces unavailable>\n)?", re.DOTALL)
_EAGER_SUFFIX = re.compile(r"\s*\[Op:[^\]]*\](?: name: [^\n]*)?\s*\Z")


def tf_message(message: str) -> str:
    """A TensorFlow error's message without eager execution's wrapping."""
    return _EAGER_SUFFIX.sub("", _EAGER_PREFIX.sub("", message)).strip()


def from_exception(exc: BaseException) -> ServingError:
    """Any failure -> ServingError: TF errors keep their code; others are UNKNOWN/INTERNAL."""
    if isinstance(exc, ServingError):
        return exc
    import tensorflow as tf
    if isinstance(exc, tf.errors.OpError):
        message = tf_message(exc.message) if exc.message else str(exc)
        return ServingError(code_from_int(exc.error_code), message)
    if isinstance(exc, (TypeError, ValueError)):
        return invalid_argument(str(exc))
    return ServingError(Code.INTERNAL, f"{type(exc).__name__}: {exc}")
