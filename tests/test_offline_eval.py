"""The offline evaluation (``stars eval``, ``evaluation``): the ranking helpers, the
results file, the report, and the whole quick run on tiny synthetic data (e2e)."""
import json
import math

import numpy as np
import pandas as pd
import pytest

from evaluation import offline, ranking, report, training
from evaluation.protocol import K_MAX, QUICK, SECOND_SOURCE_MODEL
from evaluation.report import write_report
from evaluation.results import merge_results
from evaluation.splits import EvalContext, SplitData, pipeline_root
from models import cold_items, semantic_match, successor_source
from models import validation_ranking as VR

METRIC_KEYS = [f"{m}@{k}" for k in (5, 10, 20) for m in ("hr", "ndcg", "recall")]


# ---------------------------------------------------------------------------------------
# unit tests (fast)
# ---------------------------------------------------------------------------------------

def test_rank_full_catalogue_masks_history_and_matches_argsort():
    rng = np.random.default_rng(0)
    queries, items = rng.normal(size=(37, 8)), rng.normal(size=(50, 8))
    history = [rng.choice(50, size=rng.integers(0, 30), replace=False) for _ in range(37)]
    history[3] = np.arange(45)  # only 5 items left: the rest of the row is padding
    masked, unmasked = ranking.rank_full_catalogue(queries, items, 20, history, chunk_rows=5)
    scores = queries.astype(np.float32) @ items.astype(np.float32).T
    for row in range(37):
        assert not set(masked[row].tolist()) & set(history[row].tolist())
        order = np.argsort(-scores[row], kind="stable")
        assert unmasked[row].tolist() == order[:20].tolist()
        allowed = [i for i in order if i not in set(history[row].tolist())]
        expected = (allowed + [-1] * 20)[:20]
        assert masked[row].tolist() == expected
    assert (masked[3, 5:] == -1).all() and sorted(masked[3, :5]) == list(range(45, 50))


def test_rank_by_item_scores_is_popularity_with_masking():
    counts = np.array([5, 9, 9, 1, 0, 7], float)
    masked, unmasked = ranking.rank_by_item_scores(counts, 3, 4, [[1], [], [2, 5, 0]])
    assert unmasked.tolist() == [[1, 2, 5, 0]] * 3  # ties -> lower index first
    assert masked.tolist() == [[2, 5, 0, 3], [1, 2, 5, 0], [1, 3, 4, -1]]


def test_metric_block_values_and_cold_start():
    top = np.array([[3, 1, 2, 0, 4] + [-1] * 15, [0, 1, 2, 3, 4] + [-1] * 15])
    block = ranking.metric_block(top, [np.array([1]), np.array([7])], num_items=10,
                                 cold=np.array([True, False]))
    assert block["hr@5"] == 0.5 and block["recall@5"] == 0.5
    assert block["ndcg@5"] == pytest.approx(0.5 / math.log2(3), abs=1e-6)
    assert block["coverage@10"] == 0.5
    assert block["cold_start_recall@10"] == 1.0 and block["cold_start_examples"] == 1
    none_cold = ranking.metric_block(top, [np.array([1]), np.array([7])], 10,
                                     cold=np.array([False, False]))
    assert none_cold["cold_start_recall@10"] is None  # NaN never reaches the JSON


def test_slice_metrics_category_and_candidate_sets():
    class Catalog:
        category = np.array([0, 0, 1, 1, 1, 1, 1, 1])
        category_names = ("a", "b")
    split = SplitData(["u1", "u2", "u3"], [np.array([0])] * 3, [np.array([1])] * 3,
                              [np.array([1]), np.array([2]), np.array([7])],
                              np.array([5, 5, 5]),
                              [np.array([1, 2, 3]), np.arange(8), np.array([], np.int64)])
    top = np.array([[1, 2, 3, 4, 5], [3, 4, 5, 6, 7], [7, 6, 5, 4, 3]])
    scores = [np.array([0.1, 0.5, 0.3]), np.arange(8, dtype=float)[::-1], np.zeros(0)]
    out = ranking.slice_metrics(split, top, Catalog, scores)
    assert out["category"] == {"a": {"hit@5": 1.0, "n": 1}, "b": {"hit@5": 0.5, "n": 2}}
    # u1: 3 candidates (always a hit); u2: 8 candidates, target 2 scored third -> hit.
    assert out["candidate_set_size"] == {"1-5": {"hit@5": 1.0, "n": 1},
                                         "6-10": {"hit@5": 1.0, "n": 1}}


