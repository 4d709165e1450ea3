"""The review notebook (notebooks/review.ipynb) and its helpers (evaluation.review).

The helpers are tested on data built here: a small MLMD store with the pipeline's lineage,
a TFMA run over a hand-made frame, TensorBoard event files and a projector written by the
Trainer's own writer.  The e2e test executes the notebook headless (nbclient) on the
pipeline's output and reads its tables back from the cell outputs.
"""
import io
import math
import os
import types

import numpy as np
import pandas as pd
import pytest

from components import tfma_evaluation as te
from evaluation import review

NOTEBOOK = os.path.join(os.path.dirname(os.path.dirname(__file__)), "notebooks", "review.ipynb")


# --------------------------------------------------------------------------
# MLMD: the latest completed evaluation and its lineage
# --------------------------------------------------------------------------

class _Store:
    """A writable MLMD store laid out as TFX's LocalDagRunner records a pipeline."""

    def __init__(self, path, pipeline="stars"):
        from ml_metadata.metadata_store import metadata_store
        from ml_metadata.proto import metadata_store_pb2 as pb
        self.pb, self.pipeline = pb, pipeline
        config = pb.ConnectionConfig()
        config.sqlite.filename_uri = str(path)
        config.sqlite.connection_mode = pb.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
        self.store = metadata_store.MetadataStore(config)
        self.types = {}
        for name in ("Model", "ModelRun", "ModelEvaluation", "ModelBlessing"):
            self.types[name] = self.store.put_artifact_type(pb.ArtifactType(name=name))
        for name in ("pipeline", "pipeline_run", "node"):
            self.types[name] = self.store.put_context_type(pb.ContextType(name=name))
        self.contexts = {}

    def context(self, kind, name):
        if (kind, name) not in self.contexts:
            [cid] = self.store.put_contexts([self.pb.Context(type_id=self.types[kind], name=name)])
            self.contexts[kind, name] = self.store.get_contexts_by_id([cid])[0]
        return self.contexts[kind, name]

    def artifact(self, type_name, uri, **properties):
        artifact = self.pb.Artifact(type_id=self.types[type_name], uri=uri,
                                    state=self.pb.Artifact.LIVE)
        for key, value in properties.items():
            artifact.custom_properties[key].int_value = value
        return artifact

    def execute(self, component, run, inputs=(), outputs=(), state="COMPLETE"):
        """Records one execution; returns its output artifacts (with ids) by key."""
        pb = self.pb
        type_id = self.store.put_execution_type(pb.ExecutionType(name=component))
        execution = pb.Execution(type_id=type_id,
                                 last_known_state=getattr(pb.Execution, state))
        pairs = []
        for kind, items in ((pb.Event.INPUT, inputs), (pb.Event.OUTPUT, outputs)):
            for key, artifact in items:
                event = pb.Event(type=kind)
                event.path.steps.add().key = key
                event.path.steps.add().index = 0
                pairs.append((artifact, event))
        contexts = [self.context("pipeline", self.pipeline),
                    self.context("pipeline_run", run),
                    self.context("node", f"{self.pipeline}.{component}")]
        _, artifact_ids, _ = self.store.put_execution(execution, pairs, contexts)
        output_ids = artifact_ids[len(inputs):]
        return {key: artifact for (key, _), artifact in
                zip(outputs, self.store.get_artifacts_by_id(output_ids))}


def _train_and_evaluate(store, run, baseline=None, evaluator_state="COMPLETE"):
    trained = store.execute("StarsTrainer", run, outputs=[
        ("model", store.artifact("Model", f"/root/StarsTrainer/model/{run}")),
        ("model_run", store.artifact("ModelRun", f"/root/StarsTrainer/model_run/{run}"))])
    served = store.execute("IndexBuilder", run, inputs=[("model", trained["model"])], outputs=[
        ("serving_model", store.artifact("Model", f"/root/IndexBuilder/serving_model/{run}"))])
    inputs = [("model", served["serving_model"])]
    if baseline is not None:
        inputs.append(("baseline_model", baseline))
    store.execute("StarsEvaluator", run, inputs=inputs, state=evaluator_state, outputs=[
        ("evaluation", store.artifact("ModelEvaluation", f"/root/StarsEvaluator/evaluation/{run}")),
        ("blessing", store.artifact("ModelBlessing", f"/root/StarsEvaluator/blessing/{run}",
                                    blessed=1))])
    return served["serving_model"]


