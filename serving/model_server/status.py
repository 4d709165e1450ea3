"""TF Serving's model status and metadata responses (protos shared by gRPC and REST)."""
from __future__ import annotations

from typing import Optional

from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2

from serving.model_server import errors
from serving.model_server.models import as_registry

SIGNATURE_DEF_FIELD = "signature_def"


def model_status(models, name: str, version: Optional[int] = None):
    """``GetModelStatusResponse`` for ``name`` from a ``ModelRegistry`` (NOT_FOUND as TF
    Serving for unknown ones).  A version label is not looked at: TF Serving's
    GetModelStatus answers every version unless a number is given."""
    states = as_registry(models).status(name, version)
    response = get_model_status_pb2.GetModelStatusResponse()
    for state in states:
        entry = response.model_version_status.add()
        entry.version = state.version
        entry.state = get_model_status_pb2.ModelVersionStatus.State.Value(state.state)
        entry.status.error_code = errors.tf_error_code(state.error_code)
        entry.status.error_message = state.error_message
    return response


def check_metadata_fields(fields) -> None:
    fields = list(fields)
    if not fields:
        raise errors.invalid_argument(
            "GetModelMetadataRequest must specify at least one metadata_field")
    for field in fields:
        if field != SIGNATURE_DEF_FIELD:
            raise errors.invalid_argument(f"Metadata field {field} is not supported")


def model_metadata(servable):
    """``GetModelMetadataResponse`` with the ``signature_def`` map of one loaded version."""
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = servable.name
    response.model_spec.version.value = servable.version
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for key, signature in servable.signature_defs.items():
        signature_map.signature_def[key].CopyFrom(signature)
    response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_map)
    return response


def _to_dict(message) -> dict:
    """Proto field names, defaults printed (TF Serving's ``always_print_primitive_fields``)."""
    try:
        return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                         including_default_value_fields=True)
    except TypeError:  # protobuf >= 5 renamed the option
        return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                         always_print_fields_with_no_presence=True)


def status_json(response) -> dict:
    """REST form: ``{"model_version_status": [{"version": "1", "state": ..., "status": ...}]}``."""
    return _to_dict(response)


def metadata_json(response) -> dict:
    """REST form (TF Serving's ``ToJsonString``): model_spec + metadata.signature_def."""
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    response.metadata[SIGNATURE_DEF_FIELD].Unpack(signature_map)
    return {"model_spec": _to_dict(response.model_spec),
            "metadata": {SIGNATURE_DEF_FIELD: _to_dict(signature_map)}}


__all__ = ["model_status", "model_metadata", "check_metadata_fields", "status_json",
           "metadata_json"]
