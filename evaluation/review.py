"""What the review notebook (``notebooks/review.ipynb``) reads after a pipeline run.

The notebook shows the latest StarsEvaluator run: TFMA's metrics per slice, the comparison
with the last blessed model, the blessing, and the Trainer's TensorBoard logs of the model
that was evaluated.  The look-ups and the table shaping live here, tested, so that each
notebook cell stays a line or two and the notebook cannot drift from the pipeline's layout.

Artefacts are found through ML Metadata, as TFX users find them, not by globbing the
pipeline root: MLMD knows which execution completed last (a failed run leaves a directory
but no completed execution), which model was the baseline, and the lineage from the
evaluated serving model back to the Trainer run that produced it.  The store is opened
read-only.  The metrics themselves are read from the evaluator's sidecar record
(`tfma_evaluation.load_summary`), which holds TFMA's per-slice output as TFMA's own
``load_metrics`` returned it, plus the corpus metrics and each blessing rule's verdict.
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Dict, List, Mapping, Optional, Sequence

import pandas as pd

from components.tfma_evaluation import OVERALL, _tfma_failures

EVALUATOR = "StarsEvaluator"        # the component id in pipeline/pipeline.py
LAST_BLESSED = "last_blessed"       # StarsEvaluator's name for the last blessed model
MODEL_RUN = "model_run"             # the Trainer's output key: TensorBoard logs + projector
SHOWN_METRICS = ("recall@10", "ndcg@10")


@dataclasses.dataclass(frozen=True)
class EvaluatorRun:
    """One completed StarsEvaluator execution and what it read and wrote (URIs)."""
    execution_id: int
    pipeline_run: str                  # the pipeline_run context's name (the run's start time)
    evaluation_uri: str
    blessing_uri: str
    blessed: bool
    model_uri: str                     # the serving model that was evaluated
    baseline_model_uri: Optional[str]  # the last blessed model it was compared with, if any
    model_run_uri: Optional[str]       # the Trainer's logs for the evaluated model


def open_store(metadata_path: str):
    """A read-only MLMD store over the pipeline's SQLite file (reviewing never writes)."""
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2 as pb
    if not os.path.isfile(metadata_path):
        raise FileNotFoundError(f"no MLMD store at {metadata_path}: has the pipeline run there?")
    config = pb.ConnectionConfig()
    config.sqlite.filename_uri = metadata_path
    config.sqlite.connection_mode = pb.SqliteMetadataSourceConfig.READONLY
    return metadata_store.MetadataStore(config)


def _io(store, execution_id: int) -> Dict[str, Dict[str, list]]:
    """{"inputs"|"outputs": {key: [artifact, ...]}} of one execution, from its events."""
    from ml_metadata.proto import metadata_store_pb2 as pb
    events = store.get_events_by_execution_ids([execution_id])
    artifacts = {a.id: a for a in store.get_artifacts_by_id([e.artifact_id for e in events])}
    out: Dict[str, Dict[str, list]] = {"inputs": {}, "outputs": {}}
    for event in events:
        side = ("inputs" if event.type in (pb.Event.INPUT, pb.Event.DECLARED_INPUT)
                else "outputs" if event.type in (pb.Event.OUTPUT, pb.Event.DECLARED_OUTPUT)
                else None)
        if side and event.path.steps:
            out[side].setdefault(event.path.steps[0].key, []).append(artifacts[event.artifact_id])
    return out


def _producer(store, artifact_id: int) -> Optional[int]:
    from ml_metadata.proto import metadata_store_pb2 as pb
    for event in store.get_events_by_artifact_ids([artifact_id]):
        if event.type in (pb.Event.OUTPUT, pb.Event.DECLARED_OUTPUT):
            return event.execution_id
    return None


def upstream_output(store, artifact, key: str, max_steps: int = 10):
    """The artifact with output key ``key`` of the nearest execution upstream of ``artifact``.

    Walks the lineage (producer, its inputs, their producers, ...) breadth first, so the
    Trainer's logs are found from the serving model whatever sits between them.
    """
    frontier, seen = [artifact], set()
    for _ in range(max_steps):
        following: list = []
        for current in frontier:
            execution_id = _producer(store, current.id)
            if execution_id is None or execution_id in seen:
                continue
            seen.add(execution_id)
            io = _io(store, execution_id)
            if io["outputs"].get(key):
                return io["outputs"][key][0]
            following.extend(a for artifacts in io["inputs"].values() for a in artifacts)
        if not following:
            return None
        frontier = following
    return None


