"""TensorFlow Model Analysis over materialised retrieval metrics.

The retrieval models are scored outside TFMA: for each eval example the
serving path materialises a top-K list per model variant, and
`retrieval_metrics.per_example_metrics` turns it into per-example values
(``hit@10``, ``recall@10``, ``ndcg@10`` ...).  This module feeds one row per
eval example into TFMA so that the *means* per model and per slice are
computed, compared against a baseline model and validated by TFMA itself, and
the result opens with ``tfma.load_eval_result(output_path, model_name=...)``,
``tfma.load_metrics`` / ``tfma.load_validation_result`` and the TFMA /
TensorBoard (Fairness Indicators) viewers.

How TFMA is driven (TFMA 0.47, no SavedModel)
---------------------------------------------
* Every model variant is a ``ModelSpec(name=..., model_type=
  "materialized_prediction")`` with a matching ``EvalSharedModel`` from
  ``tfma.default_eval_shared_model(eval_saved_model_path="")`` (nothing is
  loaded).  This is TFMA's model-agnostic path: its default extractors only
  read features from the input Arrow RecordBatches.  Passing the shared
  models (rather than calling ``tfma.analyze_raw_data``) matters: TFMA decides
  "there is a baseline" from the number of shared models, and without them it
  drops the baseline ModelSpec and refuses change thresholds.
* The frame is converted to Arrow RecordBatches and run through
  ``tfma.ExtractEvaluateAndWriteResults`` in a Beam pipeline (DirectRunner
  unless ``beam_pipeline_args`` say otherwise).
* Each metric is a small custom TFMA metric, `ColumnMean`, whose combiner
  averages one feature column per model (``<prefix><metric>``); its
  ``MetricKey`` carries the model name, so TFMA writes ``recall@10`` per
  model and, when a baseline is given, ``recall@10_diff`` (candidate minus
  baseline) per slice.  ``example_count`` is TFMA's own ``ExampleCount``.
* Slices: overall plus one ``SlicingSpec(feature_keys=[column])`` per slice
  column (values are cast with ``astype(str)``, so None becomes "None").
* Reading back: with several models, ``tfma.load_eval_result`` needs
  ``model_name=`` (without it TFMA picks no model and returns no slices);
  with a single model TFMA names it "" and ``load_eval_result(path)`` works.
  ``EvalSummary.metrics`` is read with ``tfma.load_metrics``.

Thresholds and blessing
-----------------------
``thresholds`` is a dict::

    {
      "candidate": "stars_rr",          # the model whose metrics bless or not
      "metrics": {
        "recall@10": {
          "min": 0.02,                       # candidate >= 0.02
          "max": 1.0,                        # candidate <= 1.0 (rarely useful)
          "min_ratio": {"popularity": 1.1},  # candidate >= 1.1 * popularity
          "max_drop": {"last_blessed": 0.005},  # candidate >= last_blessed - 0.005
        },
        "coverage@10": {"min": 0.05},        # corpus metric (see below)
      },
    }

All rules apply to the overall slice.  A rule that TFMA can express is put in
the ``EvalConfig`` and *validated by TFMA* (its result is in TFMA's
``validations`` file): ``min``/``max`` become ``GenericValueThreshold``
bounds, ``min_ratio``/``max_drop`` against the ``baseline`` model become
``GenericChangeThreshold(relative=ratio - 1)`` / ``(absolute=-tolerance)``
with ``HIGHER_IS_BETTER``.  TFMA supports one baseline model only, so rules
against another reference model (e.g. ``popularity`` when the baseline is
``last_blessed``) and rules on corpus metrics are checked here with the same
semantics.  Notably, as in TFMA, a ``min_ratio`` rule fails when the
reference value is 0 (the relative change is undefined); use ``min`` or
``max_drop`` for references that can be 0.  A rule whose reference model is
not in ``models`` (first run: no last blessed model) is *skipped*, as TFX
does when rubber-stamping.  ``blessed`` is true when no rule failed.

Corpus-level metrics
--------------------
Coverage@K is a property of the whole set of lists, not a mean over
examples, so TFMA cannot compute it per slice from per-example values.
Compute it with `retrieval_metrics.coverage_at_k` and pass
``corpus_metrics={"stars_rr": {"coverage@10": 0.31}, ...}``: the values are
added to ``EvalSummary.metrics[model]["Overall"]``, may be used in
``thresholds``, and are written to the sidecar file.

Sidecar file
------------
``<output_path>/stars_evaluation.json`` (`SIDECAR_FILE`) records: ``models``
(name -> column prefix), ``baseline``, ``candidate``, ``slice_columns``,
``metrics`` (model -> slice -> metric -> value, from TFMA's output plus the
corpus metrics), ``corpus_metrics``, ``thresholds``, ``validations`` (one
record per rule: ``metric``, ``rule``, ``reference``, ``bound``,
``candidate_value``, ``reference_value``, ``required``, ``status`` in
passed/failed/skipped, ``checked_by`` in tfma/stars, ``message``),
``tfma_validation_ok``, ``blessed`` and ``failures``.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

import apache_beam as beam
import numpy as np
import pandas as pd
import pyarrow as pa
import tensorflow_model_analysis as tfma
from google.protobuf import text_format
from tensorflow_model_analysis.metrics import metric_types, metric_util
from tfx_bsl.arrow import table_util

from stars import storage

SIDECAR_FILE = "stars_evaluation.json"
OVERALL = "Overall"  # TFMA's name of the overall slice (slicer.stringify_slice_key(()))
MATERIALIZED = "materialized_prediction"
RULES = ("min", "max", "min_ratio", "max_drop")
# A metric column is <prefix><name> with <name> like "recall@10" or "mrr".
_METRIC_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]*(@\d+)?$")
_BATCH_ROWS = 10_000


# --------------------------------------------------------------------------
# the TFMA metric: mean of one feature column per model
# --------------------------------------------------------------------------

class _MeanAccumulator:
    __slots__ = ("count", "total")

    def __init__(self):
        self.count = 0.0
        self.total = 0.0


class _ColumnMeanCombiner(beam.CombineFn):
    """Mean of a scalar feature column (one value per example)."""

    def __init__(self, key: metric_types.MetricKey, column: str):
        self._key = key
        self._column = column

    def create_accumulator(self) -> _MeanAccumulator:
        return _MeanAccumulator()

    def add_input(self, accumulator: _MeanAccumulator,
                  element: metric_types.StandardMetricInputs) -> _MeanAccumulator:
        value = np.asarray(element[tfma.FEATURES_KEY][self._column]).reshape(-1)
        if value.size != 1:
            raise ValueError(f"{self._column}: expected one value per example, got {value}")
        accumulator.count += 1.0
        accumulator.total += float(value[0])
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[_MeanAccumulator]) -> _MeanAccumulator:
        accumulators = iter(accumulators)
        result = next(accumulators)
        for acc in accumulators:
            result.count += acc.count
            result.total += acc.total
        return result

    def extract_output(self, accumulator: _MeanAccumulator) -> Dict[metric_types.MetricKey, float]:
        value = accumulator.total / accumulator.count if accumulator.count else float("nan")
        return {self._key: value}


def _column_mean_computations(name: str, columns: Mapping[str, str], model_name: str = "",
                              example_weighted: bool = False) -> metric_types.MetricComputations:
    column = columns.get(model_name)
    if column is None:  # metric not defined for this model
        return []
    key = metric_types.MetricKey(name=name, model_name=model_name,
                                 example_weighted=example_weighted)
    return [metric_types.MetricComputation(
        keys=[key],
        preprocessors=[metric_types.StandardMetricInputsPreprocessor(
            include_filter={tfma.FEATURES_KEY: {column: {}}},
            include_default_inputs=False)],
        combiner=_ColumnMeanCombiner(key, column))]


class ColumnMean(metric_types.Metric):
    """TFMA metric ``name`` = mean of feature ``columns[model_name]`` (per model).

    Used as ``MetricConfig(class_name="ColumnMean", module=__name__,
    config=json.dumps({"name": "recall@10", "columns": {"stars_rr":
    "stars_rr_recall@10"}}))``.
    """

    def __init__(self, name: str, columns: Mapping[str, str]):
        super().__init__(metric_util.merge_per_key_computations(_column_mean_computations),
                         name=name, columns=dict(columns))


metric_types.register_metric(ColumnMean)


# --------------------------------------------------------------------------
# result
# --------------------------------------------------------------------------

@dataclasses.dataclass
class EvalSummary:
    """What `evaluate` found.

    ``metrics[model][slice][metric]``: slice names are TFMA's
    (``"Overall"``, ``"category:Books"``); metrics are the column means
    (``"recall@10"`` ...), ``"example_count"`` and, on ``"Overall"``, the
    corpus metrics passed in.
    """
    metrics: Dict[str, Dict[str, Dict[str, float]]]
    blessed: bool
    failures: List[str]
    validations: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    output_path: str = ""
    # TFMA's own verdict on the rules it checked; None when it checked none.
    tfma_validation_ok: Optional[bool] = None

    def overall(self, model: str) -> Dict[str, float]:
        return self.metrics[model][OVERALL]


# --------------------------------------------------------------------------
# config building
# --------------------------------------------------------------------------

def _metric_columns(frame: pd.DataFrame, prefix: str,
                    metric_names: Optional[Sequence[str]]) -> Dict[str, str]:
    """metric name -> column for one model prefix."""
    if metric_names is not None:
        cols = {m: prefix + m for m in metric_names if prefix + m in frame.columns}
    else:
        cols = {c[len(prefix):]: c for c in frame.columns
                if c.startswith(prefix) and _METRIC_NAME.match(c[len(prefix):])}
    for col in cols.values():
        if not pd.api.types.is_numeric_dtype(frame[col]):
            raise TypeError(f"metric column {col!r} is not numeric ({frame[col].dtype})")
        if frame[col].isna().any():
            raise ValueError(
                f"metric column {col!r} has missing values: drop the examples without "
                f"a target (has_target == False) before evaluating")
    return cols


def _parse_thresholds(thresholds: Optional[Mapping[str, Any]], models: Mapping[str, str]):
    thresholds = dict(thresholds or {})
    unknown = set(thresholds) - {"candidate", "metrics"}
    if unknown:
        raise ValueError(f"unknown thresholds keys {sorted(unknown)}; "
                         "expected 'candidate', 'metrics'")
    rules: List[Dict[str, Any]] = []
    for metric, spec in (thresholds.get("metrics") or {}).items():
        bad = set(spec) - set(RULES)
        if bad:
            raise ValueError(f"thresholds for {metric}: unknown rules {sorted(bad)}; use {RULES}")
        for rule in ("min", "max"):
            if rule in spec:
                rules.append(dict(metric=metric, rule=rule, reference=None,
                                  bound=float(spec[rule])))
        for rule in ("min_ratio", "max_drop"):
            for ref, bound in (spec.get(rule) or {}).items():
                rules.append(dict(metric=metric, rule=rule, reference=ref, bound=float(bound)))
    candidate = thresholds.get("candidate")
    if rules and candidate is None:
        raise ValueError("thresholds need 'candidate': the model whose metrics decide blessing")
    if candidate is not None and candidate not in models:
        raise ValueError(f"threshold candidate {candidate!r} is not one of the models "
                         f"{list(models)}")
    return candidate, rules


def _tfma_threshold(rule: Mapping[str, Any]) -> tfma.MetricThreshold:
    if rule["rule"] == "min":
        return tfma.MetricThreshold(value_threshold=tfma.GenericValueThreshold(
            lower_bound={"value": rule["bound"]}))
    if rule["rule"] == "max":
        return tfma.MetricThreshold(value_threshold=tfma.GenericValueThreshold(
            upper_bound={"value": rule["bound"]}))
    if rule["rule"] == "min_ratio":
        return tfma.MetricThreshold(change_threshold=tfma.GenericChangeThreshold(
            relative={"value": rule["bound"] - 1.0},
            direction=tfma.MetricDirection.HIGHER_IS_BETTER))
    return tfma.MetricThreshold(change_threshold=tfma.GenericChangeThreshold(
        absolute={"value": -rule["bound"]}, direction=tfma.MetricDirection.HIGHER_IS_BETTER))


def _build_eval_config(tfma_names: Mapping[str, str], columns: Mapping[str, Mapping[str, str]],
                       baseline: Optional[str], candidate: Optional[str],
                       tfma_rules: Sequence[Mapping[str, Any]],
                       slice_columns: Sequence[str]) -> tfma.EvalConfig:
    model_specs, metrics_specs = [], []
    for model, tname in tfma_names.items():
        model_specs.append(tfma.ModelSpec(name=tname, model_type=MATERIALIZED,
                                          is_baseline=(model == baseline)))
        configs = []
        for metric, column in columns[model].items():
            cfg = tfma.MetricConfig(
                class_name="ColumnMean", module=__name__,
                config=json.dumps({"name": metric, "columns": {tname: column}}))
            if model == candidate:
                for rule in tfma_rules:
                    if rule["metric"] == metric:
                        cfg.per_slice_thresholds.append(tfma.PerSliceMetricThreshold(
                            slicing_specs=[tfma.SlicingSpec()], threshold=_tfma_threshold(rule)))
            configs.append(cfg)
        configs.append(tfma.MetricConfig(class_name="ExampleCount"))
        metrics_specs.append(tfma.MetricsSpec(metrics=configs,
                                              model_names=[tname] if tname else []))
    slicing_specs = [tfma.SlicingSpec()] + [tfma.SlicingSpec(feature_keys=[c])
                                            for c in slice_columns]
    return tfma.EvalConfig(model_specs=model_specs, metrics_specs=metrics_specs,
                           slicing_specs=slicing_specs)


# --------------------------------------------------------------------------
# reading TFMA's output back
# --------------------------------------------------------------------------

def _read_metrics(output_path: str,
                  model_of: Mapping[str, str]) -> Dict[str, Dict[str, Dict[str, float]]]:
    result: Dict[str, Dict[str, Dict[str, float]]] = {m: {} for m in model_of.values()}
    for proto in tfma.load_metrics(output_path):
        slice_name = tfma.slicer.stringify_slice_key(
            tfma.slicer.deserialize_slice_key(proto.slice_key))
        for kv in proto.metric_keys_and_values:
            if kv.key.is_diff or kv.key.name.startswith("_"):
                continue
            value = float(kv.value.double_value.value)
            targets = ([model_of[kv.key.model_name]] if kv.key.model_name in model_of
                       else list(result))
            for model in targets:  # model-independent keys go to every model
                result[model].setdefault(slice_name, {})[kv.key.name] = value
    return result


def _tfma_failures(validation) -> List[Dict[str, Any]]:
    """(metric, model, rule kind, value, message) of each failure on the overall slice."""
    out = []
    for per_slice in validation.metric_validations_per_slice:
        if per_slice.slice_key.single_slice_keys:  # rules are only set on the overall slice
            continue
        for failure in per_slice.failures:
            thr = failure.metric_threshold
            if thr.HasField("value_threshold"):
                kind = "min" if thr.value_threshold.HasField("lower_bound") else "max"
            else:
                kind = "min_ratio" if thr.change_threshold.HasField("relative") else "max_drop"
            out.append(dict(metric=failure.metric_key.name, model=failure.metric_key.model_name,
                            rule=kind, message=failure.message,
                            value=failure.metric_value.double_value.value))
    return out


# --------------------------------------------------------------------------
# rule arithmetic (stars-side, same semantics as TFMA)
# --------------------------------------------------------------------------

def _check_rule(rule: Dict[str, Any], cand: Optional[float],
                ref: Optional[float]) -> Dict[str, Any]:
    rec = dict(rule, candidate_value=cand, reference_value=ref, required=None, message="")
    kind, bound = rule["rule"], rule["bound"]
    if cand is None or (isinstance(cand, float) and math.isnan(cand)):
        rec.update(status="failed", message="metric not found")
        return rec
    if kind in ("min_ratio", "max_drop") and ref is None:
        rec.update(status="failed", message="reference metric not found")
        return rec
    ref = 0.0 if ref is None else ref  # only the relative rules read it, checked above
    if kind == "min":
        rec["required"], ok = bound, cand >= bound
    elif kind == "max":
        rec["required"], ok = bound, cand <= bound
    elif kind == "min_ratio":
        rec["required"] = bound * ref
        if math.isclose(ref, 0.0):
            ok = False
            rec["message"] = "reference value is 0: relative change undefined"
        else:
            ok = (cand - ref) / ref >= bound - 1.0  # TFMA's relative change test
    else:  # max_drop
        rec["required"], ok = ref - bound, cand - ref >= -bound
    rec["status"] = "passed" if ok else "failed"
    return rec


def _describe(rec: Mapping[str, Any], candidate: str) -> str:
    what = {"min": "min {bound:g}", "max": "max {bound:g}",
            "min_ratio": ">= {bound:g} x {reference}", "max_drop": ">= {reference} - {bound:g}"}
    rule = what[rec["rule"]].format(**rec)
    text = f"{candidate} {rec['metric']} = {rec['candidate_value']} fails {rule}"
    if rec.get("reference_value") is not None:
        text += f" ({rec['reference']} = {rec['reference_value']})"
    if rec.get("message"):
        text += f": {rec['message']}"
    return text


# --------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------

def evaluate(frame: pd.DataFrame, models: Mapping[str, str], baseline: Optional[str],
             slice_columns: Sequence[str], output_path: str,
             thresholds: Optional[Mapping[str, Any]] = None, *,
             corpus_metrics: Optional[Mapping[str, Mapping[str, float]]] = None,
             metric_names: Optional[Sequence[str]] = None,
             beam_pipeline_args: Optional[Sequence[str]] = None,
             overwrite: bool = False) -> EvalSummary:
    """Runs TFMA over per-example retrieval metrics and validates thresholds.

    Args:
      frame: one row per eval example *with* a target; columns
        ``<prefix><metric>`` (numeric, e.g. ``stars_rr_recall@10``) per model
        and the slice columns.
      models: model name -> column prefix, e.g. ``{"stars_rr": "stars_rr_",
        "popularity": "popularity_"}``.
      baseline: the model TFMA compares the others against (diff metrics and
        change thresholds), or None.
      slice_columns: columns sliced one at a time (overall is always computed).
      output_path: TFMA output directory (must be empty/absent unless
        ``overwrite``).
      thresholds: see module doc; None/{} blesses unconditionally.
      corpus_metrics: model -> {name: value} corpus-level metrics
        (e.g. coverage@10) added to the overall slice and the sidecar.
      metric_names: metrics to evaluate (default: every ``<prefix><name>``
        column whose name looks like ``word`` or ``word@k``).
      beam_pipeline_args: Beam options (default: DirectRunner in process).
      overwrite: remove an existing ``output_path`` first.

    Returns:
      EvalSummary; the same content is in ``<output_path>/stars_evaluation.json``.
    """
    if not models:
        raise ValueError("no models to evaluate")
    if len(frame) == 0:
        raise ValueError("empty evaluation frame")
    if baseline is not None and baseline not in models:
        raise ValueError(f"baseline {baseline!r} is not one of the models {list(models)}")
    missing = [c for c in slice_columns if c not in frame.columns]
    if missing:
        raise ValueError(f"slice columns not in the frame: {missing}")
    corpus_metrics = {m: dict(v) for m, v in (corpus_metrics or {}).items()}
    unknown_models = set(corpus_metrics) - set(models)
    if unknown_models:
        raise ValueError(f"corpus_metrics for unknown models {sorted(unknown_models)}")
    columns = {m: _metric_columns(frame, prefix, metric_names) for m, prefix in models.items()}
    for m, cols in columns.items():
        if not cols:
            raise ValueError(f"no metric columns with prefix {models[m]!r} for model {m!r}")
    candidate, rules = _parse_thresholds(thresholds, models)
    # TFMA normalises a lone model's name to "" (single-model evaluation).
    tfma_names = {m: (m if len(models) > 1 else "") for m in models}
    model_of = {t: m for m, t in tfma_names.items()}
    tfma_baseline = baseline if baseline is not None and len(models) > 1 else None

    def tfma_can_check(rule) -> bool:
        if candidate == tfma_baseline or rule["metric"] not in columns[candidate]:
            return False  # corpus metric or unknown: checked here
        if rule["rule"] in ("min", "max"):
            return True
        return rule["reference"] == tfma_baseline and candidate != tfma_baseline

    for rule in rules:
        rule["checked_by"] = "tfma" if tfma_can_check(rule) else "stars"
        for model in (candidate, rule["reference"]):
            if model in models and not (rule["metric"] in columns[model]
                                        or rule["metric"] in corpus_metrics.get(model, {})):
                raise ValueError(f"threshold on {rule['metric']!r}: not a metric of {model!r}")

    if storage.isdir(output_path) and storage.listdir(output_path):
        if not overwrite:
            raise FileExistsError(f"{output_path} is not empty (pass overwrite=True)")
        storage.rmtree(output_path)
    storage.makedirs(output_path)

    eval_config = _build_eval_config(tfma_names, columns, tfma_baseline, candidate,
                                     [r for r in rules if r["checked_by"] == "tfma"], slice_columns)

    # Only the columns TFMA needs: metric columns and slice columns (as strings).
    data = pd.DataFrame({c: frame[c].astype(str) for c in slice_columns})
    for cols in columns.values():
        for col in cols.values():
            data[col] = frame[col].astype(np.float64).to_numpy()
    table = pa.Table.from_pandas(data, preserve_index=False)
    # TFMA expects list-typed Arrow columns (one list per example), as
    # tfma.analyze_raw_data makes them.
    batches = [table_util.CanonicalizeRecordBatch(b)
               for b in table.to_batches(max_chunksize=_BATCH_ROWS)]
    shared_models = [tfma.default_eval_shared_model(eval_saved_model_path="", model_name=t,
                                                    eval_config=eval_config)
                     for t in tfma_names.values()]
    options = beam.options.pipeline_options.PipelineOptions(list(beam_pipeline_args or []))
    with beam.Pipeline(options=options) as pipeline:
        _ = (pipeline
             | "Examples" >> beam.Create(batches, reshuffle=False)
             | "ExtractEvaluateAndWriteResults" >> tfma.ExtractEvaluateAndWriteResults(
                 eval_shared_model=shared_models if len(shared_models) > 1 else shared_models[0],
                 eval_config=eval_config, output_path=output_path))

    metrics = _read_metrics(output_path, model_of)
    empty = [m for m, by_slice in metrics.items() if OVERALL not in by_slice]
    if empty:
        raise RuntimeError(f"TFMA wrote no metrics for {empty} in {output_path}")
    for m, values in corpus_metrics.items():
        metrics[m].setdefault(OVERALL, {}).update({k: float(v) for k, v in values.items()})

    validation = tfma.load_validation_result(output_path)
    tfma_fail = _tfma_failures(validation)
    records, failures = [], []
    for rule in rules:
        cand = metrics[candidate].get(OVERALL, {}).get(rule["metric"])
        ref_model = rule["reference"]
        if ref_model is not None and ref_model not in models:
            rec = dict(rule, candidate_value=cand, reference_value=None, required=None,
                       status="skipped", message=f"reference model {ref_model!r} not evaluated")
        else:
            ref = metrics[ref_model].get(OVERALL, {}).get(rule["metric"]) if ref_model else None
            rec = _check_rule(rule, cand, ref)
            if rule["checked_by"] == "tfma":  # TFMA's verdict is the one that counts
                hit = [f for f in tfma_fail if f["metric"] == rule["metric"]
                       and f["rule"] == rule["rule"] and model_of.get(f["model"]) == candidate]
                rec["status"] = "failed" if hit or (cand is None) else "passed"
                if hit and hit[0]["message"].strip():
                    rec["message"] = hit[0]["message"].strip()
        records.append(rec)
        if rec["status"] == "failed":
            failures.append(_describe(rec, candidate))
    # Anything TFMA rejected that no rule explains (should not happen) still fails.
    for f in tfma_fail:
        if not any(r["checked_by"] == "tfma" and r["metric"] == f["metric"]
                   and r["rule"] == f["rule"] for r in rules):
            failures.append(f"TFMA validation failure on {f['model']} {f['metric']} ({f['rule']}): "
                            f"{f['message'].strip()}")
    # Without thresholds TFMA reports validation_ok=False, missing_thresholds=True:
    # "nothing validated", not a failure.
    tfma_ok: Optional[bool] = bool(validation.validation_ok)
    if not any(r["checked_by"] == "tfma" for r in rules):
        tfma_ok = None if validation.missing_thresholds or validation.validation_ok else False
    if tfma_ok is False and not tfma_fail:
        failures.append("TFMA validation not ok: " + text_format.MessageToString(
            validation, as_one_line=True))
    summary = EvalSummary(metrics=metrics, blessed=not failures, failures=failures,
                          validations=records, output_path=output_path,
                          tfma_validation_ok=tfma_ok)
    sidecar = dict(models=dict(models), baseline=baseline, candidate=candidate,
                   slice_columns=list(slice_columns), metrics=metrics,
                   corpus_metrics=corpus_metrics,
                   thresholds=dict(thresholds or {}), validations=records,
                   tfma_validation_ok=summary.tfma_validation_ok, blessed=summary.blessed,
                   failures=failures)
    storage.write_text(storage.join(output_path, SIDECAR_FILE),
                       json.dumps(sidecar, indent=2, sort_keys=True, default=_json_default))
    return summary


def load_summary(output_path: str) -> Dict[str, Any]:
    """The sidecar record written by `evaluate` (see module doc)."""
    return storage.read_json(storage.join(output_path, SIDECAR_FILE))


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value)}")
