"""End to end: the WHOLE pipeline on tiny synthetic data, twice.

The session's run (tests/conftest.py): every component runs; the ScaNN serving model is
pushed into a TF Serving model base path and, loaded in a NEW process, answers K distinct
ids for NI and GI.  A second run, on a copy of it, finds the first run's blessed model
through the resolver and is compared with it, but cannot be blessed, so nothing is pushed
(a second push is tested by the catalogue refreshes: test_release_cycle, the GCS e2e).
"""
import dataclasses
import glob
import json
import os
import subprocess
import sys

import pytest
import tensorflow_model_analysis as tfma

from components import tfma_evaluation
from models import cold_items, semantic_match, successor_source
from pipeline.runners import local
from tests.fixtures import copy_of_run

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def runs(pipeline_run, tmp_path_factory):
    """The session's run (the first), then one more on a copy of its root over the same
    data (the data half is a cache hit) with an unreachable blessing threshold."""
    config = copy_of_run(pipeline_run, tmp_path_factory.mktemp("whole"))
    first = sorted(os.listdir(os.path.join(config.serving_base, "stars")))
    local.run(dataclasses.replace(config, min_recall_vs_popularity=1000.0))
    return config, first


def _outputs(root, component, output):
    """A component's output artifacts, oldest first (a copied root keeps their times)."""
    uris = sorted(glob.glob(os.path.join(root, component, output, "*")), key=os.path.getmtime)
    assert uris, f"{component}.{output} missing"
    return uris


def _latest(root, component, output):
    return _outputs(root, component, output)[-1]


def _served(root, output):
    """The Trainer's ``output`` of the first run: the model that was pushed (the second
    run's was refused)."""
    return _outputs(root, "StarsTrainer", output)[0]


def test_every_component_ran(runs):
    config, _ = runs
    for component in ("StarsTrainer", "IndexBuilder", "StarsEvaluator", "Pusher"):
        assert os.path.isdir(os.path.join(config.pipeline_root, component)), component
    run_dir = _latest(config.pipeline_root, "StarsTrainer", "model_run")
    assert glob.glob(os.path.join(run_dir, "train", "events.out.tfevents.*"))
    assert os.path.isfile(os.path.join(run_dir, "projector_config.pbtxt"))
    # Selected on the eval split's full-catalogue ranking, as `stars eval` does.
    history = json.load(open(os.path.join(run_dir, "history.json")))
    selection = json.load(open(os.path.join(run_dir, "model_selection.json")))
    assert selection["monitor"] == "val_ndcg@10"
    assert selection["epochs_run"] == len(history["val_ndcg@10"]) >= 1
    assert selection["best"] == max(history["val_ndcg@10"])
    assert "val_loss_next" in history  # the eval losses still reach TensorBoard
    cold = selection["cold_item_norm"]
    assert cold is None or cold["chosen"] in cold_items.QUANTILES
    # The semantic match's weight (on in this run) is chosen on the same ranking.
    assert selection["semantic_match"]["chosen"] in semantic_match.WEIGHTS
    # So is the successor source's (on in this run), after the cold items' norm.
    assert selection["successor_source"]["chosen"] in successor_source.WEIGHTS
    assert list(selection)[-1] == "successor_source"


def test_index_report_records_scann_recall(runs):
    config, _ = runs
    report = json.load(open(os.path.join(
        _latest(config.pipeline_root, "IndexBuilder", "serving_model"), "index_report.json")))
    assert report["k"] == config.top_k and 0.0 <= report["scann_recall_at_k"] <= 1.0
    assert report["items"] == 150
    # Measured on real user embeddings: h_gen and h_next of sampled eval requests.
    assert report["query_source"] == "user_embeddings"
    assert report["queries"] > 0 and report["queries"] % 2 == 0


def test_evaluation_opens_with_tfma(runs):
    config, _ = runs
    evaluation = _latest(config.pipeline_root, "StarsEvaluator", "evaluation")
    result = tfma.load_eval_result(evaluation, model_name="stars_ni")
    assert result.slicing_metrics
    metrics = tfma_evaluation.load_summary(evaluation)["metrics"]
    assert {"stars_ni", "stars_gi", "stars_rr", "popularity"} <= set(metrics)
    assert "last_blessed" in metrics  # the second run was compared with the first
    overall = metrics["stars_ni"]["Overall"]
    assert 0.0 <= overall["recall@10"] <= 1.0 and "coverage@10" in overall
    assert any(s.startswith("category:") for s in metrics["stars_ni"])
    assert any(s.startswith("cold_start_target:") for s in metrics["stars_ni"])