def latest_evaluator_run(metadata_path: str, pipeline_name: str,
                         component_id: str = EVALUATOR) -> EvaluatorRun:
    """The latest completed ``component_id`` execution of ``pipeline_name`` in the store."""
    from ml_metadata.proto import metadata_store_pb2 as pb
    store = open_store(metadata_path)
    node = store.get_context_by_type_and_name("node", f"{pipeline_name}.{component_id}")
    executions = store.get_executions_by_context(node.id) if node is not None else []
    finished = (pb.Execution.COMPLETE, pb.Execution.CACHED)  # not running, failed, cancelled
    done = [e for e in executions if e.last_known_state in finished]
    if not done:
        raise LookupError(f"{metadata_path} records no completed {component_id} of pipeline "
                          f"{pipeline_name!r} (was the model half run?)")
    execution = max(done, key=lambda e: (e.create_time_since_epoch, e.id))
    io = _io(store, execution.id)
    (evaluation,), (blessing,) = io["outputs"]["evaluation"], io["outputs"]["blessing"]
    (model,) = io["inputs"]["model"]
    baseline = io["inputs"].get("baseline_model") or [None]
    run_context = [c.name for c in store.get_contexts_by_execution(execution.id)
                   if c.type == "pipeline_run"]
    model_run = upstream_output(store, model, MODEL_RUN)
    return EvaluatorRun(
        execution_id=execution.id, pipeline_run=run_context[0] if run_context else "",
        evaluation_uri=evaluation.uri, blessing_uri=blessing.uri,
        blessed=bool(blessing.custom_properties["blessed"].int_value),
        model_uri=model.uri, baseline_model_uri=baseline[0].uri if baseline[0] else None,
        model_run_uri=model_run.uri if model_run is not None else None)


# --------------------------------------------------------------------------
# TFMA's metrics as tables
# --------------------------------------------------------------------------

def candidate(summary: Mapping) -> str:
    """The model whose metrics decide the blessing.  The record names it only when a rule
    was set, so otherwise it is the evaluator's own choice (``CANDIDATE``)."""
    if summary.get("candidate"):
        return summary["candidate"]
    from components.stars_evaluator import CANDIDATE
    return CANDIDATE


def models_in_order(summary: Mapping) -> List[str]:
    """The candidate, the other variants, then the references: last blessed, TFMA's baseline."""
    chosen = candidate(summary)
    references = [m for m in (LAST_BLESSED, summary.get("baseline")) if m in summary["metrics"]]
    others = sorted(set(summary["metrics"]) - {chosen, *references})
    return [chosen, *others, *references]


def slice_values(metrics: Mapping[str, Mapping[str, Mapping[str, float]]],
                 column: str) -> List[str]:
    """The values of ``column`` that TFMA reported a slice for (``"category:Books"`` ...)."""
    prefix = column + ":"
    return sorted({s[len(prefix):] for by_slice in metrics.values() for s in by_slice
                   if s.startswith(prefix)})


def slice_table(metrics: Mapping[str, Mapping[str, Mapping[str, float]]], column: str,
                models: Optional[Sequence[str]] = None,
                metric_names: Sequence[str] = SHOWN_METRICS) -> pd.DataFrame:
    """One row per value of slice ``column``: its example count, then ``<model>/<metric>``.

    ``metrics`` is ``model -> slice -> metric -> value`` (the evaluator's record); rows are
    ordered by example count, largest first; a metric a model lacks on a slice is NaN.
    """
    models = list(models or metrics)
    rows = {}
    for value in slice_values(metrics, column):
        key = f"{column}:{value}"
        counts = [metrics[m][key]["example_count"] for m in models
                  if "example_count" in metrics[m].get(key, {})]
        row: Dict[str, float] = {"examples": int(counts[0]) if counts else 0}
        for metric in metric_names:
            for model in models:
                row[f"{model}/{metric}"] = metrics[model].get(key, {}).get(metric, math.nan)
        rows[value] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = column
    if table.empty:
        return table
    return table.sort_values("examples", ascending=False, kind="stable")


def comparison_table(metrics: Mapping[str, Mapping[str, Mapping[str, float]]], candidate: str,
                     reference: str, slice_name: str = OVERALL) -> Optional[pd.DataFrame]:
    """Candidate against a reference model on one slice, metric by metric, with the change.

    None when the evaluation has no ``reference`` (a first run has no last blessed model).
    """
    if reference not in metrics:
        return None
    ours, theirs = metrics[candidate].get(slice_name, {}), metrics[reference].get(slice_name, {})
    names = sorted((set(ours) & set(theirs)) - {"example_count"}, key=_metric_order)
    table = pd.DataFrame({candidate: [ours[n] for n in names],
                          reference: [theirs[n] for n in names]}, index=names)
    table["change"] = table[candidate] - table[reference]
    table.index.name = "metric"
    return table


