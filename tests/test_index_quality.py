"""ScaNN's recall on real queries (models.index_quality) against numpy references."""
import numpy as np
import pytest
import tensorflow as tf

from models import index_quality
from models.serving import make_index
from stars.data import tf_example


def _numpy_recall(approx_ids, exact_ids):
    hits = sum(len(set(a) & set(b)) for a, b in zip(approx_ids.tolist(), exact_ids.tolist()))
    return hits / exact_ids.size


def test_recall_on_queries_matches_a_numpy_reference():
    rng = np.random.default_rng(0)
    items = rng.normal(size=(300, 8)).astype(np.float32)
    queries = rng.normal(size=(40, 8)).astype(np.float32)
    ids = tf.constant([f"i{j}" for j in range(len(items))])
    k = 10
    exact = make_index("brute_force", items, ids, k)
    scann = make_index("scann", items, ids, k)

    def search(index):
        return lambda q: tuple(t.numpy() for t in index(q, k=k))

    recall = index_quality.recall_on_queries(search(scann), search(exact), queries)
    # The exact top K by numpy, and ScaNN's answer scored against it.
    top = np.argsort(-(queries @ items.T), axis=1, kind="stable")[:, :k]
    exact_ids = np.array([[f"i{j}".encode() for j in row] for row in top])
    _, scann_ids = search(scann)(queries)
    assert recall == pytest.approx(_numpy_recall(scann_ids, exact_ids))
    # Exact against itself is 1; a search that misses every item is 0.
    assert index_quality.recall_on_queries(search(exact), search(exact), queries) == 1.0
    shifted = make_index("brute_force", -items, ids, k)  # the exact bottom K instead
    assert index_quality.recall_on_queries(search(shifted), search(exact), queries) == 0.0


def _write_requests(uri, split, n):
    def example(i):
        return tf_example.to_example({
            "user_id": [f"u{i}"], "item_id": [f"p{i}", f"p{i + 1}"],
            "event_type": ["view", "purchase"], "timestamp": [100 + i, 200 + i],
            "target_timestamp": [300 + i], "target_item_id": [f"p{i + 2}"]})
    tf_example.write_split(str(uri), split, (example(i) for i in range(n)))


def test_sample_requests_is_a_seeded_sample_without_repeats(tmp_path):
    _write_requests(tmp_path, "eval", 30)
    sample = index_quality.sample_requests(str(tmp_path), limit=10, seed=3)
    users = [e.user_id for e in sample]
    assert len(users) == len(set(users)) == 10
    assert users == sorted(users, key=lambda u: int(u[1:]))  # file order kept
    assert users == [e.user_id for e in index_quality.sample_requests(str(tmp_path), 10, seed=3)]
    assert users != [e.user_id for e in index_quality.sample_requests(str(tmp_path), 10, seed=4)]
    # Fewer requests than the limit: all of them, histories as written.
    everything = index_quality.sample_requests(str(tmp_path), limit=100)
    assert len(everything) == 30 and everything[0].history == ["p0", "p1"]


def test_sample_requests_refuses_an_empty_split(tmp_path):
    _write_requests(tmp_path, "eval", 0)
    with pytest.raises(ValueError, match="no request"):
        index_quality.sample_requests(str(tmp_path))


# ---- the StarsEvaluator's rule on the figure ---------------------------------------------
def test_served_index_recall_reads_the_index_builders_properties():
    from tfx.types import standard_artifacts

    from components.index_builder import mark_index_artifacts
    from components.stars_evaluator import served_index_recall
    scann, brute_force = standard_artifacts.Model(), standard_artifacts.Model()
    assert served_index_recall(scann) is None  # nothing recorded: no figure
    mark_index_artifacts(scann, brute_force, {"scann_recall_at_k": 0.91, "items": 7})
    assert served_index_recall(scann) == pytest.approx(0.91)
    assert served_index_recall(brute_force) == 1.0  # exact by definition


def test_index_recall_rule():
    from components.stars_evaluator import index_recall_rule
    passed = index_recall_rule(0.97, 0.95)
    assert passed["passed"] and passed["failure"] is None and passed["index_recall_at_k"] == 0.97
    assert index_recall_rule(0.95, 0.95)["passed"]  # the bound itself passes
    failed = index_recall_rule(0.90, 0.95)
    assert not failed["passed"] and "0.9000 < min_index_recall 0.95" in failed["failure"]
    assert not index_recall_rule(None, 0.95)["passed"]  # no figure, no blessing
    assert index_recall_rule(None, 0.0)["passed"]  # the rule off
