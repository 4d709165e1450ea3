"""TF Serving's gRPC services, on the official ``tensorflow-serving-api`` generated code.

``tensorflow.serving.PredictionService``: Predict, GetModelMetadata, and Classify, Regress and
MultiInference on ``tf.Example`` signatures (``inference.py``);
``tensorflow.serving.ModelService``: GetModelStatus and
HandleReloadConfigRequest (a new ``ModelServerConfig``, applied by ``models.ModelRegistry``).
Any client built on ``prediction_service_pb2_grpc.PredictionServiceStub`` works unchanged.
Failures abort with TF Serving's status code and message; an oversized message is refused by
gRPC itself with RESOURCE_EXHAUSTED (``grpc.max_receive_message_length``).
"""
from __future__ import annotations

import logging
from concurrent import futures
from typing import Optional, Sequence, Union

import grpc
from tensorflow_serving.apis import (
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving.model_server import errors, inference, predict, status, tensors
from serving.model_server.models import as_registry

log = logging.getLogger(__name__)


def _spec(model_spec):
    """``(name, version | None, label | None)`` from a ModelSpec (``version`` oneof label)."""
    choice = model_spec.WhichOneof("version_choice")
    version = model_spec.version.value if choice == "version" else None
    label = model_spec.version_label if choice == "version_label" else None
    return model_spec.name, version, label


def _abort(context, error: errors.ServingError):
    context.abort(error.code, error.message)


def _check_deadline(context) -> None:
    """A call whose caller has given up (its deadline passed while it queued, e.g. behind
    a stalled process) is not run: after a stall the backlog drains at once instead of
    keeping the server busy with answers nobody reads."""
    remaining = context.time_remaining()
    if not context.is_active() or (remaining is not None and remaining <= 0):
        raise errors.ServingError(errors.Code.DEADLINE_EXCEEDED,
                                  "Deadline exceeded before the call was run")


class _Servables:
    def __init__(self, versions):
        self.versions = as_registry(versions)

    def handle(self, model_spec):
        name, version, label = _spec(model_spec)
        return self.versions.servable(name, version, label)


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, versions, max_rows: Optional[int] = None, batcher=None):
        self.servables = _Servables(versions)
        self.max_rows, self.batcher = max_rows, batcher

    def Predict(self, request, context):
        try:
            _check_deadline(context)
            if not request.HasField("model_spec"):
                raise errors.invalid_argument("Missing ModelSpec")
            inputs = {name: tensors.tensor_proto_to_array(proto)
                      for name, proto in request.inputs.items()}
            with self.servables.handle(request.model_spec) as servable:
                key, outputs = predict.run_predict(servable, request.model_spec.signature_name,
                                                   inputs, request.output_filter, self.max_rows,
                                                   self.batcher)
                response = predict_pb2.PredictResponse()
                response.model_spec.name = servable.name
                response.model_spec.version.value = servable.version
                response.model_spec.signature_name = key
            for alias, array in outputs.items():
                response.outputs[alias].CopyFrom(tensors.array_to_tensor_proto(array))
            return response
        except errors.ServingError as e:
            _abort(context, e)
        except Exception as e:  # noqa: BLE001
            log.exception("Predict failed")
            _abort(context, errors.ServingError(errors.Code.INTERNAL,
                                                f"{type(e).__name__}: {e}"))

    def _infer(self, what: str, run, request, context, model_spec):
        """Classify/Regress/MultiInference: ``run(servable, request, max_rows, batcher)`` on
        the servable ``model_spec`` names, with Predict's deadline and error handling."""
        try:
            _check_deadline(context)
            with self.servables.handle(model_spec) as servable:
                return run(servable, request, self.max_rows, self.batcher)
        except errors.ServingError as e:
            _abort(context, e)
        except Exception as e:  # noqa: BLE001
            log.exception("%s failed", what)
            _abort(context, errors.ServingError(errors.Code.INTERNAL,
                                                f"{type(e).__name__}: {e}"))

    def Classify(self, request, context):
        if not request.HasField("model_spec"):
            _abort(context, errors.invalid_argument("Missing ModelSpec"))
        return self._infer("Classify", inference.classify, request, context, request.model_spec)

    def Regress(self, request, context):
        if not request.HasField("model_spec"):
            _abort(context, errors.invalid_argument("Missing ModelSpec"))
        return self._infer("Regress", inference.regress, request, context, request.model_spec)

    def MultiInference(self, request, context):
        """The servable is the first task's (an unnamed one when there is no task)."""
        model_spec = request.tasks[0].model_spec if request.tasks else None
        if model_spec is None:
            from tensorflow_serving.apis import model_pb2
            model_spec = model_pb2.ModelSpec()
        return self._infer("MultiInference", inference.multi_inference, request, context,
                           model_spec)

    def GetModelMetadata(self, request, context):
        try:
            if not request.HasField("model_spec"):
                raise errors.invalid_argument("Missing ModelSpec")
            status.check_metadata_fields(request.metadata_field)
            with self.servables.handle(request.model_spec) as servable:
                return status.model_metadata(servable)
        except errors.ServingError as e:
            _abort(context, e)
        except Exception as e:  # noqa: BLE001
            log.exception("GetModelMetadata failed")
            _abort(context, errors.ServingError(errors.Code.INTERNAL,
                                                f"{type(e).__name__}: {e}"))


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, versions):
        self.versions = as_registry(versions)

    def GetModelStatus(self, request, context):
        try:
            if not request.HasField("model_spec"):
                raise errors.invalid_argument("Missing ModelSpec")
            name, version, _ = _spec(request.model_spec)  # a label is not looked at
            return status.model_status(self.versions, name, version)
        except errors.ServingError as e:
            _abort(context, e)

    def HandleReloadConfigRequest(self, request, context):
        """Applies ``request.config`` (model_service_impl.cc): only a model list; a refused
        config fails the call with its status.  ``metric_names`` are answered with an
        increase of 0 each, TF Serving's answer for a metric it does not collect."""
        try:
            if request.config.WhichOneof("config") != "model_config_list":
                raise errors.invalid_argument(
                    "ServerModelConfig type not supported by HandleReloadConfigRequest. Only "
                    "ModelConfigList is currently supported")
            self.versions.reload(request.config)
        except errors.ServingError as e:
            log.error("ReloadConfig failed: %s", e.message)
            _abort(context, e)
        response = model_management_pb2.ReloadConfigResponse()
        for name in request.metric_names:
            response.metric.add(name=name, int64_value_increase=0)
        return response