def test_latest_evaluator_run_follows_the_lineage_to_the_trainer(tmp_path):
    path = tmp_path / "metadata.sqlite"
    store = _Store(path)
    first = _train_and_evaluate(store, "run1")
    _train_and_evaluate(store, "run2", baseline=first)
    _train_and_evaluate(store, "run3", baseline=first, evaluator_state="FAILED")  # not shown

    run = review.latest_evaluator_run(str(path), "stars")
    assert run.pipeline_run == "run2"
    assert run.evaluation_uri == "/root/StarsEvaluator/evaluation/run2"
    assert run.blessing_uri == "/root/StarsEvaluator/blessing/run2" and run.blessed
    assert run.model_uri == "/root/IndexBuilder/serving_model/run2"
    assert run.baseline_model_uri == "/root/IndexBuilder/serving_model/run1"
    assert run.model_run_uri == "/root/StarsTrainer/model_run/run2"  # the evaluated model's


def test_first_evaluation_has_no_baseline_and_missing_stores_say_so(tmp_path):
    path = tmp_path / "metadata.sqlite"
    store = _Store(path)
    _train_and_evaluate(store, "run1")
    run = review.latest_evaluator_run(str(path), "stars")
    assert run.baseline_model_uri is None and run.model_run_uri.endswith("model_run/run1")
    with pytest.raises(LookupError, match="other"):
        review.latest_evaluator_run(str(path), "other")
    with pytest.raises(FileNotFoundError, match="no MLMD store"):
        review.latest_evaluator_run(str(tmp_path / "absent.sqlite"), "stars")


# --------------------------------------------------------------------------
# TFMA's output as tables
# --------------------------------------------------------------------------

MODELS = {"stars_ni": "stars_ni/", "popularity": "popularity/"}


@pytest.fixture(scope="module")
def tfma_run(tmp_path_factory):
    """TFMA over 60 hand-made examples, with a rule the candidate fails."""
    rng = np.random.default_rng(0)
    n = 60
    frame = pd.DataFrame({
        "category": rng.choice(["Books", "Toys", "Home"], n, p=[0.5, 0.3, 0.2]),
        "cold_start_target": rng.choice(["true", "false"], n)})
    for model in MODELS:
        frame[f"{model}/recall@10"] = rng.random(n)
        frame[f"{model}/ndcg@10"] = rng.random(n) / 2
    out = str(tmp_path_factory.mktemp("tfma") / "evaluation")
    te.evaluate(frame, MODELS, baseline="popularity",
                slice_columns=["category", "cold_start_target"], output_path=out,
                thresholds={"candidate": "stars_ni", "metrics": {"recall@10": {"min": 0.99}}})
    return frame, out


def test_slice_table_holds_tfma_means_one_row_per_slice(tfma_run):
    frame, out = tfma_run
    summary = te.load_summary(out)
    table = review.slice_table(summary["metrics"], "category", review.models_in_order(summary))
    assert table.index.name == "category"
    assert list(table["examples"]) == sorted(table["examples"], reverse=True)
    expected = frame.groupby("category").agg(
        examples=("stars_ni/recall@10", "size"), ni=("stars_ni/recall@10", "mean"),
        pop=("popularity/ndcg@10", "mean"))
    assert table["examples"].to_dict() == expected["examples"].to_dict()
    assert table["examples"].sum() == len(frame)
    for category, row in expected.iterrows():
        assert table.loc[category, "stars_ni/recall@10"] == pytest.approx(row["ni"])
        assert table.loc[category, "popularity/ndcg@10"] == pytest.approx(row["pop"])
    assert list(table.columns) == ["examples", "stars_ni/recall@10", "popularity/recall@10",
                                   "stars_ni/ndcg@10", "popularity/ndcg@10"]
    assert review.slice_table(summary["metrics"], "region").empty  # never sliced by region


