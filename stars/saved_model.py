"""Loading a pushed serving SavedModel the way TF Serving does: the ScaNN ops registered
and the version's warm-up requests replayed.

Below every package that reads the export (the model server, the batch job, the Evaluator,
the benchmarks), so none of them imports ``models`` (the code that writes it) for this.
"""
from __future__ import annotations

import os

import tensorflow as tf

# TF Serving's warm-up file inside a version directory (written by models.serving).
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")


def load_serving_model(export_dir: str):
    """Loads a serving SavedModel; the ScaNN ops are registered by importing scann."""
    import scann  # noqa: F401  (registers the Scann op namespace)
    return tf.saved_model.load(export_dir)


def replay_warmup(loaded, export_dir: str) -> int:
    """Runs a SavedModel's warm-up requests (as TF Serving does at load); returns how many."""
    from tensorflow_serving.apis import prediction_log_pb2
    path = os.path.join(export_dir, WARMUP_FILE)
    if not tf.io.gfile.exists(path):
        return 0
    count = 0
    for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
        log = prediction_log_pb2.PredictionLog.FromString(record)
        request = log.predict_log.request
        signature = loaded.signatures.get(request.model_spec.signature_name or "serving_default")
        if signature is None:
            continue
        signature(**{k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()})
        count += 1
    return count


__all__ = ["WARMUP_FILE", "load_serving_model", "replay_warmup"]
