"""StarsEvaluator: TFMA over materialised top-K predictions of the SERVED model.

Calls the exported serving model (``recommend_with_context``) on every eval
example, exactly as clients do, and materialises its top-K for NI, GI and RR
(round-robin of the two), next to the popularity baseline (training counts)
and, when there is one, the last blessed model: a Beam job
(``components.served_scoring``) with the pipeline's Beam options.  Per-example
Hit/Recall/NDCG@K go to TensorFlow Model Analysis, sliced by target category, candidate-set size
(items on the target's page, where impressions exist) and cold-start target;
Coverage@10 is corpus-level and written beside them.

Blessing: the candidate's Recall@10 must reach ``min_recall_vs_popularity`` x
the popularity baseline and must not fall more than ``max_regression`` below
the last blessed model; and the served index's recall@K against brute force on real
user embeddings (the IndexBuilder's ``scann_recall_at_k``; 1 for a brute-force export)
must reach ``min_index_recall``.  Recall@10 sees the served answers only through the
eval targets' hits; the index rule asks that the whole top K be the model's own, so an
index that drops what the model ranks first (a coarser partition, a grown catalogue)
does not ship on the strength of the few targets it still finds.  The blessing carries
``current_model_id`` so TFX's LatestBlessedModelStrategy finds it next run.
"""

from typing import Optional

import apache_beam as beam
import numpy as np
import pandas as pd
import tensorflow_transform as tft
from tfx import v1 as tfx
from tfx.types import standard_artifacts
from tfx.utils import path_utils

from components import served_scoring
from models import features as F
from models.popularity import read_popularity_counts
from stars import retrieval_metrics as RM
from stars import storage
from stars.data import tf_example

KS = (5, 10, 20, 50)
SLICES = ("category", "candidate_set_size", "cold_start_target")
CANDIDATE = "stars_ni"  # the variant whose metrics decide the blessing
INDEX_RULE_FILE = "index_recall.json"  # the index rule's figure and outcome, in the evaluation


def size_bucket(n: int) -> str:
    if n <= 0:
        return "none"
    return "1-10" if n <= 10 else "11-30" if n <= 30 else "31-100" if n <= 100 else "101+"


def catalog_categories(catalog_uri: str) -> dict:
    out = {}
    for example in tf_example.read_split(catalog_uri, "catalog"):
        f = tf_example.from_example(example)
        item = f["item_id"][0].decode()
        category = f.get("category") or [b"unknown"]
        out[item] = category[0].decode() or "unknown"
    return out


def evaluate_predictions(predictions: dict, targets, popularity_top: np.ndarray,
                         slices: pd.DataFrame, num_items: int) -> tuple:
    """(per-example frame, corpus metrics) for candidate variants + baselines."""
    frame = slices.copy()
    corpus = {}
    n = len(frame)
    width = min(top.shape[1] for top in predictions.values())
    ks = tuple(k for k in KS if k <= width)  # K = 50 needs the model to answer 50 ids
    ranked = dict(predictions)
    ranked["popularity"] = np.broadcast_to(popularity_top[:width],
                                           (n, min(width, len(popularity_top))))
    for name, top in ranked.items():
        metrics = RM.per_example_metrics(top[:, :width], targets, ks)
        for key in ("hit", "recall", "ndcg"):
            for k in ks:
                frame[f"{name}/{key}@{k}"] = metrics[f"{key}@{k}"]
        corpus[f"{name}/coverage@10"] = RM.coverage_at_k(top, 10, num_items)
    frame["has_target"] = metrics["has_target"]
    return frame[frame["has_target"]].reset_index(drop=True), corpus


def served_index_recall(model) -> Optional[float]:
    """The served model artifact's index recall@K against brute force: 1.0 for a
    brute-force export (exact by definition), the IndexBuilder's ``scann_recall_at_k``
    for a ScaNN one; None when the artifact records neither."""
    if model.get_string_custom_property("index_kind") == "brute_force":
        return 1.0
    if model.has_custom_property("scann_recall_at_k"):
        return float(model.get_float_custom_property("scann_recall_at_k"))
    return None


def index_recall_rule(recall: Optional[float], min_index_recall: float) -> dict:
    """The index rule's outcome: ``{"index_recall_at_k", "min_index_recall", "passed",
    "failure"}`` (``failure`` None when passed).  A missing figure fails unless the
    rule is off (``min_index_recall`` <= 0)."""
    if min_index_recall <= 0:
        passed, failure = True, None
    elif recall is None:
        passed, failure = False, ("index recall@K: the served model records no "
                                  f"scann_recall_at_k (min_index_recall {min_index_recall})")
    else:
        passed = recall >= min_index_recall
        failure = None if passed else (f"index recall@K {recall:.4f} < min_index_recall "
                                       f"{min_index_recall}")
    return {"index_recall_at_k": recall, "min_index_recall": min_index_recall,
            "passed": passed, "failure": failure}