def test_comparisons_and_the_rules_tfma_checked(tfma_run):
    frame, out = tfma_run
    summary = te.load_summary(out)
    assert review.candidate(summary) == "stars_ni"
    against = review.comparison_table(summary["metrics"], "stars_ni", "popularity")
    assert list(against.index) == ["ndcg@10", "recall@10"]
    assert against.loc["recall@10", "change"] == pytest.approx(
        frame["stars_ni/recall@10"].mean() - frame["popularity/recall@10"].mean())
    assert review.comparison_table(summary["metrics"], "stars_ni", review.LAST_BLESSED) is None
    rules = review.validation_table(summary)
    assert rules[["metric", "rule", "status", "checked_by"]].values.tolist() == [
        ["recall@10", "min", "failed", "tfma"]]
    verdict = review.tfma_verdict(out)
    assert verdict["validated"] and verdict["validation_ok"] is False
    assert [(f["metric"], f["rule"]) for f in verdict["failures"]] == [("recall@10", "min")]


def test_model_order_and_the_candidate_when_no_rule_named_it():
    from components.stars_evaluator import CANDIDATE
    summary = {"candidate": None, "baseline": "popularity",
               "metrics": {m: {} for m in ("popularity", "stars_rr", review.LAST_BLESSED,
                                           CANDIDATE, "stars_gi")}}
    assert review.candidate(summary) == CANDIDATE
    assert review.models_in_order(summary) == [CANDIDATE, "stars_gi", "stars_rr",
                                               review.LAST_BLESSED, "popularity"]
    assert review.validation_table({"validations": []}).empty


def test_metric_order_follows_k_numerically():
    metrics = {"a": {"Overall": {"hit@50": 1.0, "hit@5": 0.2, "hit@10": 0.5, "mrr": 0.1,
                                 "example_count": 3.0}},
               "b": {"Overall": {"hit@50": 1.0, "hit@5": 0.1, "hit@10": 0.5, "mrr": 0.3,
                                 "example_count": 3.0}}}
    table = review.comparison_table(metrics, "a", "b")
    assert list(table.index) == ["hit@5", "hit@10", "hit@50", "mrr"]
    assert table["change"].tolist() == pytest.approx([0.1, 0.0, 0.0, -0.2])


# --------------------------------------------------------------------------
# TensorBoard logs
# --------------------------------------------------------------------------

def test_scalar_summaries_and_epoch_table(tmp_path):
    import tensorflow as tf
    for run, offset in (("train", 0.0), ("validation", 10.0)):
        with tf.summary.create_file_writer(str(tmp_path / run)).as_default():
            for epoch in range(3):
                tf.summary.scalar("epoch_loss", offset + epoch, step=epoch)
                tf.summary.histogram("kernel_0/histogram", tf.random.normal([8]), step=epoch)
            tf.summary.scalar("evaluation_loss_vs_iterations", 7.0, step=40)
    scalars = review.scalar_summaries(str(tmp_path))
    assert set(scalars["run"]) == {"train", "validation"}
    assert "kernel_0/histogram" not in set(scalars["tag"])  # histograms are not scalars
    table = review.epoch_table(scalars)
    assert list(table.index) == [0, 1, 2] and table.index.name == "epoch"
    assert list(table.columns) == ["train/loss", "validation/loss"]
    assert table["validation/loss"].tolist() == pytest.approx([10.0, 11.0, 12.0])
    assert review.epoch_table(scalars[scalars["tag"] != "epoch_loss"]).empty


def test_projector_embeddings_as_the_trainer_writes_them(tmp_path):
    from models.trainer import write_projector
    items = ["p1", "p2", "p3", "p4"]
    model = types.SimpleNamespace(item_embeddings=lambda: np.ones((4, 6), np.float32))
    write_projector(model, types.SimpleNamespace(item_ids=items), str(tmp_path))
    table = review.projector_embeddings(str(tmp_path))
    assert table[["rows", "dims", "labels", "metadata"]].values.tolist() == [
        [4, 6, 4, "item_metadata.tsv"]]
    assert review.projector_embeddings(str(tmp_path / "nothing")).empty


# --------------------------------------------------------------------------
# the notebook, end to end
# --------------------------------------------------------------------------

def _cell(notebook, tag):
    [cell] = [c for c in notebook.cells if tag in c.metadata.get("tags", [])]
    return cell


def _text(cell):
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream"
                   and o.name == "stdout")


def _tables(cell):
    """The DataFrames a cell displayed, read back from their HTML (index restored)."""
    tables = []
    for output in cell.outputs:
        html = output.get("data", {}).get("text/html", "")
        if "<table" not in html:
            continue
        raw = pd.read_html(io.StringIO(html), converters={0: str})[0]  # labels stay text
        if isinstance(raw.columns, pd.MultiIndex):  # a named index: a second header row
            name = raw.columns[0][1]
            raw.columns = [name] + [c[0] for c in raw.columns[1:]]
        else:
            name = raw.columns[0]
        tables.append(raw.set_index(name))
    return tables


