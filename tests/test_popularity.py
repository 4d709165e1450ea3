"""popularity_log_prior against p_j = (c_j + β) / (Σc + β|I|); the Transform count reader."""
import numpy as np
import pytest
import tensorflow as tf  # noqa: F401

from models.popularity import popularity_log_prior, read_popularity_counts


@pytest.mark.parametrize("beta", [1.0, 0.5, 3.0])
def test_log_prior_matches_numpy_formula(beta):
    counts = np.array([10.0, 0.0, 3.0, 250.0, 0.0, 1.5])
    want = np.log((counts + beta) / (counts.sum() + beta * counts.size))
    got = popularity_log_prior(counts, beta)
    assert got.dtype == tf.float32 and got.shape == (6,)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6)
    assert np.all(np.isfinite(got.numpy()))  # zero-count cold items included
    np.testing.assert_allclose(np.exp(got.numpy()).sum(), 1.0, rtol=1e-6)


def test_log_prior_keeps_rare_items_with_large_totals():
    counts = np.array([1e12, 0.0, 1.0])
    want = np.log((counts + 1.0) / (counts.sum() + 3.0))
    np.testing.assert_allclose(popularity_log_prior(counts).numpy(), want, rtol=1e-6, atol=1e-9)


def test_log_prior_beta_zero_and_negative():
    got = popularity_log_prior([1, 3], beta=0.0).numpy()
    np.testing.assert_allclose(got, np.log([0.25, 0.75]), rtol=1e-6)
    with pytest.raises(ValueError):
        popularity_log_prior([1, 2], beta=-0.5)


def test_read_popularity_counts(tmp_path):
    path = tmp_path / "item_popularity"
    path.write_text("7 green tea\n3 apple\n\n2 not in catalogue\n1.5 green tea\n"
                    "4 -1\n", encoding="utf-8")
    items = ["apple", "green tea", "bread"]
    counts = read_popularity_counts(str(path), items)
    assert counts.dtype == np.float64
    np.testing.assert_allclose(counts, [3.0, 8.5, 0.0])
    counts, unknown = read_popularity_counts(str(path), items, return_unknown=True)
    assert unknown == 2
    np.testing.assert_allclose(popularity_log_prior(counts).numpy(),
                               np.log((counts + 1) / (counts.sum() + 3)), rtol=1e-6)


def test_read_popularity_counts_rejects_malformed_lines(tmp_path):
    path = tmp_path / "bad"
    path.write_text("3 apple\nbroken\n", encoding="utf-8")
    with pytest.raises(ValueError, match=":2:"):
        read_popularity_counts(str(path), ["apple"])