def test_merge_results_replaces_only_the_models_run(tmp_path):
    path = tmp_path / "q.json"
    protocol = {"num_items": 10, "test_examples": 3, "quick": True, "ks": [5, 10, 20]}

    def entry(model, variant, hr):
        return {"model": model, "variant": variant, "masked": {"hr@10": hr},
                "unmasked": {"hr@10": hr}, "seed": 0, "config": {}, "wall_s": 1.0}
    merge_results(path, "d", protocol, [entry("popularity", None, 0.1),
                                                entry("stars", "gi", 0.2)])
    doc = merge_results(path, "d", protocol, [entry("stars", "ni", 0.3)])
    assert [(e["model"], e["variant"]) for e in doc["results"]] == [("popularity", None),
                                                                     ("stars", "ni")]
    other = merge_results(path, "d", {**protocol, "quick": False},
                                  [entry("sasrec_id", "ni", 0.4)])
    assert [e["model"] for e in other["results"]] == ["sasrec_id"]
    assert json.loads(path.read_text()) == other


def test_dropped_models_lose_their_earlier_entries(tmp_path):
    path = tmp_path / "q.json"
    protocol = {"num_items": 10, "test_examples": 3, "quick": True, "ks": [5, 10, 20]}
    old = [{"model": m, "variant": "ni", "masked": {}, "unmasked": {}, "seed": 0}
           for m in ("stars", "stars_no_context", "stars_no_tags")]
    merge_results(path, "d", protocol, old)
    doc = merge_results(path, "d", protocol, old[:1], dropped={"stars_no_context": "x"})
    assert [e["model"] for e in doc["results"]] == ["stars", "stars_no_tags"]
    # A run where every model was skipped scored nothing: it keeps the others, not wipes them.
    doc = merge_results(path, "d", {**protocol, "test_examples": None}, [],
                                dropped={"stars_no_tags": "x"})
    assert [e["model"] for e in doc["results"]] == ["stars"]
    assert doc["protocol"]["test_examples"] == 3


def test_model_config_overrides_and_quick_cap():
    config = training.model_config("sasrec_id", "tiny", 3, quick=True,
                                  overrides={"epochs": 9, "dropout": 0.3,
                                             "sasrec_id": {"dropout": 0.5},
                                             "stars": {"dropout": 0.0}})
    assert config.epochs == QUICK.epochs and config.dropout == 0.5
    assert config.seed == 3 and config.full_softmax and not config.use_text


# ---------------------------------------------------------------------------------------
# e2e: the quick run on tiny synthetic data
# ---------------------------------------------------------------------------------------

