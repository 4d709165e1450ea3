"""CatalogRefresher: the live release's trained weights over today's catalogue, without
retraining -- the refresh pipeline's IndexBuilder and blessing in one step.

New and changed items are embedded by the trained item tower from their text and tags
(δ = 0 for an item the model never saw), removed items leave the index, and the
exports keep every signature (``models.catalog_refresh``).  The weights are the ones
the live release names (``stars.release``): by definition the last blessed and
published model.  The blessing is the index gate alone -- ScaNN recall@K against brute
force on real user embeddings >= ``min_index_recall`` (the rule the StarsEvaluator
applies) -- since the weights were evaluated when they were released; a refreshed model
that fails it is not pushed and the live release keeps serving.
"""
import json

from tfx import v1 as tfx
from tfx.types import standard_artifacts
from tfx.utils import path_utils

from components.artifacts import TRAINED_MODEL
from components.index_builder import mark_index_artifacts
from components.stars_evaluator import index_recall_rule, served_index_recall
from stars import storage


@tfx.dsl.components.component
def CatalogRefresher(
    enriched_items: tfx.dsl.components.InputArtifact[standard_artifacts.Examples],
    interaction_examples: tfx.dsl.components.InputArtifact[standard_artifacts.Examples],
    serving_model: tfx.dsl.components.OutputArtifact[standard_artifacts.Model],
    brute_force_model: tfx.dsl.components.OutputArtifact[standard_artifacts.Model],
    blessing: tfx.dsl.components.OutputArtifact[standard_artifacts.ModelBlessing],
    release_dir: tfx.dsl.components.Parameter[str],
    top_k: tfx.dsl.components.Parameter[int] = 100,
    serving_index: tfx.dsl.components.Parameter[str] = "scann",
    min_index_recall: tfx.dsl.components.Parameter[float] = 0.95,
):
    """Re-exports the live release's model over the enriched catalogue and gates it."""
    from models.catalog_refresh import refresh_serving_models
    from stars import release as releases
    live = releases.current(release_dir)
    if live is None or not live.trained_model:
        raise RuntimeError(f"no release with trained weights in {release_dir}: run the "
                           "pipeline first")
    report = refresh_serving_models(
        live.trained_model, enriched_items.uri, interaction_examples.uri,
        path_utils.serving_model_path(serving_model.uri),
        path_utils.serving_model_path(brute_force_model.uri), top_k)
    mark_index_artifacts(serving_model, brute_force_model, report)
    served = serving_model if serving_index == "scann" else brute_force_model
    for artifact in (serving_model, brute_force_model):
        artifact.set_string_custom_property(TRAINED_MODEL, live.trained_model)
        artifact.set_string_custom_property("refreshed_from", live.release_id)
    rule = index_recall_rule(served_index_recall(served), min_index_recall)
    storage.write_text(storage.join(blessing.uri, "BLESSED" if rule["passed"] else "NOT_BLESSED"),
                       rule["failure"] or json.dumps(rule))
    blessing.set_int_custom_property("blessed", int(rule["passed"]))
    blessing.set_string_custom_property("current_model", served.uri)
    blessing.set_float_custom_property("min_index_recall", min_index_recall)
    blessing.set_int_custom_property("index_recall_passed", int(rule["passed"]))
    for key in ("new_items", "removed_items", "changed_items", "kept_items"):
        blessing.set_int_custom_property(key, int(report.get(key, 0)))
