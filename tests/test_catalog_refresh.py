"""Catalogue refresh without retraining (models.catalog_refresh).

Unit tests of the remapping against numpy references, then (e2e) a refresh of the
session's tiny pipeline run (tests/conftest.py) over a changed catalogue: two items added
(one a copy of a trained item's content under a new id, one with an unknown subclass and
tag), one title changed, one item removed.
"""
import glob
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from models import catalog_refresh as CR
from models.popularity import popularity_log_prior
from models.semantic_match import semantic_keys
from models.successor_source import SuccessorTable, successor_matrix

# ---- remapping, against numpy references -------------------------------------------------
OLD_INDEX = np.array([2, -1, 0, 3, -1])   # new item -> trained item (-1 = new); 1 is removed


def test_remap_rows_and_columns():
    values = np.arange(12, dtype=np.float32).reshape(4, 3)
    rows = CR.remap_rows(values, OLD_INDEX)
    expected = np.stack([values[2], np.zeros(3), values[0], values[3], np.zeros(3)])
    np.testing.assert_array_equal(rows, expected)
    np.testing.assert_array_equal(CR.remap_rows(values.T, OLD_INDEX, axis=1), expected.T)
    prior = CR.remap_rows(np.array([-1.0, -2.0, -3.0, -4.0], np.float32), OLD_INDEX, -9.0)
    np.testing.assert_array_equal(prior, [-3.0, -9.0, -1.0, -4.0, -9.0])


def test_remap_successors_keeps_kept_pairs_only():
    sequences = [[0, 1, 2, 3], [3, 2, 1], [1, 0, 3, 0]]
    old = SuccessorTable.from_sequences(sequences, 4)
    new = CR.remap_successors(old.row_splits, old.successors, old.counts, OLD_INDEX)
    dense_old = successor_matrix(sequences, 4).toarray()
    expected = np.zeros((5, 5), np.float32)
    for a, oa in enumerate(OLD_INDEX):
        for b, ob in enumerate(OLD_INDEX):
            if oa >= 0 and ob >= 0:
                expected[a, b] = dense_old[oa, ob]
    dense_new = np.zeros((5, 5), np.float32)
    for a in range(5):
        span = slice(new.row_splits[a], new.row_splits[a + 1])
        dense_new[a, new.successors[span]] = new.counts[span]
        assert np.all(np.diff(new.successors[span]) > 0)  # sorted, no repeats
    np.testing.assert_allclose(dense_new, expected)
    assert new.num_items == 5 and dense_old[1].sum() > 0  # item 1's pairs were dropped


def test_cold_log_prior_is_a_count_zero_items_training_prior():
    counts = np.array([5.0, 0.0, 2.0, 9.0])
    trained = popularity_log_prior(counts, 1.0).numpy()
    assert CR.cold_log_prior(counts, 1.0) == pytest.approx(trained[1], abs=1e-6)
    assert CR.cold_log_prior(counts, 0.0) == float("-inf")


@pytest.mark.parametrize("dim", [0, 3])
def test_trained_frame_keys(dim):
    rng = np.random.default_rng(1)
    trained = rng.normal(size=(30, 6)).astype(np.float32)
    # The trained catalogue in its own frame: exactly semantic_keys.
    np.testing.assert_allclose(CR.trained_frame_keys(trained, trained, dim),
                               semantic_keys(trained, dim), atol=1e-6)
    # A new text is centred on the TRAINED mean, not its own catalogue's.
    new = np.concatenate([trained[:5], rng.normal(size=(2, 6)).astype(np.float32)])
    keys = CR.trained_frame_keys(new, trained, dim)
    np.testing.assert_allclose(keys[:5], semantic_keys(trained, dim)[:5], atol=1e-6)
    if dim == 0:
        centred = new[5:] - trained.astype(np.float64).mean(axis=0)
        np.testing.assert_allclose(
            keys[5:], centred / np.linalg.norm(centred, axis=1, keepdims=True), atol=1e-6)
    assert not np.allclose(keys[:5], semantic_keys(new, dim)[:5], atol=1e-3)


def test_check_restored_fails_on_missing_or_reshaped_variables():
    module = tf.Module()
    module.table = tf.Variable(np.ones((3, 2), np.float32))
    key = "model/table" + CR.VALUE
    CR.check_restored(module, {key: np.ones((3, 2), np.float32)})
    with pytest.raises(ValueError, match="shape|\\(3, 2\\)"):
        CR.check_restored(module, {key: np.ones((4, 2), np.float32)})
    with pytest.raises(ValueError, match="not restored"):
        CR.check_restored(module, {key: np.zeros((3, 2), np.float32)})
    with pytest.raises(ValueError, match="does not"):
        CR.check_restored(module, {})


# ---- the session's pipeline run, then a refresh ------------------------------------------
TOP_K = 20   # the refresh's own k


def _latest(root, component, output):
    uris = sorted(glob.glob(os.path.join(root, component, output, "*")), key=os.path.getmtime)
    assert uris, f"{component}.{output} missing"
    return uris[-1]


