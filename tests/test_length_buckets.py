"""Length-bucketed training batches: cutting is exact, bucketing loses and repeats no user."""
import numpy as np
import pytest
import tensorflow as tf

from models import length_buckets as LB
from models.config import make_config
from models.inputs import SEQUENCE_KEYS, InputAdapter
from tests.test_inputs import ITEMS, _features
from tests.test_stars_model import L, _model, _small_setup


def test_bucket_bounds_grow_geometrically_up_to_the_window():
    assert LB.bucket_bounds(1) == [1]
    assert LB.bucket_bounds(50) == [1, 2, 3, 5, 8, 12, 18, 27, 41, 50]
    with pytest.raises(ValueError, match="batch_size"):
        LB.bucketed(tf.data.Dataset.range(1), 5, 0, 1.0)


def test_span_counts_from_the_first_known_event():
    valid = np.array([[0, 0, 1, 1], [0, 0, 0, 0], [1, 0, 0, 1], [0, 1, 0, 0]], bool)
    reference = [(4 - np.argmax(r)) if r.any() else 0 for r in valid]
    np.testing.assert_array_equal(LB.spans(tf.constant(valid)).numpy(), reference)


def _rows(inputs, rows):
    """The given examples of a model-input batch (pools flat [B*L, None])."""
    out = {}
    for key, value in inputs.items():
        if key == LB.POOLS:
            out[key] = tf.gather(tf.RaggedTensor.from_uniform_row_length(value, L),
                                 rows).merge_dims(0, 1)
        elif key == "user":
            out[key] = {k: tf.gather(v, rows) for k, v in value.items()}
        else:
            out[key] = tf.gather(value, rows)
    return out


def test_cutting_to_the_widest_span_leaves_every_loss_term_unchanged():
    catalog, inputs = _small_setup()
    keep = tf.reduce_sum(tf.cast(inputs["valid"], tf.int32), 1) <= L // 2
    rows = tf.where(keep)[:, 0]
    assert 2 <= int(tf.size(rows)) < 8
    short = _rows(inputs, rows)  # narrower than the window: the longest rows dropped
    cut = LB.trim(LB.nest_pools(short, L), L)
    width = int(LB.spans(short["valid"]).numpy().max())
    assert cut["items"].shape[1] == width < L
    assert cut[LB.POOLS].nrows() == int(tf.size(rows)) * width
    assert LB.trim(short, L)[LB.POOLS].to_list() == cut[LB.POOLS].to_list()  # flat pools in
    model = _model(catalog, make_config("tiny", max_history=L, full_softmax=True, alpha=0.0))
    full_parts = model.loss_parts(short, training=False)
    cut_parts = model.loss_parts(cut, training=False)
    for name in full_parts:
        np.testing.assert_allclose(cut_parts[name].numpy(), full_parts[name].numpy(),
                                   rtol=1e-5, err_msg=name)
    for full, trimmed in zip(model.user_embeddings(short), model.user_embeddings(cut)):
        np.testing.assert_allclose(trimmed.numpy(), full.numpy(), rtol=1e-5, atol=1e-6)


def _users(n, rng):
    """Histories of mixed length (most short, as in e-commerce) with one target each."""
    lengths = np.minimum(rng.geometric(0.3, n), 9)
    histories = [[ITEMS[i] for i in rng.integers(0, len(ITEMS), k)] for k in lengths]
    pages = [[[ITEMS[rng.integers(0, len(ITEMS))]] for _ in h] for h in histories]
    targets = [[ITEMS[rng.integers(0, len(ITEMS))]] for _ in histories]
    return histories, targets, pages


def _user_keys(batch):
    """One key per user from its known columns: items, target and same-page pools."""
    width = batch["items"].shape[1]
    keys = []
    for row, span in enumerate(LB.spans(batch["valid"]).numpy()):
        pools = batch[LB.POOLS][row * width:(row + 1) * width].to_list()
        keys.append((tuple(batch["items"][row].numpy()[width - span:]),
                     int(batch["target"][row]), tuple(map(tuple, pools[width - span:]))))
    return keys


def test_bucketed_batches_hold_every_user_once_with_their_own_columns():
    rng = np.random.default_rng(0)
    max_history, batch_size, n = 6, 4, 61
    histories, targets, pages = _users(n, rng)
    raw = [_features(histories[i:i + 16], targets[i:i + 16], pages[i:i + 16],
                     [[] for _ in histories[i:i + 16]]) for i in range(0, n, 16)]
    data = tf.data.Dataset.from_tensors(raw[0])
    for r in raw[1:]:
        data = data.concatenate(tf.data.Dataset.from_tensors(r))
    adapted = data.map(InputAdapter(ITEMS, max_history))
    reference = sorted(k for batch in adapted for k in _user_keys(batch))
    assert len(reference) == n
    histogram = LB.span_histogram(adapted, max_history)
    np.testing.assert_array_equal(histogram, np.bincount(
        [min(len(h), max_history) for h in histories], minlength=max_history + 1))
    mean = LB.mean_span(histogram)
    assert mean == pytest.approx(np.mean([min(len(h), max_history) for h in histories]))
    bounds = LB.bucket_bounds(max_history)
    for epoch in range(2):
        seen, batches = [], 0
        for batch in LB.bucketed(adapted, max_history, batch_size, mean, seed=epoch):
            batches += 1
            spans = LB.spans(batch["valid"]).numpy()
            assert batch["items"].shape[1] == max(1, spans.max())
            assert all(batch[k].shape[1] == batch["items"].shape[1] for k in SEQUENCE_KEYS)
            # One bucket per batch, and a token budget: short histories come more per batch.
            assert len(set(np.searchsorted(bounds, spans))) == 1
            assert len(spans) <= max(1, round(batch_size * mean / max(1, spans.max())))
            seen += _user_keys(batch)
        assert sorted(seen) == reference
        # The epoch length comes from the histogram, without a pass over the batches.
        assert batches == LB.batches_per_epoch(histogram, max_history, batch_size, mean)
    with pytest.raises(ValueError, match="empty"):
        LB.span_histogram(adapted.take(0), max_history)


def test_inference_batches_by_span_give_the_same_user_embeddings_in_a_known_order():
    catalog, inputs = _small_setup()
    model = _model(catalog, make_config("tiny", max_history=L))
    halves = [_rows(inputs, tf.range(0, 5)), _rows(inputs, tf.range(5, 8))]
    batches, order = LB.by_span(halves, L, batch_size=3)
    assert sorted(order) == list(range(8))
    spans = LB.spans(inputs["valid"]).numpy()
    assert list(spans[order]) == sorted(spans)
    assert [b["items"].shape[0] for b in batches] == [3, 3, 2]
    assert all(b["items"].shape[1] == max(1, LB.spans(b["valid"]).numpy().max()) for b in batches)
    assert all(LB.POOLS not in b for b in batches)
    for full, cut in zip(model.user_embeddings(inputs),
                         zip(*[model.user_embeddings(b) for b in batches])):
        np.testing.assert_allclose(np.concatenate(cut), full.numpy()[order], rtol=1e-5, atol=1e-6)
    assert LB.by_span([], L, 3)[1].size == 0
