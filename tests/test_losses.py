"""models/losses.py against numpy references: formulas, masks, weights, finite gradients."""
import numpy as np
import pytest
import tensorflow as tf

from models import losses

RNG = np.random.default_rng(0)


def _log_softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def _softplus(x):
    return np.logaddexp(0.0, x)


def _slice_inputs(b=4, k=5, d=3):
    return (RNG.normal(size=(b, d)), RNG.normal(size=(b, d)), RNG.normal(size=(b, k, d)),
            np.log(RNG.uniform(0.01, 1, size=b)), np.log(RNG.uniform(0.01, 1, size=(b, k))))


def _slice_logits(h, positive, negative, positive_log_p, negative_log_p, alpha):
    """Corrected logits [B, 1+K] of a candidate slice, the positive in column 0, built as
    ``StarsModel`` builds them: dot products with every candidate, then ``corrected_logits``."""
    def f32(x):
        return tf.cast(x, tf.float32)
    candidates = tf.concat([f32(positive)[:, None], f32(negative)], axis=1)
    scores = tf.einsum("bd,bkd->bk", f32(h), candidates)
    log_p = tf.concat([f32(positive_log_p)[:, None], f32(negative_log_p)], axis=1)
    return losses.corrected_logits(scores, log_p, alpha)


def test_corrected_logits_formula_and_broadcasting():
    scores = RNG.normal(size=(3, 4))
    log_p = np.log(RNG.uniform(0.01, 1, size=4))
    got = losses.corrected_logits(scores, log_p, 0.7).numpy()
    np.testing.assert_allclose(got, scores - 0.7 * log_p[None, :], rtol=1e-5, atol=1e-6)
    assert losses.corrected_logits(tf.constant(scores, tf.float16), log_p, 1.0).dtype == tf.float32


def test_next_item_loss_matches_numpy_log_softmax():
    h, pos, neg, pos_lp, neg_lp = _slice_inputs()
    logits = _slice_logits(h, pos, neg, pos_lp, neg_lp, 1.0)
    want = -_log_softmax(logits.numpy().astype(np.float64))[:, 0]
    np.testing.assert_allclose(losses.next_item_loss(logits).numpy(), want.mean(), rtol=1e-5)
    w = np.array([1.0, 0.0, 2.0, 0.5])
    np.testing.assert_allclose(losses.next_item_loss(logits, weights=w).numpy(),
                               (w * want).sum() / w.sum(), rtol=1e-5)


def test_alpha_zero_is_plain_dot_product_softmax_ce():
    h, pos, neg, pos_lp, neg_lp = _slice_inputs()
    logits = _slice_logits(h, pos, neg, pos_lp, neg_lp, 0.0)
    candidates = np.concatenate([pos[:, None], neg], 1)
    plain = np.einsum("bd,bkd->bk", h, candidates)
    want = tf.keras.losses.sparse_categorical_crossentropy(
        np.zeros(len(h)), plain, from_logits=True).numpy().mean()
    np.testing.assert_allclose(losses.next_item_loss(logits).numpy(), want, rtol=1e-5)


def test_fully_masked_rows_give_zero_not_nan():
    logits = tf.constant(RNG.normal(size=(3, 4)), tf.float32)
    assert losses.next_item_loss(logits, weights=tf.zeros([3])).numpy() == 0.0
    assert losses.negative_loss(logits, mask=tf.zeros([3, 4], tf.bool)).numpy() == 0.0
    assert losses.full_softmax_loss(RNG.normal(size=(2, 3)), RNG.normal(size=(5, 3)),
                                    [-1, -1]).numpy() == 0.0
    # A non-finite row is ignored when its weight is 0.
    bad = tf.constant([[np.nan, 1.0], [0.5, 1.0]], tf.float32)
    np.testing.assert_allclose(losses.next_item_loss(bad, weights=[0.0, 1.0]).numpy(),
                               -_log_softmax(np.array([0.5, 1.0]))[0], rtol=1e-5)


