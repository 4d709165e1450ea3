"""A TensorFlow-Serving-compatible model server for the STARS serving SavedModels.

``stars serve model`` serves TF Serving model base paths (``<base>/<version>/`` SavedModels,
what the Pusher writes under ``<serving_base>/<model_name>``) with the TF Serving APIs:

* REST: ``POST /v1/models/NAME[/versions/N|/labels/L]:predict`` (row ``instances`` and
  columnar ``inputs``), ``:classify`` and ``:regress`` (``tf.Example`` signatures),
  ``GET /v1/models/NAME[/versions/N]`` (status) and ``.../metadata``;
  with ``--monitoring_config_file``, Prometheus metrics at ``/monitoring/prometheus/metrics``;
* gRPC: ``tensorflow.serving.PredictionService`` (Predict, Classify, Regress,
  MultiInference, GetModelMetadata) and
  ``tensorflow.serving.ModelService`` (GetModelStatus, HandleReloadConfigRequest), from the
  official ``tensorflow-serving-api`` stubs, so any TF Serving client works unchanged.

One model (``--model_name/--model_base_path``) or several from TF Serving's
``--model_config_file`` (version policies, version labels; re-read every
``--model_config_file_poll_wait_seconds``).  New versions are loaded in the background and
swapped in atomically; the old version is retired once its in-flight requests finish
(``versions.py``).  Errors carry TF Serving's codes and messages (``errors.py``).  Where a
real ``tensorflow_model_server`` is on PATH, ``stars serve model`` execs it instead
(``server.main``).

Modules: ``errors`` (status codes), ``model_config`` (config and monitoring files),
``models`` (the configured models, labels, reloads), ``versions`` (discovery, loading,
ref-counted swap), ``tensors`` (JSON/TensorProto <-> arrays, TF Serving's number rules),
``json_text`` (rapidjson's parsing rules and messages), ``predict`` (signature calls),
``inference`` (Classify / Regress / MultiInference over ``tf.Example`` inputs),
``rest``, ``grpc_service``, ``monitoring`` (Prometheus), ``deadline`` (REST call deadline),
``batching`` (server-side batching), ``status``, ``server`` (``serve`` + ``main``), ``cli``
(``add_serve_model_parser``).  Not offered: TFLite models, the profiler service.
"""

from serving.model_server.errors import ServingError
from serving.model_server.server import ModelServer, serve

__all__ = ["ModelServer", "ServingError", "serve"]