def _direct_leave_one_out(data_dir):
    """Training counts and test (history, target) per user straight from the CSV.

    Leave-one-out: a user's last event is the test target, the one before it the
    validation target, the rest trains; a training part of ONE event forms no training
    example (nothing to predict), so it is not a training interaction.  (No tiny user
    is long enough for overlapping training windows.)"""
    events = pd.read_csv(data_dir / "interactions.csv", dtype=str)
    events["order"] = np.arange(len(events))
    events["timestamp"] = events["timestamp"].astype(int)
    counts, tests = {}, {}
    for user, frame in events.groupby("user_id", sort=False):
        items = frame.sort_values(["timestamp", "order"])["item_id"].tolist()
        train = items[:-2] if len(items) >= 4 else (items if len(items) == 2 else [])
        for item in train:
            counts[item] = counts.get(item, 0) + 1
        if len(items) >= 3:
            tests[user] = (items[:-1], items[-1])
    return counts, tests


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    from evaluation import lambdamart
    from models import trainer as T
    from stars.data import synth
    base = tmp_path_factory.mktemp("offline_eval")
    synth.generate(base / "data", "tiny", seed=4)
    events, leaks = [], []
    original_dataset, original_train = EvalContext.dataset, T.train
    original_rank = training.rank_full_catalogue

    def dataset(self, split, model, adapter=None, batch_size=256):
        events.append(("open", model, split))
        return original_dataset(self, split, model, adapter, batch_size)

    def train(model, config, train_data, eval_data, total_steps, **kwargs):
        callbacks = kwargs.get("validation_callbacks", ())
        events.append(("fit", config.full_softmax, eval_data is None and any(
            isinstance(c, VR.ValidationRanking) for c in callbacks)
            and kwargs.get("monitor") == VR.MONITOR))
        return original_train(model, config, train_data, eval_data, total_steps, **kwargs)

    def rank(queries, items, k=K_MAX, history=None, chunk_rows=256, item_prior=None):
        events.append(("rank", item_prior is not None))
        masked, unmasked = original_rank(queries, items, k, history, chunk_rows, item_prior)
        leaks.extend(bool(set(m.tolist()) & set(np.asarray(h).tolist()))
                     for m, h in zip(masked, history))
        return masked, unmasked

    models = ["popularity", "cooccurrence", "stars", "sasrec_id", "sasrec_plain"] + (
        ["lambdamart"] if lambdamart.available() else [])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(EvalContext, "dataset", dataset)
        mp.setattr(T, "train", train)
        mp.setattr(training, "rank_full_catalogue", rank)
        document = offline.run_offline_eval(
            base / "data", base / "out", models=models, quick=True, encoder="hashing:64",
            seed=0, results_path=base / "results" / "quality_tiny.json", dataset="synth-tiny",
            # as the benchmark preset has them (sasrec_id: STARS' parts but the semantic ones)
            overrides={"stars": {"item_trend": True, "semantic_match": True},
                       "sasrec_id": {"item_trend": True}})
    return base, document, events, leaks, models



@pytest.mark.e2e
def test_results_json_shape(quick_run):
    base, document, _, _, models = quick_run
    on_disk = json.loads((base / "results" / "quality_tiny.json").read_text())
    assert on_disk["dataset"] == "synth-tiny" and on_disk["protocol"]["quick"] is True
    assert on_disk["protocol"]["ks"] == [5, 10, 20]
    variants = {(e["model"], e["variant"]) for e in on_disk["results"]}
    expected = {("popularity", None), ("cooccurrence", None), ("stars", "gi"), ("stars", "ni"),
                ("stars", "rr"), ("stars_cooc", "ni"), ("sasrec_id", "gi"), ("sasrec_id", "ni"),
                ("sasrec_id", "rr"), ("sasrec_plain", "ni")} | (
        {("lambdamart", None)} if "lambdamart" in models else set())
    assert variants == expected
    for e in on_disk["results"]:
        assert {"model", "variant", "masked", "unmasked", "seed", "config", "wall_s"} <= set(e)
        for block in (e["masked"], e["unmasked"]):
            for key in METRIC_KEYS + ["coverage@10"]:
                assert 0.0 <= block[key] <= 1.0, (e["model"], key, block[key])
            assert block["hr@5"] <= block["hr@10"] <= block["hr@20"]
            assert block["hr@10"] == block["recall@10"]  # one target per user
            assert "cold_start_recall@10" in block and block["num_examples"] > 0
    report = base / "results" / "quality_tiny.md"
    assert report.is_file() and "| stars GI |" in report.read_text()
    # The synthetic data launches items late: STARS picks their serving norm on validation.
    cold = {e["model"]: e["config"]["training"]["cold_item_norm"] for e in on_disk["results"]
            if "training" in e.get("config", {})}
    assert cold["sasrec_id"] is None is cold["sasrec_plain"] and cold["stars"]["cold_items"] > 0
    assert [t["quantile"] for t in cold["stars"]["tried"]] == list(cold_items.QUANTILES)
    # The semantic match's weight, chosen on the same validation ranking (stars only).
    match = {e["model"]: e["config"]["training"]["semantic_match"] for e in on_disk["results"]
             if "training" in e.get("config", {})}
    assert match["sasrec_id"] is None is match["sasrec_plain"]
    assert match["stars"]["chosen"] in semantic_match.WEIGHTS
    assert [t["weight"] for t in match["stars"]["tried"]] == list(semantic_match.WEIGHTS)
    assert "| semantic match η (validation) |" in report.read_text()
    # The item trend: on where STARS' parts are (its term added to the test ranking), off
    # for the published SASRec.
    trend = {e["model"]: e["config"]["item_trend"] for e in on_disk["results"]
             if "training" in e.get("config", {})}
    assert trend == {"stars": True, "stars_cooc": True, "sasrec_id": True,
                     "sasrec_plain": False}
    ranks = [with_prior for kind, *with_prior in quick_run[2] if kind == "rank"]
    assert [True] in ranks and [False] in ranks