def run(serving_dir: str, examples_uri: str, catalog_uri: str, transform_graph_uri: str,
        output_dir: str, baseline_dir: Optional[str], max_history: int,
        min_recall_vs_popularity: float, max_regression: float, split: str = "eval",
        index_recall: Optional[float] = None, min_index_recall: float = 0.0,
        beam_options: Optional[dict] = None) -> dict:
    from components import tfma_evaluation
    categories = catalog_categories(catalog_uri)
    item_ids = sorted(categories)
    index = {item: i for i, item in enumerate(item_ids)}
    tft_output = tft.TFTransformOutput(transform_graph_uri)
    vocabulary = tft_output.vocabulary_file_by_name(F.POPULARITY_VOCAB)
    assert vocabulary is not None  # the Transform (models/preprocessing.py) always writes it
    counts = read_popularity_counts(vocabulary, item_ids)
    scratch = storage.join(output_dir, "scored_examples")
    rows = served_scoring.score(serving_dir, baseline_dir, examples_uri, split, item_ids,
                                max_history, scratch, beam_options)
    storage.rmtree(scratch)
    if not len(rows):
        raise ValueError(f"the {split!r} split of {examples_uri} has no examples to evaluate")
    targets = [np.array([index[t] for t in ts if t in index], np.int64) for ts in rows.targets]
    first_target = [ts[0] if ts else "" for ts in rows.targets]
    slices = pd.DataFrame({
        "category": [categories.get(t, "unknown") for t in first_target],
        "candidate_set_size": [size_bucket(int(n)) for n in rows.candidate_set_size],
        "cold_start_target": ["true" if t in index and counts[index[t]] == 0 else "false"
                              for t in first_target]})
    predictions = rows.top
    models = {name: f"{name}/" for name in (*predictions, "popularity")}
    popularity_top = np.argsort(-counts, kind="stable")[:max(KS)]
    frame, corpus = evaluate_predictions(predictions, targets, popularity_top, slices,
                                         len(item_ids))
    rules = {}
    if min_recall_vs_popularity > 0:
        rules["min_ratio"] = {"popularity": min_recall_vs_popularity}
    if baseline_dir:
        rules["max_drop"] = {served_scoring.BASELINE: max_regression}
    corpus_by_model: dict[str, dict] = {}
    for key, value in corpus.items():
        model_name, metric = key.split("/")
        corpus_by_model.setdefault(model_name, {})[metric] = value
    summary = tfma_evaluation.evaluate(
        frame, models, baseline="popularity", slice_columns=list(SLICES),
        output_path=output_dir, overwrite=True, corpus_metrics=corpus_by_model,
        thresholds={"candidate": CANDIDATE, "metrics": {"recall@10": rules}} if rules else None)
    index_rule = index_recall_rule(index_recall, min_index_recall)
    failures = list(summary.failures) + ([index_rule["failure"]] if index_rule["failure"]
                                         else [])
    return {"examples": len(frame), "blessed": bool(summary.blessed) and index_rule["passed"],
            "failures": failures, "index_recall": index_rule,
            "overall": {m: summary.overall(m) for m in models}}


@tfx.dsl.components.component(use_beam=True)
def StarsEvaluator(
    model: tfx.dsl.components.InputArtifact[standard_artifacts.Model],
    examples: tfx.dsl.components.InputArtifact[standard_artifacts.Examples],
    catalog: tfx.dsl.components.InputArtifact[standard_artifacts.Examples],
    transform_graph: tfx.dsl.components.InputArtifact[standard_artifacts.TransformGraph],
    evaluation: tfx.dsl.components.OutputArtifact[standard_artifacts.ModelEvaluation],
    blessing: tfx.dsl.components.OutputArtifact[standard_artifacts.ModelBlessing],
    baseline_model: tfx.dsl.components.InputArtifact[standard_artifacts.Model] = None,
    max_history: tfx.dsl.components.Parameter[int] = 200,
    min_recall_vs_popularity: tfx.dsl.components.Parameter[float] = 1.0,
    max_regression: tfx.dsl.components.Parameter[float] = 0.02,
    min_index_recall: tfx.dsl.components.Parameter[float] = 0.95,
    beam_pipeline: tfx.dsl.components.BeamComponentParameter[beam.Pipeline] = None,
):
    """Evaluates the served model and blesses it (or not); the scoring is a Beam job with
    the pipeline's Beam options (``components.served_scoring``)."""
    beam_options = (beam_pipeline.options.get_all_options(drop_default=True)
                    if beam_pipeline is not None else None)
    baseline_dir = path_utils.serving_model_path(baseline_model.uri) if baseline_model else None
    result = run(path_utils.serving_model_path(model.uri), examples.uri, catalog.uri,
                 transform_graph.uri, evaluation.uri, baseline_dir, max_history,
                 min_recall_vs_popularity, max_regression,
                 index_recall=served_index_recall(model), min_index_recall=min_index_recall,
                 beam_options=beam_options)
    blessed = result["blessed"]
    storage.write_text(storage.join(blessing.uri, "BLESSED" if blessed else "NOT_BLESSED"),
                       "\n".join(result["failures"]))
    blessing.set_int_custom_property("blessed", int(blessed))
    blessing.set_string_custom_property("current_model", model.uri)
    blessing.set_int_custom_property("current_model_id", model.id)
    if baseline_model:
        blessing.set_string_custom_property("baseline_model", baseline_model.uri)
        blessing.set_int_custom_property("baseline_model_id", baseline_model.id)
    evaluation.set_float_custom_property("recall_at_10", result["overall"][CANDIDATE]["recall@10"])
    record_index_rule(result["index_recall"], evaluation, blessing)


def record_index_rule(rule: dict, evaluation, blessing) -> None:
    """The index rule beside the other blessing records: its figure on the evaluation
    and the blessing, its outcome on the blessing (its failure, if any, is in the
    blessing file with the others), and ``index_recall.json`` in the evaluation."""
    if rule["index_recall_at_k"] is not None:
        for artifact in (evaluation, blessing):
            artifact.set_float_custom_property("index_recall_at_k", rule["index_recall_at_k"])
    blessing.set_float_custom_property("min_index_recall", rule["min_index_recall"])
    blessing.set_int_custom_property("index_recall_passed", int(rule["passed"]))
    storage.write_json(storage.join(evaluation.uri, INDEX_RULE_FILE), rule, indent=1)
