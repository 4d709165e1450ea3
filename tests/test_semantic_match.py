"""The semantic match to the latest items (models.semantic_match) against numpy references."""
import numpy as np
import pytest

import stars  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tensorflow as tf

from models.semantic_match import RECENT, WEIGHT_SCALE, SemanticMatch, semantic_keys


def _cosines(x):
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    return unit @ unit.T


def test_keys_are_unit_and_keep_the_cosines_of_text_inside_their_width():
    rng = np.random.default_rng(0)
    text = rng.normal(size=(40, 5)) @ rng.normal(size=(5, 24))  # rank 5 in 24 dimensions
    keys = semantic_keys(text, 8)
    assert keys.shape == (40, 8) and keys.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(keys, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(keys @ keys.T, _cosines(text), atol=1e-5)
    # At or above the text's own width the keys are the unit text itself.
    np.testing.assert_allclose(semantic_keys(text, 64),
                               text / np.linalg.norm(text, axis=1, keepdims=True), atol=1e-6)


def test_keys_of_narrower_width_lose_only_the_minor_directions():
    """Text with two strong and many weak directions: 2-d keys rank each item's nearest
    neighbours as the full cosine does."""
    rng = np.random.default_rng(1)
    text = np.hstack([rng.normal(size=(30, 2)) * 10, rng.normal(size=(30, 14)) * 0.01])
    keys = semantic_keys(text, 2)
    full, narrow = _cosines(text), keys @ keys.T
    np.fill_diagonal(full, -2), np.fill_diagonal(narrow, -2)
    assert (full.argmax(1) == narrow.argmax(1)).all()


def test_zero_text_rows_get_zero_keys_and_bad_widths_are_refused():
    text = np.eye(6, 10)
    text[2] = 0.0
    keys = semantic_keys(text, 4)
    assert not keys[2].any() and np.isfinite(keys).all()
    with pytest.raises(ValueError, match="positive dimension"):
        semantic_keys(text, 0)


def test_queries_sum_the_weighted_keys_of_the_latest_known_events():
    rng = np.random.default_rng(2)
    num_items, dim = 12, 5
    layer = SemanticMatch(rng.normal(size=(num_items, 9)), dim)
    weights = np.array([1.5, -0.5, 0.25], np.float32)
    layer.weights_raw.assign(weights / WEIGHT_SCALE)
    # Left-padded histories with unknown items (-1) inside and a fully padded row.
    items = np.array([[-1, -1, 3, 7, 1], [4, -1, 2, 2, 9], [-1, -1, -1, -1, -1]], np.int32)
    valid = np.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], bool)
    got = layer.queries(tf.constant(items), tf.constant(valid)).numpy()
    keys = layer.keys.numpy()
    expected = np.zeros(items.shape + (dim,), np.float32)
    for b in range(items.shape[0]):
        for t in range(items.shape[1]):
            for k in range(RECENT):
                if t - k >= 0 and valid[b, t - k] and items[b, t - k] >= 0:
                    expected[b, t] += weights[k] * keys[items[b, t - k]]
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert not got[2].any()


def test_an_untrained_match_adds_nothing():
    layer = SemanticMatch(np.random.default_rng(3).normal(size=(8, 6)), 4)
    queries = layer.queries(tf.constant([[1, 2, 3]]), tf.constant([[True, True, True]]))
    assert not queries.numpy().any()
    np.testing.assert_allclose(layer.item_keys(tf.constant([2, 5])).numpy(),
                               layer.keys.numpy()[[2, 5]])
