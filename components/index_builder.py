"""IndexBuilder: trained STARS weights + the WHOLE catalogue -> serving SavedModels.

Embeds every catalogue item (w_j from its token: cold-start items included)
and exports two SavedModels with the same signatures (see :mod:`models.serving`):

* ``serving_model``: with an embedded ScaNN index (saved with the ``Scann`` op
  namespace allowed; TF Serving needs the ScaNN ops linked in to load it);
* ``brute_force_model``: exact top-K with stock TF ops, for stock TF Serving.

The catalogue reaches the component as input artifacts, not through
``custom_config``.  ScaNN's recall@K against brute force is measured on real user
embeddings (a sample of the interaction examples' requests, ``models.index_quality``)
and recorded (``index_report.json`` and the ``scann_recall_at_k`` custom property); the
StarsEvaluator gates the blessing on it.  Each output also says which index it holds
(``index_kind``): a brute-force export's recall is 1 by definition.
"""


import tensorflow_transform as tft
from tfx import v1 as tfx
from tfx.types import standard_artifacts
from tfx.utils import path_utils

from components.artifacts import TRAINED_MODEL
from models import features as F
from models import index_quality
from models.item_catalog import load_item_catalog
from models.serving import export_serving_models
from models.trainer import load_trained


def user_feature_names(meta) -> tuple:
    """(numeric, categorical) static user feature names without their prefixes, as the
    serving signatures take them."""
    return ([n[len(F.USER_NUMERIC_PREFIX):] for n in meta.user_numeric],
            [n[len(F.USER_CATEGORICAL_PREFIX):] for n in meta.user_vocab_sizes])


def build_index(trainer_model_dir: str, transform_graph_uri: str, catalog_examples_uri: str,
                catalog_transform_graph_uri: str, interaction_examples_uri: str,
                scann_dir: str, brute_force_dir: str, top_k: int,
                recall_queries: int = index_quality.DEFAULT_QUERIES) -> dict:
    tft_output = tft.TFTransformOutput(transform_graph_uri)
    catalog = load_item_catalog(catalog_examples_uri, catalog_transform_graph_uri,
                                tft_output.vocabulary_file_by_name(F.POPULARITY_VOCAB))
    model, config, meta, catalog, adapter = load_trained(trainer_model_dir, catalog)
    modules = export_serving_models(model, adapter, tft_output, catalog.item_ids, top_k,
                                    {"scann": scann_dir, "brute_force": brute_force_dir},
                                    *user_feature_names(meta))
    quality = index_quality.index_recall(modules["scann"], modules["brute_force"],
                                         interaction_examples_uri, limit=recall_queries)
    report = {"items": len(catalog),
              "embedding_dim": int(modules["scann"].item_embedding_table.shape[1]),
              **quality, "cold_start_items": int((catalog.counts == 0).sum())}
    index_quality.write_report(report, (scann_dir, brute_force_dir))
    return report


def mark_index_artifacts(scann_artifact, brute_force_artifact, report: dict) -> None:
    """The custom properties the StarsEvaluator's index-recall rule reads."""
    for artifact, kind in ((scann_artifact, "scann"), (brute_force_artifact, "brute_force")):
        artifact.set_float_custom_property("scann_recall_at_k", report["scann_recall_at_k"])
        artifact.set_int_custom_property("items", report["items"])
        artifact.set_string_custom_property("index_kind", kind)


@tfx.dsl.components.component
def IndexBuilder(
    model: tfx.dsl.components.InputArtifact[standard_artifacts.Model],
    transform_graph: tfx.dsl.components.InputArtifact[standard_artifacts.TransformGraph],
    catalog_examples: tfx.dsl.components.InputArtifact[standard_artifacts.Examples],
    catalog_transform_graph: tfx.dsl.components.InputArtifact[standard_artifacts.TransformGraph],
    interaction_examples: tfx.dsl.components.InputArtifact[standard_artifacts.Examples],
    serving_model: tfx.dsl.components.OutputArtifact[standard_artifacts.Model],
    brute_force_model: tfx.dsl.components.OutputArtifact[standard_artifacts.Model],
    top_k: tfx.dsl.components.Parameter[int] = 100,
):
    """Exports ScaNN and brute-force serving models over the whole catalogue and
    measures ScaNN's recall on real user embeddings (``interaction_examples``: the
    InteractionExampleGen's raw examples)."""
    report = build_index(path_utils.serving_model_path(model.uri), transform_graph.uri,
                         catalog_examples.uri, catalog_transform_graph.uri,
                         interaction_examples.uri,
                         path_utils.serving_model_path(serving_model.uri),
                         path_utils.serving_model_path(brute_force_model.uri), top_k)
    mark_index_artifacts(serving_model, brute_force_model, report)
    for artifact in (serving_model, brute_force_model):
        artifact.set_string_custom_property(TRAINED_MODEL,
                                            path_utils.serving_model_path(model.uri))

