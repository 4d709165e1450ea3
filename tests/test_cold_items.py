"""Cold-item calibration against a numpy reference."""
import numpy as np
import pytest

import stars  # noqa: F401
import tensorflow as tf

from models import cold_items


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