@pytest.mark.e2e
def test_the_second_source_is_chosen_on_validation_and_starts_from_stars(quick_run):
    """stars_cooc ranks with STARS' own trained model: at weight 0 its validation figures
    are STARS NI's, and the weight it keeps is the grid's best on the validation target."""
    base, document, events, _, _ = quick_run
    entries = {(e["model"], e["variant"]): e for e in document["results"]}
    hybrid, stars_ni = entries["stars_cooc", "ni"], entries["stars", "ni"]
    source = hybrid["config"]["training"]["second_source"]
    tried = {float(w): v for w, v in source["val_ndcg@10"].items()}
    assert sorted(tried) == list(successor_source.WEIGHTS)
    assert tried[0.0] == pytest.approx(stars_ni["validation"]["masked"]["ndcg@10"], abs=1e-5)
    assert source["weight"] in tried and tried[source["weight"]] == max(tried.values())
    assert hybrid["validation"]["masked"]["ndcg@10"] == pytest.approx(max(tried.values()),
                                                                      abs=1e-5)
    assert hybrid["split_reads"]["test"] == 1 and hybrid["seed"] == stars_ni["seed"]
    assert hybrid["wall_s"] >= stars_ni["wall_s"]
    report = (base / "results" / "quality_tiny.md").read_text()
    assert "## Second source (stars_cooc" in report
    assert f"| {hybrid['seed']} | {source['weight']} | 0.0: " in report
    # No second training run: the same fitted model (fits: stars and the two baselines).
    assert sum(e[0] == "fit" for e in events) == 3


@pytest.mark.e2e
def test_masked_lists_never_contain_history(quick_run):
    _, _, _, leaks, _ = quick_run
    assert leaks and not any(leaks)


@pytest.mark.e2e
def test_popularity_equals_direct_numpy(quick_run):
    base, document, _, _, _ = quick_run
    ctx = EvalContext(str(pipeline_root(base / "out", quick=True)))
    item_ids = [str(i) for i in ctx.catalog.item_ids]
    index = {item: i for i, item in enumerate(item_ids)}
    counts, tests = _direct_leave_one_out(base / "data")
    direct = np.array([counts.get(item, 0) for item in item_ids], float)
    np.testing.assert_array_equal(ctx.counts, direct)
    order = np.lexsort((np.arange(len(item_ids)), -direct))  # count desc, index asc
    hits = {"masked": {k: [] for k in (5, 10, 20)}, "unmasked": {k: [] for k in (5, 10, 20)}}
    gains = {"masked": {k: [] for k in (5, 10, 20)}, "unmasked": {k: [] for k in (5, 10, 20)}}
    for history, target in tests.values():
        seen = {index[i] for i in history}
        for mode, ranked in (("unmasked", order), ("masked", [i for i in order if i not in seen])):
            rank = list(ranked).index(index[target]) + 1 if index[target] in ranked else 10**9
            for k in (5, 10, 20):
                hits[mode][k].append(rank <= k)
                gains[mode][k].append(1 / math.log2(rank + 1) if rank <= k else 0.0)
    entry = next(e for e in document["results"] if e["model"] == "popularity")
    for mode in ("masked", "unmasked"):
        assert entry[mode]["num_examples"] == len(tests)
        for k in (5, 10, 20):
            assert entry[mode][f"hr@{k}"] == pytest.approx(np.mean(hits[mode][k]), abs=1e-5)
            assert entry[mode][f"ndcg@{k}"] == pytest.approx(np.mean(gains[mode][k]), abs=1e-5)


