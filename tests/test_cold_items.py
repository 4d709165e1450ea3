"""Cold-item calibration against a numpy reference."""
import numpy as np
import pytest
import tensorflow as tf

from models import cold_items
from models.config import make_config


def _reference(vectors, cold, target):
    out = vectors.copy()
    if target > 0:
        rows = cold.astype(bool)
        out[rows] *= target / np.linalg.norm(out[rows], axis=1, keepdims=True)
    return out


@pytest.mark.parametrize("target", [0.0, 0.7, 3.0])
def test_cold_vectors_take_the_target_norm_and_keep_their_direction(target):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(9, 5)).astype(np.float32)
    cold = np.array([1, 0, 0, 1, 0, 0, 0, 1, 0], np.float32)
    got = cold_items.rescale_cold(tf.constant(vectors), tf.constant(cold), target).numpy()
    np.testing.assert_allclose(got, _reference(vectors, cold, target), rtol=1e-5)
    # Any leading shape (e.g. [batch, pool, D]) works the same.
    batched = cold_items.rescale_cold(tf.constant(vectors.reshape(3, 3, 5)),
                                      tf.constant(cold.reshape(3, 3)), target).numpy()
    np.testing.assert_allclose(batched.reshape(9, 5), got, rtol=1e-6)


def test_warm_norm_is_a_quantile_of_the_warm_items_only():
    vectors = np.array([[3.0, 4.0], [0.0, 1.0], [6.0, 8.0], [0.0, 100.0]])
    cold = np.array([False, False, False, True])
    assert cold_items.warm_norm(vectors, cold, None) == 0.0
    assert cold_items.warm_norm(vectors, cold, 0.5) == pytest.approx(5.0)
    assert cold_items.warm_norm(vectors, cold, 1.0) == pytest.approx(10.0)
    with pytest.raises(ValueError, match="no warm item"):
        cold_items.warm_norm(vectors, np.ones(4, bool), 0.5)


class _Model:
    """Test double of a trained model: only the item table and the calibration variable."""

    def __init__(self, vectors, cold):
        self.vectors, self.cold = vectors, cold
        self.cold_item_norm = tf.Variable(0.0)

    def item_vectors(self):
        return self.item_embeddings()

    def item_embeddings(self):
        norm = float(self.cold_item_norm.numpy())
        out = self.vectors.copy()
        if norm > 0:
            out[self.cold] *= norm / np.linalg.norm(out[self.cold], axis=1, keepdims=True)
        return tf.constant(out)


class _Ranking:
    """Test double of ValidationRanking: the NDCG@10 of each quantile tried, in order."""

    def __init__(self, model, ndcgs):
        self.model, self.ndcgs, self.calls = model, list(ndcgs), 0
        self.encoded = 0

    def user_queries(self):
        self.encoded += 1
        return {"ni": np.zeros((3, 2), np.float32)}

    def scores(self, queries):
        assert queries is not None  # the selection encodes the users once
        self.calls += 1
        return {"ni": (0.1, self.ndcgs[self.calls - 1])}


def test_cold_item_norm_is_the_largest_within_the_ndcg_tolerance():
    vectors = np.array([[1.0, 0], [0, 2.0], [3.0, 0], [0, 4.0], [0.1, 0]], np.float32)
    counts = np.array([5, 1, 2, 3, 0])
    model = _Model(vectors, counts == 0)
    tol = cold_items.NDCG_TOLERANCE
    assert cold_items.QUANTILES == (None, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99)
    # off, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99: 0.5 is the last one within the tolerance of off.
    ndcgs = [0.06, 0.06 * (1 - tol / 4), 0.06 * (1 - tol / 2), 0.06 * (1 - 2 * tol), 0.05,
             0.05, 0.05]
    ranking = _Ranking(model, ndcgs)
    chosen = cold_items.choose_norm(model, ranking, counts, make_config("tiny"))
    assert ranking.encoded == 1 and ranking.calls == 7
    median = float(np.median([1, 2, 3, 4]))
    assert chosen["chosen"] == 0.5 and chosen["norm"] == pytest.approx(median)
    assert model.cold_item_norm.numpy() == pytest.approx(median)
    assert chosen["cold_items"] == 1 and chosen["ndcg_tolerance"] == tol
    costly = cold_items.choose_norm(model, _Ranking(model, [0.06] + [0.05] * 6), counts,
                                    make_config("tiny"))
    assert costly["chosen"] is None and model.cold_item_norm.numpy() == 0.0  # off
    assert cold_items.choose_norm(model, _Ranking(model, ndcgs), counts,
                                  make_config("tiny", "sasrec_id")) is None
    assert cold_items.choose_norm(model, _Ranking(model, ndcgs), counts + 1,
                                  make_config("tiny")) is None