REQUEST = """dict(
    history_item_ids=tf.constant([["p000001", "p000002", ""], ["", "", ""]]),
    history_event_types=tf.constant([["view", "purchase", ""], ["", "", ""]]),
    history_timestamps=tf.constant([[1700000000, 1700000300, 0], [0, 0, 0]], tf.int64),
    request_timestamp=tf.constant([1700000600, 1700000600], tf.int64))"""


def _as_lists(out):
    return {k: [[x.decode() if isinstance(x, bytes) else round(float(x), 4) for x in row]
                for row in v.numpy().tolist()] for k, v in out.items()}


def test_blessing_gates_the_pusher(runs):
    config, _ = runs
    blessings = sorted(glob.glob(os.path.join(config.pipeline_root, "StarsEvaluator",
                                              "blessing", "*")), key=os.path.getmtime)
    assert len(blessings) == 2
    assert os.path.isfile(os.path.join(blessings[0], "BLESSED"))
    assert os.path.isfile(os.path.join(blessings[-1], "NOT_BLESSED"))
    assert "recall@10" in open(os.path.join(blessings[-1], "NOT_BLESSED")).read()


def test_pushed_versions_and_new_process_answers(runs):
    import tensorflow as tf

    from stars.saved_model import load_serving_model
    config, first = runs
    versions = sorted(os.listdir(os.path.join(config.serving_base, "stars")))
    assert len(first) == 1 and versions == first  # the second run was not pushed
    export = os.path.join(config.serving_base, "stars", versions[-1])
    script = f"""
import json, stars, tensorflow as tf
from stars.saved_model import load_serving_model
m = load_serving_model({export!r})
out = m.signatures["serving_default"](**{REQUEST})
print(json.dumps({{k: [[x.decode() if isinstance(x, bytes) else round(float(x), 4) for x in row]
                   for row in v.numpy().tolist()] for k, v in out.items()}}))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    for variant in ("ni", "gi"):
        for row in answer[f"{variant}_ids"]:  # the empty history is answered too
            assert len(row) == config.top_k and len(set(row)) == config.top_k
        assert all(a >= b for row in answer[f"{variant}_scores"] for a, b in zip(row, row[1:]))
    # Same answer in this process; the index alone (search) agrees with recommend.
    from stars.saved_model import replay_warmup
    loaded = load_serving_model(export)
    assert replay_warmup(loaded, export) == 8  # TF Serving's warm-up file, one per signature
    here = _as_lists(loaded.signatures["serving_default"](**eval(REQUEST)))
    assert here["ni_ids"] == answer["ni_ids"] and here["gi_ids"] == answer["gi_ids"]
    numeric, categorical = [], []
    for name, spec in loaded.signatures["user_embeddings"].structured_input_signature[1].items():
        (numeric if spec.dtype == tf.float32 and name.startswith("user_num_") else
         categorical if name.startswith("user_cat_") else []).append(name)
    # The static user features keep their data-contract names (users.csv: age, email_domain).
    assert "user_num_age" in numeric and "user_cat_email_domain" in categorical, numeric
    request = eval(REQUEST)
    request.update(region=tf.constant(["", ""]), context_signals=tf.zeros([2, 4]))
    request.update({n: tf.constant([float("nan")] * 2) for n in numeric})
    request.update({n: tf.constant(["", ""]) for n in categorical})
    users = loaded.signatures["user_embeddings"](**request)
    offset = loaded.signatures["context_offset"](request_timestamp=request["request_timestamp"],
                                                 context_signals=request["context_signals"])
    tf.debugging.assert_near(users["h_next"], users["h_next_base"] + offset["offset"], atol=1e-4)
    searched = _as_lists(loaded.signatures["search"](query_embeddings=users["h_next"]))
    selected = json.load(open(os.path.join(
        _served(config.pipeline_root, "model_run"), "model_selection.json")))
    if selected["successor_source"]["chosen"] == 0:
        assert searched["ids"] == answer["ni_ids"]
    else:   # NI adds the successors of the latest events; the empty history has none
        assert searched["ids"][1] == answer["ni_ids"][1]
    # The item trend (on in this run) is in the served scores: h·w_j + β·trend_j at export.
    from tfx.utils import path_utils

    from models import trainer as T
    model, _, _, catalog, _ = T.load_trained(path_utils.serving_model_path(
        _served(config.pipeline_root, "model")))
    beta, trend = float(model.item_trend.beta.numpy()), model.item_trend.current().numpy()
    assert beta != 0.0 and trend.any()
    # So is the semantic match: the pushed model holds the weight chosen after training, and
    # the served user embeddings and index carry the text keys beside the learned part.
    selection = json.load(open(os.path.join(
        _served(config.pipeline_root, "model_run"), "model_selection.json")))
    assert float(model.semantic_match.weight.numpy()) == selection["semantic_match"]["chosen"]
    assert model.semantic_match.dim == 16
    assert users["h_next"].shape[1] == model.config.serving_dim + model.semantic_match.dim
    index = {str(item): i for i, item in enumerate(catalog.item_ids)}
    for q, ids, scores in zip(users["h_next"].numpy(), searched["ids"], searched["scores"]):
        rows = [index[i] for i in ids]
        expected = model.item_embeddings().numpy()[rows] @ q + beta * trend[rows]
        assert max(abs(a - b) for a, b in zip(scores, expected)) < 1e-3


def test_served_ni_is_the_exact_top_k_with_the_successor_source(runs):
    """The serving module's NI answer, with the successor source at a weight of 2, is the
    brute-force top K of h_next·w_j + β·trend_j + 2·log(1 + count_j) over the catalogue,
    the counts read from the pushed model's own table (unit tests check the table)."""
    import numpy as np
    import tensorflow as tf
    import tensorflow_transform as tft
    from tfx.utils import path_utils

    from models import features as F
    from models import trainer as T
    from models.serving import ServingModule
    config, _ = runs
    model, _, meta, catalog, adapter = T.load_trained(path_utils.serving_model_path(
        _latest(config.pipeline_root, "StarsTrainer", "model")))
    model.successor_source.weight.assign(2.0)
    module = ServingModule(model, adapter, tft.TFTransformOutput(meta.transform_graph_uri),
                           catalog.item_ids, "brute_force", config.top_k,
                           [n[len(F.USER_NUMERIC_PREFIX):] for n in meta.user_numeric],
                           [n[len(F.USER_CATEGORICAL_PREFIX):] for n in meta.user_vocab_sizes])
    signatures = module.signatures()
    answer = _as_lists(signatures["recommend"](**eval(REQUEST)))
    request = eval(REQUEST)
    request.update(region=tf.constant(["", ""]), context_signals=tf.zeros([2, 4]))
    request.update({f"user_num_{n}": tf.constant([float("nan")] * 2)
                    for n in module.user_numeric})
    request.update({f"user_cat_{c}": tf.constant(["", ""]) for c in module.user_categorical})
    h_next = signatures["user_embeddings"](**request)["h_next"].numpy()
    source = model.successor_source
    splits, successors, counts = (v.numpy() for v in (source.row_splits, source.successors,
                                                       source.counts))
    index = {str(item): i for i, item in enumerate(catalog.item_ids)}
    latest = [index["p000002"], index["p000001"]]   # the request's history, latest first
    count = np.zeros(len(catalog))
    for weight, item in zip((1.0, 0.5), latest):
        np.add.at(count, successors[splits[item]:splits[item + 1]],
                  weight * counts[splits[item]:splits[item + 1]])
    assert count.any()
    base = (h_next @ model.item_embeddings().numpy().T +
            float(model.item_trend.beta.numpy()) * model.item_trend.current().numpy())
    # A batch without any successor (one request with an empty history) is the index alone.
    alone = _as_lists(signatures["recommend"](**{k: v[1:] for k, v in eval(REQUEST).items()}))
    assert alone["ni_ids"] == answer["ni_ids"][1:]
    # A stored embedding with its latest items stored beside it gets the same answer.
    after = _as_lists(signatures["search_after_items"](
        query_embeddings=tf.constant(h_next), history_item_ids=request["history_item_ids"]))
    assert after["ids"] == answer["ni_ids"]
    np.testing.assert_allclose(after["scores"], answer["ni_scores"], atol=2e-3)
    for row, bonus in ((0, 2.0 * np.log1p(count)), (1, 0.0)):   # row 1: empty history
        full = base[row] + bonus
        expected = np.argsort(-full)[:config.top_k]
        assert answer["ni_ids"][row] == [str(catalog.item_ids[i]) for i in expected]
        np.testing.assert_allclose(answer["ni_scores"][row], full[expected], atol=2e-3)
    # The popularity ranking shipped with the model: the training prior, most popular first.
    popular = signatures["popular_items"](limit=tf.constant([7, 3], tf.int64))
    prior = np.exp(model.log_p.numpy().astype(np.float64))
    order = np.argsort(-prior, kind="stable")[:7]
    assert _as_lists(popular)["ids"] == [[str(catalog.item_ids[i]) for i in order]] * 2
    np.testing.assert_allclose(popular["prior"].numpy()[0], prior[order], rtol=1e-6)