@pytest.mark.e2e
def test_test_split_is_touched_once_and_validation_drives_early_stopping(quick_run):
    _, document, events, _, models = quick_run
    for model in models + [SECOND_SOURCE_MODEL]:  # stars_cooc: with every stars run
        mine = [e for e in events if e[0] == "open" and e[1] == model]
        assert [e[2] for e in mine].count("test") == 1, (model, mine)
        assert mine[-1][2] == "test"  # the last thing read, after training and validation
    fits = [i for i, e in enumerate(events) if e[0] == "fit"]
    # fit stops on the validation ranking callback (not on a validation loss)
    assert len(fits) == 3 and all(events[i][2] for i in fits)
    for i in fits:
        # The callback's validation data was opened from the eval split, right before.
        assert events[i - 1][0] == "open" and events[i - 1][2] == "eval"
        assert all(e[2] != "test" for e in events[:i] if e[0] == "open"
                   and e[1] == events[i - 1][1])
    for e in document["results"]:
        if e["model"] in ("stars", "sasrec_id", "sasrec_plain"):
            training = e["config"]["training"]
            assert len(training["val_ndcg@10"]) == training["epochs_run"] >= 1
            assert training["best_epoch"] == int(np.argmax(training["val_ndcg@10"])) + 1
            assert e["split_reads"]["test"] == 1 and e["split_reads"]["eval"] == 2
            assert 0.0 <= e["validation"]["masked"]["hr@10"] <= 1.0


def _seeded(model, seed, ndcg10, hr5=0.05, **config):
    return {"model": model, "variant": "ni", "seed": seed,
            "masked": {"hr@5": hr5, "hr@10": 0.1, "ndcg@10": ndcg10, "hr@20": 0.2,
                       "ndcg@5": 0.03, "ndcg@20": 0.05, "num_examples": 10},
            "unmasked": {"hr@10": 0.1, "ndcg@10": ndcg10},
            "config": {"epochs": 20, "seed": seed, **config, "training": {}}, "wall_s": 1.0}


def test_merge_keeps_a_models_other_seeds_only_when_trained_the_same_way(tmp_path):
    path = tmp_path / "q.json"
    protocol = {"num_items": 10, "test_examples": 3, "quick": False, "ks": [5, 10, 20]}
    merge_results(path, "d", protocol, [_seeded("stars", 0, 0.05),
                                                _seeded("sasrec_id", 0, 0.04)])
    doc = merge_results(path, "d", protocol, [_seeded("stars", 1, 0.06)])
    assert [(e["model"], e["seed"]) for e in doc["results"]] == [
        ("stars", 0), ("stars", 1), ("sasrec_id", 0)]
    # A run recorded before a ModelConfig field existed ran with its default: same settings.
    doc = merge_results(path, "d", protocol,
                                [_seeded("sasrec_id", 1, 0.05, mask_history=False)])
    assert ("sasrec_id", 0) in [(e["model"], e["seed"]) for e in doc["results"]]
    # Seed 2 trained with another preset: the seeds of the old settings go.
    doc = merge_results(path, "d", protocol, [_seeded("stars", 2, 0.07, epochs=40)])
    assert [(e["model"], e["seed"]) for e in doc["results"]] == [
        ("stars", 2), ("sasrec_id", 0), ("sasrec_id", 1)]