@pytest.fixture(scope="module")
def refreshed(pipeline_run, tmp_path_factory):
    from components.item_enricher import enrich_examples
    from stars.data import tf_example
    base = tmp_path_factory.mktemp("refresh")
    config = pipeline_run    # read only: the refresh writes under ``base``
    root = config.pipeline_root
    trainer = os.path.join(_latest(root, "StarsTrainer", "model"), "Format-Serving")
    raw = [tf_example.from_example(e) for e in
           tf_example.read_split(_latest(root, "CatalogExampleGen", "examples"), "catalog")]
    by_id = {f["item_id"][0].decode(): f for f in raw}
    ids = sorted(by_id)
    removed, changed, twin, donor = ids[3], ids[10], ids[20], ids[30]
    del by_id[removed]
    by_id[changed] = {**by_id[changed],
                      "title": [by_id[changed]["title"][0] + b" waterproof deluxe edition"]}
    by_id["pNEW-twin"] = {**by_id[twin], "item_id": [b"pNEW-twin"]}
    by_id["pNEW-odd"] = {**by_id[donor], "item_id": [b"pNEW-odd"],
                         "subclass": [b"a subclass never trained"],
                         "tags": [b"a-tag-never-trained"], "title": [b"unheard of gadget"]}
    items_uri, enriched_uri = str(base / "new_items"), str(base / "new_enriched")
    tf_example.write_split(items_uri, "catalog",
                           (tf_example.to_example(f) for f in by_id.values()))
    enrich_examples(items_uri, enriched_uri, ["catalog"], config.encoder, config.tagger, "",
                    str(base / "cache"))
    out = base / "refreshed"
    report = CR.refresh_serving_models(
        trainer, enriched_uri, _latest(root, "InteractionExampleGen", "examples"),
        str(out / "serving_model" / "Format-Serving"),
        str(out / "brute_force_model" / "Format-Serving"), top_k=TOP_K)
    return {"root": root, "trainer": trainer, "report": report, "out": out,
            "removed": removed, "changed": changed, "twin": twin, "enriched": enriched_uri,
            "old_brute_force": os.path.join(_latest(root, "IndexBuilder", "brute_force_model"),
                                            "Format-Serving")}


def _load(path):
    from stars.saved_model import load_serving_model
    return load_serving_model(path)


def _embed(model, ids):
    out = model.signatures["item_embeddings"](item_ids=tf.constant(ids))
    return out["embeddings"].numpy(), out["found"].numpy()


@pytest.mark.e2e
def test_report_says_what_changed(refreshed):
    report = refreshed["report"]
    assert report["items"] == 150 - 1 + 2
    assert (report["new_items"], report["removed_items"], report["kept_items"]) == (2, 1, 149)
    assert report["changes"]["new"] == ["pNEW-odd", "pNEW-twin"]
    assert report["changes"]["removed"] == [refreshed["removed"]]
    assert report["changes"]["changed"] == [refreshed["changed"]]  # the title, nothing else
    assert report["changed_items"] == 1
    assert report["query_source"] == "user_embeddings" and report["k"] == TOP_K
    assert report["queries"] > 0 and 0.0 <= report["scann_recall_at_k"] <= 1.0
    for kind in ("serving_model", "brute_force_model"):
        written = json.load(open(refreshed["out"] / kind / "index_report.json"))
        assert written == report


@pytest.mark.e2e
def test_removed_items_are_not_served(refreshed):
    new_ids = set(json.load(open(refreshed["out"] / "serving_model" / "index_report.json"))
                  ["changes"]["new"])
    for kind in ("serving_model", "brute_force_model"):
        model = _load(str(refreshed["out"] / kind / "Format-Serving"))
        _, found = _embed(model, [refreshed["removed"], "pNEW-twin", "pNEW-odd"])
        assert found.tolist() == [False, True, True]
        popular = model.signatures["popular_items"](limit=tf.constant([1000], tf.int64))
        served = {i.decode() for i in popular["ids"].numpy()[0]}
        assert len(served) == 151 and refreshed["removed"] not in served and new_ids <= served
        dim = model.signatures["search"].structured_input_signature[1]["query_embeddings"].shape[1]
        queries = tf.constant(np.random.default_rng(0).normal(size=(64, dim)), tf.float32)
        answered = {i.decode() for i in
                    model.signatures["search"](query_embeddings=queries)["ids"].numpy().ravel()}
        assert refreshed["removed"] not in answered


