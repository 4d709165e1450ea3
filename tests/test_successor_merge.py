"""models.successor_merge: the index's top k merged with the latest events' successors is
the exact top k of h·w_j + γ·log(1 + count_j) over the whole catalogue."""
import numpy as np

import stars  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf

from models import cooccurrence_prior as CP
from models.successor_merge import merge_top_k, successor_counts


def _setup(seed=0, num_items=40, dim=6):
    rng = np.random.default_rng(seed)
    sequences = [list(rng.integers(0, num_items, int(rng.integers(3, 12)))) for _ in range(60)]
    prior = CP.CooccurrencePrior(CP.SuccessorTable.from_sequences(sequences, num_items))
    prior.gamma.assign(1.3)
    vectors = rng.normal(size=(num_items, dim)).astype(np.float32)
    return rng, prior, vectors


def test_successor_counts_are_the_dense_counts_as_entries():
    rng, prior, _ = _setup()
    recent = rng.integers(0, 40, size=(5, 3))
    weights = np.array([CP.RECENT_WEIGHTS] * 5, np.float32)
    weights[2] = [1.0, 0.0, 0.0]
    weights[4] = 0.0  # an empty history: no successor
    rows, items, counts = (x.numpy() for x in successor_counts(prior, recent, weights))
    dense = np.zeros((5, 40), np.float32)
    dense[rows, items] = counts
    np.testing.assert_allclose(dense, prior.counts_after(recent, weights).numpy(), rtol=1e-6)
    assert len(set(zip(rows.tolist(), items.tolist()))) == len(rows)
    assert not (rows == 4).any()


def test_the_merge_is_the_exact_top_k_of_the_full_score():
    for seed in range(3):
        rng, prior, vectors = _setup(seed)
        queries = rng.normal(size=(6, vectors.shape[1])).astype(np.float32)
        recent = rng.integers(0, 40, size=(6, 3))
        weights = np.array([CP.RECENT_WEIGHTS] * 6, np.float32)
        weights[0] = 0.0  # no history: the index's answer as it is
        k = 5
        plain = queries @ vectors.T
        index_items = np.argsort(-plain, axis=1)[:, :k]
        index_scores = np.take_along_axis(plain, index_items, 1)
        scores, items = merge_top_k(index_scores, index_items, queries, vectors, prior,
                                    recent, weights, k)
        full = plain + 1.3 * np.log1p(prior.counts_after(recent, weights).numpy())
        want = np.argsort(-full, axis=1)[:, :k]
        np.testing.assert_array_equal(items.numpy(), want)
        np.testing.assert_allclose(scores.numpy(), np.take_along_axis(full, want, 1), rtol=1e-5)
        np.testing.assert_array_equal(items.numpy()[0], index_items[0])


def test_gamma_zero_returns_the_index_answer():
    rng, prior, vectors = _setup(4)
    prior.gamma.assign(0.0)
    queries = rng.normal(size=(3, vectors.shape[1])).astype(np.float32)
    plain = queries @ vectors.T
    index_items = np.argsort(-plain, axis=1)[:, :4]
    _, items = merge_top_k(np.take_along_axis(plain, index_items, 1), index_items, queries,
                           vectors, prior, rng.integers(0, 40, size=(3, 3)),
                           np.ones((3, 3), np.float32), 4)
    np.testing.assert_array_equal(items.numpy(), index_items)
