"""IndexBuilder: trained STARS weights + the WHOLE catalogue -> serving SavedModels.

Embeds every catalogue item (w_j from its token: cold-start items included)
and exports two SavedModels with the same signatures (see :mod:`models.serving`):

* ``serving_model``: with an embedded ScaNN index (saved with the ``Scann`` op
  namespace allowed; TF Serving needs the ScaNN ops linked in to load it);
* ``brute_force_model``: exact top-K with stock TF ops, for stock TF Serving.

The catalogue reaches the component as input artifacts, not through
``custom_config``.  ScaNN's recall@K against brute force is measured on the
artifact and recorded (``index_report.json`` and a custom property).
"""

import json
import os

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from tfx import v1 as tfx
from tfx.types import standard_artifacts
from tfx.utils import path_utils

from models import features as F
from models.item_catalog import load_item_catalog
from models.serving import ServingModule, recall_against_brute_force, save_serving_model
from models.trainer import load_trained

REPORT_FILE = "index_report.json"


def probe_queries(item_embeddings: np.ndarray, n: int = 512, seed: int = 0) -> np.ndarray:
    """Queries shaped like user embeddings: mixes of a few item embeddings."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(item_embeddings), size=(n, 3))
    return item_embeddings[picks].mean(axis=1).astype(np.float32)


def build_index(trainer_model_dir: str, transform_graph_uri: str, catalog_examples_uri: str,
                catalog_transform_graph_uri: str, scann_dir: str, brute_force_dir: str,
                top_k: int) -> dict:
    tft_output = tft.TFTransformOutput(transform_graph_uri)
    catalog = load_item_catalog(catalog_examples_uri, catalog_transform_graph_uri,
                                tft_output.vocabulary_file_by_name(F.POPULARITY_VOCAB))
    model, config, meta, catalog, adapter = load_trained(trainer_model_dir, catalog)
    modules = {}
    for kind, directory in (("scann", scann_dir), ("brute_force", brute_force_dir)):
        module = ServingModule(model, adapter, tft_output, catalog.item_ids, kind, top_k,
                               [n[len(F.USER_NUMERIC_PREFIX):] for n in meta.user_numeric],
                               [n[len(F.USER_CATEGORICAL_PREFIX):] for n in meta.user_vocab_sizes])
        save_serving_model(module, directory, item_ids=catalog.item_ids)
        modules[kind] = module
    queries = probe_queries(modules["brute_force"].item_embedding_table.numpy())
    _, exact = modules["brute_force"].search_index(queries)
    _, approx = modules["scann"].search_index(queries)
    report = {"items": len(catalog), "k": modules["scann"].k,
              "embedding_dim": int(modules["scann"].item_embedding_table.shape[1]),
              "scann_recall_at_k": recall_against_brute_force(approx.numpy(), exact.numpy()),
              "cold_start_items": int((catalog.counts == 0).sum())}
    for directory in (scann_dir, brute_force_dir):
        with tf.io.gfile.GFile(os.path.join(os.path.dirname(directory), REPORT_FILE), "w") as f:
            f.write(json.dumps(report, indent=1))
    return report


@tfx.dsl.components.component
def IndexBuilder(
    model: tfx.dsl.components.InputArtifact[standard_artifacts.Model],
    transform_graph: tfx.dsl.components.InputArtifact[standard_artifacts.TransformGraph],
    catalog_examples: tfx.dsl.components.InputArtifact[standard_artifacts.Examples],
    catalog_transform_graph: tfx.dsl.components.InputArtifact[standard_artifacts.TransformGraph],
    serving_model: tfx.dsl.components.OutputArtifact[standard_artifacts.Model],
    brute_force_model: tfx.dsl.components.OutputArtifact[standard_artifacts.Model],
    top_k: tfx.dsl.components.Parameter[int] = 100,
):
    """Exports ScaNN and brute-force serving models over the whole catalogue."""
    report = build_index(path_utils.serving_model_path(model.uri), transform_graph.uri,
                         catalog_examples.uri, catalog_transform_graph.uri,
                         path_utils.serving_model_path(serving_model.uri),
                         path_utils.serving_model_path(brute_force_model.uri), top_k)
    for artifact in (serving_model, brute_force_model):
        artifact.set_float_custom_property("scann_recall_at_k", report["scann_recall_at_k"])
        artifact.set_int_custom_property("items", report["items"])