@pytest.mark.e2e
def test_kept_items_keep_their_embedding_and_prior(refreshed):
    old, new = _load(refreshed["old_brute_force"]), _load(
        str(refreshed["out"] / "brute_force_model" / "Format-Serving"))
    popular_old = old.signatures["popular_items"](limit=tf.constant([1000], tf.int64))
    prior_old = dict(zip((i.decode() for i in popular_old["ids"].numpy()[0]),
                         popular_old["prior"].numpy()[0]))
    kept = sorted(set(prior_old) - {refreshed["removed"], refreshed["changed"]})
    np.testing.assert_allclose(_embed(new, kept)[0], _embed(old, kept)[0], atol=1e-5)
    changed_new, changed_old = _embed(new, [refreshed["changed"]])[0], _embed(
        old, [refreshed["changed"]])[0]
    assert not np.allclose(changed_new, changed_old, atol=1e-3)  # its new title counts
    popular_new = new.signatures["popular_items"](limit=tf.constant([1000], tf.int64))
    prior_new = dict(zip((i.decode() for i in popular_new["ids"].numpy()[0]),
                         popular_new["prior"].numpy()[0]))
    np.testing.assert_allclose([prior_new[i] for i in kept], [prior_old[i] for i in kept],
                               rtol=1e-6)
    # A new item gets what a never-seen item got in training: (0 + β) / (Σc + β·I_trained).
    from models.trainer import ModelMeta, load_catalog
    trained = load_catalog(ModelMeta.load(os.path.join(refreshed["trainer"], "stars")))
    cold = 1.0 / (trained.counts.sum() + len(trained.counts))
    assert prior_new["pNEW-twin"] == pytest.approx(cold, rel=1e-5)


def _tower_reference(reader, text, tags):
    """The trained item tower in numpy with δ = 0: W [(e − c)·s ; g(t)] + b, then the
    item projection, then the cold items' norm (tiny preset: linear g, projections on)."""
    def get(name):
        return reader.get_tensor(f"model/{name}{CR.VALUE}")
    semantic = (text - get("items/text_center")) * get("items/text_scale")
    token = (np.concatenate([semantic, tags @ get("items/tag_projection/kernel")])
             @ get("items/token_projection/kernel") + get("items/token_projection/bias"))
    vector = token @ get("item_head/kernel") + get("item_head/bias")
    norm = float(get("cold_item_norm"))
    return vector * (norm / np.linalg.norm(vector)) if norm > 0 else vector


@pytest.mark.e2e
def test_new_item_is_embedded_from_its_text_and_tags_alone(refreshed):
    from stars.data import tf_example
    reader = tf.train.load_checkpoint(os.path.join(refreshed["trainer"], "stars", "weights"))
    model = _load(str(refreshed["out"] / "brute_force_model" / "Format-Serving"))
    enriched = {tf_example.from_example(e)["item_id"][0].decode(): tf_example.from_example(e)
                for e in tf_example.read_split(refreshed["enriched"], "catalog")}
    from models.trainer import ModelMeta, load_catalog
    trained = load_catalog(ModelMeta.load(os.path.join(refreshed["trainer"], "stars")))
    twin = trained.index_of()[refreshed["twin"]]
    text = np.asarray(enriched["pNEW-twin"]["text_embedding"], np.float32)
    np.testing.assert_allclose(text, trained.text_embedding[twin])  # the same content
    learned = _tower_reference(reader, text, trained.tag_multi_hot[twin])
    # The semantic-match part: the twin's trained key (same text, the trained frame).
    key = reader.get_tensor("model/semantic_match/keys" + CR.VALUE)[twin]
    served, found = _embed(model, ["pNEW-twin"])
    assert found[0]
    np.testing.assert_allclose(served[0], np.concatenate([learned, key]), atol=1e-4)
    # The unknown subclass and tag do not break it: embedded like any other item.
    odd, found = _embed(model, ["pNEW-odd"])
    assert found[0] and np.all(np.isfinite(odd)) and np.linalg.norm(odd) > 0


@pytest.mark.e2e
def test_new_item_is_retrievable_and_usable_in_histories(refreshed):
    model = _load(str(refreshed["out"] / "brute_force_model" / "Format-Serving"))
    ids = [i.decode() for i in model.signatures["popular_items"](
        limit=tf.constant([1000], tf.int64))["ids"].numpy()[0]]
    table, _ = _embed(model, ids)
    query, _ = _embed(model, ["pNEW-twin"])
    answer = model.signatures["search"](query_embeddings=tf.constant(query))
    served = [i.decode() for i in answer["ids"].numpy()[0]]
    assert "pNEW-twin" in served  # a query pointing at it finds it in the top K
    # Scored as the index scores it: q·w (+ β·trend, 0 for a new item).
    scores = answer["scores"].numpy()[0]
    twin_score = scores[served.index("pNEW-twin")]
    assert twin_score == pytest.approx(float(query[0] @ query[0]), rel=1e-4)
    assert len(set(served)) == TOP_K and set(served) <= set(ids)
    # A history of the new item is read, not dropped as an unknown item.
    def h_next(history):
        width = max(1, len(history))
        return model.signatures["user_embeddings"](
            history_item_ids=tf.constant([history + [""] * (width - len(history))]),
            history_event_types=tf.constant([["view"] * width]),
            history_timestamps=tf.constant([[1700000000] * width], tf.int64),
            request_timestamp=tf.constant([1700000600], tf.int64),
            region=tf.constant([""]), context_signals=tf.zeros([1, 4]),
            **{k: (tf.constant([float("nan")]) if k.startswith("user_num_")
                   else tf.constant([""]))
               for k in model.signatures["user_embeddings"].structured_input_signature[1]
               if k.startswith(("user_num_", "user_cat_"))})["h_next"].numpy()
    assert not np.allclose(h_next(["pNEW-twin"]), h_next([""]), atol=1e-5)
    assert table.shape[0] == 151