def parse_channel_arguments(text: str) -> list[tuple[str, Union[int, str]]]:
    """TF Serving's ``--grpc_channel_arguments``: ``key=value`` pairs separated by commas,
    a value that parses as an integer passed as one (``server.cc``)."""
    out: list[tuple[str, Union[int, str]]] = []
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--grpc_channel_arguments: expected key=value, got {item!r}")
        try:
            out.append((key, int(value)))
        except ValueError:
            out.append((key, value))
    return out


def create_grpc_server(versions, address: Optional[str], max_message_bytes: int,
                       max_workers: int = 8, max_rows: Optional[int] = None,
                       max_concurrent_rpcs: Optional[int] = None,
                       batcher=None, interceptors=(), socket_path: Optional[str] = None,
                       channel_arguments: Sequence[tuple[str, Union[int, str]]] = (),
                       ) -> tuple[grpc.Server, Optional[int]]:
    """A started-ready (not started) gRPC server with both services, listening on
    ``address`` (host:port; None: no TCP port) and/or the Unix socket ``socket_path``
    (TF Serving's ``--grpc_socket_path``); returns it and its TCP port.  ``channel_arguments``
    (``--grpc_channel_arguments``) override the defaults below.  Beyond
    ``max_concurrent_rpcs`` calls in progress or queued, a call is refused at once
    (RESOURCE_EXHAUSTED) instead of queueing past its caller's deadline."""
    defaults = [("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", -1),
                ("grpc.so_reuseport", 0)]
    given = {key for key, _ in channel_arguments}
    options = [o for o in defaults if o[0] not in given] + list(channel_arguments)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers,
                                                    thread_name_prefix="grpc"),
                         options=options, maximum_concurrent_rpcs=max_concurrent_rpcs,
                         interceptors=list(interceptors))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(versions, max_rows, batcher), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(versions), server)
    port = None
    if address is not None:
        port = server.add_insecure_port(address)
        if port == 0:
            raise OSError(f"cannot bind the gRPC server to {address}")
    if socket_path:
        if not server.add_insecure_port(f"unix:{socket_path}"):
            raise OSError(f"cannot bind the gRPC server to the Unix socket {socket_path}")
    return server, port


__all__ = ["PredictionService", "ModelService", "create_grpc_server", "parse_channel_arguments"]