def test_report_has_a_mean_table_when_a_model_ran_with_several_seeds(tmp_path):
    protocol = {"split": "loo", "ranking": "full", "masked": True, "num_items": 10,
                "test_examples": 10, "quick": False, "cold_start": "-", "rr": "-"}
    document = {"dataset": "synth", "protocol": protocol,
                "results": [_seeded("stars", 0, 0.04), _seeded("stars", 1, 0.06)]}
    text = (tmp_path / "r.md").read_text() if write_report(
        document, tmp_path / "r.md") else ""
    assert "## Mean over seeds" in text
    assert "| stars NI | 0, 1 | 0.0500 | 0.1000 | 0.0500 | 0.0400–0.0600 | – |" in text
    single = {**document, "results": document["results"][:1]}
    write_report(single, tmp_path / "s.md")
    assert "Mean over seeds" not in (tmp_path / "s.md").read_text()


def test_parse_seeds():
    assert offline.parse_seeds("0, 1,2") == [0, 1, 2]
    assert offline.parse_seeds("") is None
    with pytest.raises(ValueError, match="comma-separated integers"):
        offline.parse_seeds("0,one")


@pytest.mark.e2e
def test_several_seeds_score_every_model_once_per_seed(quick_run):
    base = quick_run[0]
    document = offline.run_offline_eval(
        base / "data", base / "out", models=["popularity", "cooccurrence"], quick=True,
        encoder="hashing:64", seeds=[0, 3], results_path=base / "results" / "seeds.json",
        dataset="synth-tiny")
    assert sorted((e["model"], e["seed"]) for e in document["results"]) == [
        ("cooccurrence", 0), ("cooccurrence", 3), ("popularity", 0), ("popularity", 3)]
    assert "## Mean over seeds" in (base / "results" / "seeds.md").read_text()


@pytest.mark.e2e
def test_a_skipped_model_is_noted_once_whatever_the_number_of_seeds(quick_run, monkeypatch):
    from evaluation import lambdamart
    base = quick_run[0]
    monkeypatch.setattr(lambdamart, "available", lambda: False)
    # As on data without user features (the synthetic users have some).
    monkeypatch.setattr(offline, "_has_user_features", lambda ctx: False)
    document = offline.run_offline_eval(
        base / "data", base / "out",
        models=["popularity", "lambdamart", "stars_no_context", "stars_no_user"],
        quick=True, encoder="hashing:64", seeds=[0, 3], context="off",
        results_path=base / "results" / "skips.json", dataset="synth-tiny")
    assert sorted(document["skipped"]) == ["lambdamart", "stars_no_context", "stars_no_user"]
    assert "lightgbm is not installed" in document["skipped"]["lambdamart"]
    assert "no user features" in document["skipped"]["stars_no_user"]
    report = (base / "results" / "skips.md").read_text()
    assert report.count("lambdamart skipped: lightgbm is not installed") == 1
    assert report.count("stars_no_context not run: the same model as stars here") == 1
    assert report.count("stars_no_user not run: the same model as stars here") == 1
    assert {e["model"] for e in document["results"]} == {"popularity"}


def test_plots_draw_one_bar_per_model_with_its_mean_over_seeds(tmp_path, monkeypatch):
    from evaluation import plots
    drawn = {}
    monkeypatch.setattr(plots, "grouped_bars",
                        lambda path, title, bars, series: drawn.setdefault(title, bars) or True)
    document = {"dataset": "synth", "results": [_seeded("stars", 0, 0.04),
                                                _seeded("stars", 1, 0.06)]}
    report._plots(document, tmp_path / "r")
    bars = drawn["NDCG@10 (full catalogue)"]
    assert [(label, round(masked, 4)) for label, masked, _ in bars] == [
        ("stars NI, 2 seeds", 0.05)]
