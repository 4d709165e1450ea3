"""TFMA over materialised retrieval metrics: output opens with TFMA's loaders,
values equal pandas means overall and per slice, and blessing follows thresholds."""
import json
import os

import numpy as np
import pandas as pd
import pytest
import tensorflow_model_analysis as tfma

from components import tfma_evaluation as te
from stars import retrieval_metrics as rm

MODELS = {"stars_rr": "stars_rr_", "stars_ni": "stars_ni_", "popularity": "popularity_",
          "last_blessed": "last_blessed_"}
SLICES = ["category", "cold_start_target"]
METRICS = ["hit@10", "recall@10", "ndcg@10"]


def synthetic_frame(n=200, num_items=60, seed=0):
    """Per-example metrics of four 'models' whose lists contain the targets with
    different probabilities, computed with `per_example_metrics`."""
    rng = np.random.default_rng(seed)
    targets = [rng.choice(num_items, size=rng.integers(1, 4), replace=False) for _ in range(n)]
    frame = pd.DataFrame({
        "category": rng.choice(["Books", "Grocery"], size=n),
        "cold_start_target": rng.choice(["true", "false"], size=n, p=[0.3, 0.7]),
    })
    quality = {"stars_rr": 0.7, "stars_ni": 0.6, "popularity": 0.25, "last_blessed": 0.65}
    for model, prefix in MODELS.items():
        top = np.full((n, 20), -1)
        for i in range(n):
            lst = [t for t in targets[i] if rng.random() < quality[model]]
            rest = [x for x in rng.permutation(num_items) if x not in lst]
            lst = (lst + rest)[:20]
            rng.shuffle(lst[: min(12, len(lst))])  # targets land at various ranks
            top[i] = lst
        per = rm.per_example_metrics(top, targets, ks=(10, 20))
        for m in METRICS + ["recall@20"]:
            frame[prefix + m] = per[m]
    return frame


@pytest.fixture(scope="module")
def frame():
    return synthetic_frame()


@pytest.fixture(scope="module")
def passing_run(frame, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("tfma_pass"))
    thresholds = {
        "candidate": "stars_rr",
        "metrics": {
            "recall@10": {"min": 0.05, "min_ratio": {"popularity": 1.2},
                          "max_drop": {"last_blessed": 0.2}},
            "ndcg@10": {"max_drop": {"last_blessed": 0.2}},
            "coverage@10": {"min": 0.1},
        },
    }
    summary = te.evaluate(frame, MODELS, baseline="last_blessed", slice_columns=SLICES,
                          output_path=out, thresholds=thresholds,
                          corpus_metrics={"stars_rr": {"coverage@10": 0.4},
                                          "popularity": {"coverage@10": 0.05}})
    return out, summary


def test_tfma_output_equals_pandas_means(frame, passing_run):
    out, summary = passing_run
    for model, prefix in MODELS.items():
        result = tfma.load_eval_result(out, model_name=model)
        by_slice = {tfma.slicer.stringify_slice_key(k): v[""][""]
                    for k, v in result.slicing_metrics}
        expected = {"Overall": frame}
        for col in SLICES:
            for value, group in frame.groupby(col):
                expected[f"{col}:{value}"] = group
        assert set(by_slice) == set(expected)
        for name, group in expected.items():
            for m in METRICS + ["recall@20"]:
                want = group[prefix + m].mean()
                assert by_slice[name][m]["doubleValue"] == pytest.approx(want, rel=1e-12, abs=1e-15)
                assert summary.metrics[model][name][m] == pytest.approx(want, rel=1e-12, abs=1e-15)
            assert by_slice[name]["example_count"]["doubleValue"] == len(group)
            if model != "last_blessed":  # TFMA's diff against the baseline model
                diff = group[prefix + "recall@10"].mean() - group["last_blessed_recall@10"].mean()
                assert by_slice[name]["recall@10_diff"]["doubleValue"] == pytest.approx(
                    diff, abs=1e-12)
    assert summary.overall("stars_rr")["coverage@10"] == 0.4


def test_passing_thresholds_bless_and_are_recorded(passing_run):
    out, summary = passing_run
    assert summary.blessed and summary.failures == []
    assert summary.tfma_validation_ok and tfma.load_validation_result(out).validation_ok
    by_rule = {(v["metric"], v["rule"], v["reference"]): v for v in summary.validations}
    # Rules against TFMA's baseline and value bounds are TFMA's; the rest are ours.
    assert by_rule[("recall@10", "max_drop", "last_blessed")]["checked_by"] == "tfma"
    assert by_rule[("recall@10", "min", None)]["checked_by"] == "tfma"
    assert by_rule[("recall@10", "min_ratio", "popularity")]["checked_by"] == "stars"
    assert by_rule[("coverage@10", "min", None)]["checked_by"] == "stars"
    assert all(v["status"] == "passed" for v in summary.validations)
    side = te.load_summary(out)
    assert side["blessed"] is True and len(side["validations"]) == 5
    assert side["metrics"]["stars_rr"]["Overall"]["recall@10"] == \
        summary.overall("stars_rr")["recall@10"]
    with open(os.path.join(out, "eval_config.json")) as f:  # TFMA's own files are there
        assert "ColumnMean" in f.read()