def _metric_order(name: str):
    """hit@5, hit@10, ... in numeric order of K, names without K after."""
    base, _, k = name.partition("@")
    return (base, int(k) if k.isdigit() else math.inf)


def validation_table(summary: Mapping) -> pd.DataFrame:
    """The blessing rules the evaluator checked, one row each, with who checked them."""
    columns = ["metric", "rule", "reference", "bound", "candidate_value", "reference_value",
               "required", "status", "checked_by", "message"]
    return pd.DataFrame(list(summary.get("validations") or []), columns=columns)


def tfma_verdict(evaluation_uri: str) -> Dict[str, object]:
    """TFMA's own validation result (``tfma.load_validation_result``) in three fields.

    ``validated`` is False when no rule was left to TFMA (its ``missing_thresholds``:
    nothing validated, not a failure); ``validation_ok`` is then None.
    """
    import tensorflow_model_analysis as tfma
    result = tfma.load_validation_result(evaluation_uri)
    validated = not result.missing_thresholds
    return {"validated": validated,
            "validation_ok": bool(result.validation_ok) if validated else None,
            "failures": _tfma_failures(result)}


# --------------------------------------------------------------------------
# the Trainer's TensorBoard logs
# --------------------------------------------------------------------------

def scalar_summaries(log_dir: str) -> pd.DataFrame:
    """Every scalar summary under ``log_dir``: one row per (run, tag, step).

    Reads the event files directly (TensorBoard's own loader, every event: TensorBoard's
    EventAccumulator would sample them); ``run`` is the event file's folder relative to
    ``log_dir`` (``train``, ``validation``).
    """
    import glob

    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.util import tensor_util
    rows = []
    pattern = os.path.join(glob.escape(log_dir), "**", "events.out.tfevents.*")
    for path in sorted(glob.glob(pattern, recursive=True)):
        run = os.path.relpath(os.path.dirname(path), log_dir)
        plugin_of = {}  # a writer may give a tag's plugin on its first event only
        for event in EventFileLoader(path).Load():
            for value in event.summary.value:  # TF 2 summaries: scalars are tensors
                if value.metadata.plugin_data.plugin_name:
                    plugin_of[value.tag] = value.metadata.plugin_data.plugin_name
                if plugin_of.get(value.tag) != "scalars":
                    continue
                rows.append(dict(run=run, tag=value.tag, step=int(event.step),
                                 wall_time=float(event.wall_time),
                                 value=float(tensor_util.make_ndarray(value.tensor).item())))
    return pd.DataFrame(rows, columns=["run", "tag", "step", "wall_time", "value"])


def epoch_table(scalars: pd.DataFrame, prefix: str = "epoch_") -> pd.DataFrame:
    """Keras's per-epoch scalars (tags ``epoch_<name>``) as one row per epoch,
    columns ``<run>/<name>``; the last value wins if a step was written twice."""
    epochs = scalars[scalars["tag"].str.startswith(prefix)]
    if epochs.empty:
        return pd.DataFrame()
    names = epochs["run"] + "/" + epochs["tag"].str[len(prefix):]
    table = (epochs.assign(name=names).sort_values("wall_time")
             .pivot_table(index="step", columns="name", values="value", aggfunc="last"))
    table.index.name = "epoch"
    table.columns.name = None
    return table


def projector_embeddings(log_dir: str) -> pd.DataFrame:
    """The embeddings TensorBoard's projector will show from ``log_dir``: tensor, shape and
    how many labels its metadata file has (one per row of the tensor when it is right)."""
    import tensorflow as tf
    from google.protobuf import text_format
    from tensorboard.plugins.projector import projector_config_pb2
    columns = ["tensor", "rows", "dims", "labels", "metadata"]
    path = os.path.join(log_dir, "projector_config.pbtxt")
    if not os.path.isfile(path):
        return pd.DataFrame(columns=columns)
    with open(path) as f:
        config = text_format.Parse(f.read(), projector_config_pb2.ProjectorConfig())
    shapes = dict(tf.train.list_variables(config.model_checkpoint_path or log_dir))
    rows = []
    for entry in config.embeddings:
        shape = shapes.get(entry.tensor_name, [])
        metadata = os.path.join(log_dir, entry.metadata_path) if entry.metadata_path else ""
        labels = None
        if metadata and os.path.isfile(metadata):
            with open(metadata) as f:
                labels = sum(1 for _ in f)
        rows.append(dict(tensor=entry.tensor_name, rows=shape[0] if shape else None,
                         dims=shape[1] if len(shape) > 1 else None, labels=labels,
                         metadata=entry.metadata_path))
    return pd.DataFrame(rows, columns=columns)
