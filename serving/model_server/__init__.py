"""A TensorFlow-Serving-compatible model server for the STARS serving SavedModels.

``stars serve model`` serves a TF Serving model base path (``<base>/<version>/`` SavedModels,
what the Pusher writes under ``<serving_base>/<model_name>``) with the TF Serving APIs:

* REST: ``POST /v1/models/NAME[/versions/N|/labels/L]:predict`` (row ``instances`` and
  columnar ``inputs``), ``GET /v1/models/NAME[/versions/N]`` (status) and ``.../metadata``;
* gRPC: ``tensorflow.serving.PredictionService`` (Predict, GetModelMetadata) and
  ``tensorflow.serving.ModelService`` (GetModelStatus), from the official
  ``tensorflow-serving-api`` stubs, so any TF Serving client works unchanged.

New versions are loaded in the background and swapped in atomically; the old version is
retired once its in-flight requests finish (``versions.py``).  Errors carry TF Serving's
codes and messages (``errors.py``).  Where a real ``tensorflow_model_server`` is on PATH,
``stars serve model`` execs it instead (``server.main``).

Modules: ``errors`` (status codes), ``versions`` (discovery, loading, ref-counted swap),
``tensors`` (JSON/TensorProto <-> arrays), ``predict`` (signature calls), ``rest``,
``grpc_service``, ``server`` (``serve`` + ``main``), ``cli`` (``add_serve_model_parser``).
"""

from serving.model_server.errors import ServingError
from serving.model_server.server import ModelServer, serve

__all__ = ["ModelServer", "ServingError", "serve"]