def test_failing_thresholds_refuse_blessing(frame, tmp_path):
    rr = frame["stars_rr_recall@10"].mean()
    pop = frame["popularity_recall@10"].mean()
    models = {k: v for k, v in MODELS.items() if k != "last_blessed"}  # first run: none blessed yet
    thresholds = {
        "candidate": "stars_rr",
        "metrics": {
            "recall@10": {"min": rr + 0.01,                         # TFMA value threshold: fails
                          "min_ratio": {"popularity": rr / pop * 1.01},  # TFMA relative: fails
                          "max_drop": {"last_blessed": 0.0}},         # reference absent: skipped
            "hit@10": {"min": 0.0, "max_drop": {"stars_ni": 0.5}},   # passes (ours vs stars_ni)
            "ndcg@10": {"min_ratio": {"stars_ni": 10.0}},            # ours: fails
        },
    }
    summary = te.evaluate(frame, models, baseline="popularity", slice_columns=["category"],
                          output_path=str(tmp_path / "eval"), thresholds=thresholds)
    assert not summary.blessed
    status = {(v["metric"], v["rule"], v["reference"]): (v["status"], v["checked_by"])
              for v in summary.validations}
    assert status == {
        ("recall@10", "min", None): ("failed", "tfma"),
        ("recall@10", "min_ratio", "popularity"): ("failed", "tfma"),
        ("recall@10", "max_drop", "last_blessed"): ("skipped", "stars"),
        ("hit@10", "min", None): ("passed", "tfma"),
        ("hit@10", "max_drop", "stars_ni"): ("passed", "stars"),
        ("ndcg@10", "min_ratio", "stars_ni"): ("failed", "stars"),
    }
    assert len(summary.failures) == 3
    assert any("recall@10" in f and "popularity" in f for f in summary.failures)
    validation = tfma.load_validation_result(str(tmp_path / "eval"))
    assert not validation.validation_ok and not summary.tfma_validation_ok
    failed = {(f.metric_key.name, f.metric_key.is_diff)
              for s in validation.metric_validations_per_slice for f in s.failures}
    assert failed == {("recall@10", False), ("recall@10", True)}
    # Slices are still written; a single slice column gives overall + 2 slices.
    assert set(summary.metrics["stars_rr"]) == {"Overall", "category:Books", "category:Grocery"}
    assert json.load(open(tmp_path / "eval" / te.SIDECAR_FILE))["blessed"] is False


def test_bad_inputs_fail_before_running_tfma(frame, tmp_path):
    with pytest.raises(ValueError, match="candidate"):
        te.evaluate(frame, MODELS, None, SLICES, str(tmp_path / "a"),
                    {"metrics": {"recall@10": {"min": 0.1}}})
    with pytest.raises(ValueError, match="not a metric"):
        te.evaluate(frame, MODELS, None, SLICES, str(tmp_path / "b"),
                    {"candidate": "stars_rr", "metrics": {"mrr": {"min": 0.1}}})
    bad = frame.copy()
    bad.loc[0, "stars_rr_hit@10"] = np.nan
    with pytest.raises(ValueError, match="has_target"):
        te.evaluate(bad, MODELS, None, SLICES, str(tmp_path / "c"), None)
    with pytest.raises(ValueError, match="baseline"):
        te.evaluate(frame, MODELS, "nope", SLICES, str(tmp_path / "d"), None)
    assert not any((tmp_path / d).exists() for d in "abcd")  # nothing written


def test_single_model_and_output_directory_rules(frame, tmp_path):
    out = str(tmp_path / "single")
    summary = te.evaluate(frame, {"popularity": "popularity_"}, None, ["category"], out,
                          {"candidate": "popularity",
                           "metrics": {"recall@10": {"min": 0.0}, "coverage@10": {"min": 0.5}}},
                          corpus_metrics={"popularity": {"coverage@10": 0.1}},
                          metric_names=["recall@10"])
    assert not summary.blessed and summary.tfma_validation_ok  # only the corpus rule fails
    assert summary.failures == ["popularity coverage@10 = 0.1 fails min 0.5"]
    result = tfma.load_eval_result(out)  # a lone model needs no model_name
    overall = dict(result.slicing_metrics)[()][""][""]
    assert overall["recall@10"]["doubleValue"] == pytest.approx(
        frame["popularity_recall@10"].mean())
    assert set(overall) == {"recall@10", "example_count"}  # metric_names restricts the columns
    with pytest.raises(FileExistsError):
        te.evaluate(frame, {"popularity": "popularity_"}, None, [], out, None)
    again = te.evaluate(frame, {"popularity": "popularity_"}, None, [], out, None, overwrite=True)
    assert again.blessed and again.failures == [] and again.tfma_validation_ok is None
    assert set(again.metrics["popularity"]) == {"Overall"}