def test_masked_negatives_are_ignored():
    logits = RNG.normal(size=(3, 5)).astype(np.float32)
    mask = np.array([[1, 0, 1, 0], [1, 1, 1, 1], [0, 0, 0, 0]], bool)
    corrupted = logits.copy()
    corrupted[:, 1:][~mask] = 50.0  # e.g. a duplicate of the positive scored very high
    want = [-_log_softmax(logits[i][np.concatenate([[True], mask[i]])])[0] for i in range(3)]
    got = losses.next_item_loss(corrupted, negative_mask=mask).numpy()
    assert np.isfinite(got)
    np.testing.assert_allclose(got, np.mean(want), rtol=1e-5, atol=1e-6)
    assert want[2] == 0.0  # no negatives left: the positive is certain


def test_mixed_precision_inputs_are_computed_in_float32():
    logits = tf.constant([[30000.0, -30000.0, 0.0]], tf.float16)  # float16 softmax would overflow
    got = losses.next_item_loss(logits, negative_mask=[[True, False]])
    assert got.dtype == tf.float32 and np.isfinite(got.numpy())


def test_full_softmax_loss_matches_numpy():
    h, items = RNG.normal(size=(4, 3)), RNG.normal(size=(6, 3))
    labels = np.array([0, 5, 2, -1])
    log_p = np.log(RNG.uniform(0.01, 1, size=6))
    w = np.array([1.0, 2.0, 0.5, 1.0])
    logits = h @ items.T - 0.8 * log_p[None, :]
    per_row = -_log_softmax(logits)[np.arange(3), labels[:3]]
    want = (w[:3] * per_row).sum() / w[:3].sum()  # label -1 masks the last row
    got = losses.full_softmax_loss(h, items, labels, log_p, 0.8, weights=w).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5)
    plain = losses.full_softmax_loss(h[:3], items, labels[:3]).numpy()
    want = -_log_softmax(h[:3] @ items.T)[np.arange(3), labels[:3]]
    np.testing.assert_allclose(plain, want.mean(), rtol=1e-5)


def test_excluded_items_leave_the_full_softmax_but_the_label_stays():
    h, items = RNG.normal(size=(3, 3)), RNG.normal(size=(6, 3))
    labels = np.array([0, 5, 2])
    excluded = np.array([[1, 4, -1], [5, 0, 0], [-1, -1, -1]])  # row 1 excludes its own label
    logits = h @ items.T
    logits[0, [1, 4]] = -np.inf
    logits[1, 0] = -np.inf
    want = -_log_softmax(logits)[np.arange(3), labels]
    got = losses.full_softmax_loss(h, items, labels, excluded=excluded).numpy()
    np.testing.assert_allclose(got, want.mean(), rtol=1e-5)
    assert got < losses.full_softmax_loss(h, items, labels).numpy()


def test_excluded_negatives_matches_numpy():
    candidates = np.array([[3, 1, 4, 1], [5, 9, 2, 6]])
    excluded = np.array([[1, 7, -1], [9, 6, 5]])
    labels = np.array([4, 5])
    want = np.array([[c in set(e) - {-1} and c != y for c in row]
                     for row, e, y in zip(candidates, excluded, labels)])
    got = losses.excluded_negatives(candidates, excluded, labels).numpy()
    np.testing.assert_array_equal(got, want)
    assert got.any() and not got.all()


def test_negative_loss_matches_numpy():
    s = RNG.normal(scale=3.0, size=(3, 4))
    sigmoid = 1.0 / (1.0 + np.exp(s))  # σ(−s)
    np.testing.assert_allclose(losses.negative_loss(s).numpy(), -np.log(sigmoid).mean(), rtol=1e-5)
    mask = RNG.uniform(size=s.shape) > 0.4
    np.testing.assert_allclose(losses.negative_loss(s, mask).numpy(),
                               -np.log(sigmoid[mask]).mean(), rtol=1e-5)
    assert np.isfinite(losses.negative_loss([[1e4, -1e4]]).numpy())