def _in_unit_interval(values):
    return all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in values)


@pytest.mark.e2e
def test_review_notebook_on_the_pipeline_output(pushed_model, tmp_path):
    import json

    import nbformat
    import tensorflow_model_analysis as tfma
    from nbclient import NotebookClient

    from stars.data.catalog import UNKNOWN_CATEGORY, category_levels
    config, _ = pushed_model
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert "configure()" in next(c for c in notebook.cells if c.cell_type == "code").source
    _cell(notebook, "parameters").source += f"\npipeline_root = {config.pipeline_root!r}\n"
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    nbformat.write(notebook, str(tmp_path / "review.ipynb"))  # to read when an assertion fails

    # The evaluation shown is the pipeline's only one, found through MLMD.
    [overview] = _tables(_cell(notebook, "run"))
    evaluation = overview.loc["evaluation", "value"]
    assert os.path.dirname(evaluation) == os.path.join(config.pipeline_root, "StarsEvaluator",
                                                       "evaluation")
    assert overview.loc["blessed", "value"] == "True"  # it was pushed

    # TFMA's slices: one table per slice column, one row per slice TFMA wrote.
    result = tfma.load_eval_result(evaluation, model_name="stars_ni")
    tfma_slices = {}
    for slice_key, by_output in result.slicing_metrics:
        if slice_key:
            ((column, value),) = slice_key
            metrics = by_output[""][""]
            tfma_slices.setdefault(column, {})[str(value)] = (
                metrics["example_count"]["doubleValue"], metrics["recall@10"]["doubleValue"])
    tables = {t.index.name: t for t in _tables(_cell(notebook, "slices"))}
    assert set(tables) == {"category", "candidate_set_size", "cold_start_target"}
    examples = int(overview.loc["examples", "value"])
    for column, table in tables.items():
        assert set(table.index) == set(tfma_slices[column]), column
        assert table["examples"].sum() == examples  # each slice column partitions the examples
        for value, (count, recall) in tfma_slices[column].items():
            row = table.loc[value]
            assert row["examples"] == count and row["stars_ni/recall@10"] == pytest.approx(
                recall, abs=1e-4)  # the HTML shows 4 decimals
        for name in table.columns.drop("examples"):
            assert _in_unit_interval(table[name]), (column, name)
    items = pd.read_csv(os.path.join(config.data_dir, "items.csv"))
    top_levels = {(category_levels(str(path)) or [UNKNOWN_CATEGORY])[0]
                  for path in items["category_path"].fillna("")}
    assert set(tables["category"].index) <= top_levels

    # One run: no earlier blessed model, said in the output; popularity is compared.
    assert "No earlier blessed model" in _text(_cell(notebook, "vs-last-blessed"))
    [against_popularity] = _tables(_cell(notebook, "vs-baseline"))
    assert list(against_popularity.columns) == ["stars_ni", "popularity", "change"]
    assert {"recall@10", "ndcg@10", "coverage@10"} <= set(against_popularity.index)
    assert _in_unit_interval(against_popularity["stars_ni"])
    assert "blessed: True" in _text(_cell(notebook, "blessing"))

    # TensorBoard: the command names the Trainer's log dir, whose scalars are shown.
    command = _text(_cell(notebook, "tensorboard")).strip()
    assert command.startswith("tensorboard --logdir ")
    log_dir = command[len("tensorboard --logdir "):]
    assert os.path.dirname(log_dir) == os.path.join(config.pipeline_root, "StarsTrainer",
                                                    "model_run")
    assert os.path.isfile(os.path.join(log_dir, "projector_config.pbtxt"))
    history = json.load(open(os.path.join(log_dir, "history.json")))
    [epochs] = _tables(_cell(notebook, "scalars"))
    assert len(epochs) == len(history["val_ndcg@10"])
    assert epochs["validation/ndcg@10"].tolist() == pytest.approx(history["val_ndcg@10"],
                                                                  abs=1e-4)
    assert np.isfinite(epochs.to_numpy(dtype=float)).all()
    [projector] = _tables(_cell(notebook, "projector"))
    assert projector["rows"].tolist() == projector["labels"].tolist() == [len(items)]