def _numpy_info_nce(outputs, vocab, ids, temperature, weights):
    q = outputs / np.linalg.norm(outputs, axis=1, keepdims=True)
    k = vocab / np.linalg.norm(vocab, axis=1, keepdims=True)
    logits = q @ k.T / temperature
    rows = []
    for i in range(len(q)):
        keep = [j for j in range(len(q)) if j == i or (ids[j] != ids[i] and weights[j] > 0)]
        rows.append(-_log_softmax(logits[i, keep])[keep.index(i)])
    rows = np.array(rows)
    return (weights * rows).sum() / weights.sum()


def test_aux_vocabulary_loss_matches_numpy_info_nce_with_duplicate_targets():
    ids = np.array([0, 1, 0, 2, 3, 1])
    table = RNG.normal(size=(4, 5))
    vocab, outputs = table[ids], RNG.normal(size=(6, 5))
    ones = np.ones(6)
    want = _numpy_info_nce(outputs, vocab, ids, 0.2, ones)
    np.testing.assert_allclose(losses.aux_vocabulary_loss(outputs, vocab, 0.2).numpy(), want,
                               rtol=1e-5)  # duplicates found from identical vocabulary rows
    np.testing.assert_allclose(
        losses.aux_vocabulary_loss(outputs, vocab, 0.2, target_ids=ids).numpy(), want, rtol=1e-5)
    # Without the duplicate mask the loss would differ: the mask really matters here.
    assert not np.isclose(want, _numpy_info_nce(outputs, vocab, np.arange(6), 0.2, ones))
    w = np.array([1.0, 0.0, 2.0, 1.0, 0.0, 1.0])
    np.testing.assert_allclose(
        losses.aux_vocabulary_loss(outputs, vocab, 0.2, weights=w).numpy(),
        _numpy_info_nce(outputs, vocab, ids, 0.2, w), rtol=1e-5)
    assert losses.aux_vocabulary_loss(outputs, vocab, 0.2, weights=np.zeros(6)).numpy() == 0.0
    with pytest.raises(ValueError):
        losses.aux_vocabulary_loss(outputs, vocab, 0.0)


def test_gradients_are_finite():
    h = tf.Variable(RNG.normal(size=(4, 3)), dtype=tf.float32)
    items = tf.Variable(RNG.normal(size=(6, 3)), dtype=tf.float32)
    log_p = tf.math.log(tf.constant(RNG.uniform(0.01, 1, size=6), tf.float32))
    negatives = tf.constant([[1, 2], [0, 0], [3, 4], [5, 1]])
    positives = tf.constant([0, 3, 5, 2])
    with tf.GradientTape() as tape:
        logits = _slice_logits(
            h, tf.gather(items, positives), tf.gather(items, negatives),
            tf.gather(log_p, positives), tf.gather(log_p, negatives), 1.0)
        mask = tf.constant([[True, True], [False, False], [True, False], [True, True]])
        total = (losses.next_item_loss(logits, weights=[1.0, 1.0, 0.0, 1.0], negative_mask=mask)
                 + losses.negative_loss(logits[:, 1:], mask)
                 + losses.full_softmax_loss(h, items, positives, log_p, 1.0)
                 + losses.aux_vocabulary_loss(h, tf.gather(items, positives), 0.1,
                                              weights=[1.0, 0.0, 1.0, 1.0]))
    for grad in tape.gradient(total, [h, items]):
        assert np.all(np.isfinite(tf.convert_to_tensor(grad).numpy()))


def test_losses_trace_in_tf_function():
    @tf.function
    def step(logits, mask, weights):
        return losses.next_item_loss(logits, weights, mask), losses.aux_vocabulary_loss(
            logits[:, :2], logits[:, 1:3], tf.constant(0.1))

    a, b = step(tf.constant(RNG.normal(size=(3, 4)), tf.float32), tf.ones([3, 3], tf.bool),
                tf.ones([3]))
    assert np.isfinite(a.numpy()) and np.isfinite(b.numpy())
