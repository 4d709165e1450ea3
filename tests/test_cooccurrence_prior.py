"""models.cooccurrence_prior against plain-Python references: the successor table, the
counts after a request's latest events, and a training position's count without the
user's own later events."""
from collections import Counter

import numpy as np
import pytest

import stars  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf

from models import cooccurrence_prior as CP

NUM_ITEMS = 9
SEQUENCES = [[0, 1, 2, 3, 1], [1, 2, 4], [0, 2, 1, 5, 2, 6], [7, -1, 8, 0]]


def _reference(sequences, skip=None):
    """{(a, b): count}: b counts 1/d when it follows a by d ≤ 3 events (a ≠ b, both known);
    ``skip(s, i, d)`` True leaves out the pair (sequence s, source position i, step d)."""
    counts = Counter()
    for s, seq in enumerate(sequences):
        for i, a in enumerate(seq):
            for d in (1, 2, 3):
                if i + d >= len(seq) or a < 0 or seq[i + d] < 0 or seq[i + d] == a:
                    continue
                if skip is None or not skip(s, i, d):
                    counts[a, seq[i + d]] += 1.0 / d
    return counts


def _dense(counts, items, weights):
    out = np.zeros(NUM_ITEMS)
    for item, w in zip(items, weights):
        for (a, b), c in counts.items():
            if a == item:
                out[b] += w * c
    return out


def _prior(gamma=1.0):
    layer = CP.CooccurrencePrior(CP.SuccessorTable.from_sequences(SEQUENCES, NUM_ITEMS))
    layer.gamma.assign(gamma)
    return layer


def test_the_table_holds_the_windowed_counts():
    table = CP.SuccessorTable.from_sequences(SEQUENCES, NUM_ITEMS)
    dense = np.zeros((NUM_ITEMS, NUM_ITEMS))
    for a in range(NUM_ITEMS):
        span = slice(table.row_splits[a], table.row_splits[a + 1])
        dense[a, table.successors[span]] = table.counts[span]
    want = np.zeros((NUM_ITEMS, NUM_ITEMS))
    for (a, b), c in _reference(SEQUENCES).items():
        want[a, b] = c
    np.testing.assert_allclose(dense, want, rtol=1e-6)
    assert table.num_items == NUM_ITEMS and not dense[:, 7].any()  # 7 is never a successor


def test_at_latest_weights_the_last_three_events_from_the_latest():
    """A request's term: γ · log(1 + Σ_k w_k counts[latest k-th event]), padding and
    unknown events weighing nothing and an empty history giving 0."""
    histories = [[-1, -1, 0, 1], [3, 2, 0, 1], [-1, -1, -1, 2], [-1, -1, -1, -1],
                 [-1, 0, -1, 1]]
    items = tf.constant(histories, tf.int32)
    got = _prior(1.5).at_latest(items, items >= 0).numpy()
    counts = _reference(SEQUENCES)
    for row, history in enumerate(histories):
        latest = list(history)[::-1][:3]
        weights = [w if item >= 0 else 0.0 for w, item in zip(CP.RECENT_WEIGHTS, latest)]
        np.testing.assert_allclose(got[row], 1.5 * np.log1p(_dense(counts, latest, weights)),
                                   rtol=1e-5, atol=1e-6)
    assert not got[3].any()


def test_a_training_position_leaves_out_its_own_later_events():
    """Position t of user s: the counts after its latest events, less the pairs from
    those events (positions t − k, k < 3) to positions after t in s's own sequence —
    which holds its target — and nothing else of the data taken out."""
    s = 2
    seq = SEQUENCES[s]
    items = tf.constant([seq[:-1]], tf.int32)
    next_items = tf.constant([seq[1:]], tf.int32)
    recent, weights = CP.recent_events(items, items >= 0)
    future, future_w = CP.own_future(items, items >= 0, next_items)
    length = len(seq) - 1
    got = _prior().counts_after(tf.reshape(recent, [length, -1]),
                                tf.reshape(weights, [length, -1]),
                                tf.reshape(future, [length, -1]),
                                tf.reshape(future_w, [length, -1])).numpy()
    for t in range(length):
        sources = [t - k for k in range(3) if t - k >= 0]
        counts = _reference(SEQUENCES, skip=lambda u, i, d: u == s and i in sources and i + d > t)
        want = _dense(counts, [seq[i] for i in sources], CP.RECENT_WEIGHTS[:len(sources)])
        np.testing.assert_allclose(got[t], want, rtol=1e-5, atol=1e-6)
        assert got[t][seq[t + 1]] < _dense(_reference(SEQUENCES), [seq[i] for i in sources],
                                           CP.RECENT_WEIGHTS)[seq[t + 1]]


def test_gamma_starts_at_zero_and_unknown_items_are_not_counted():
    layer = CP.CooccurrencePrior(CP.SuccessorTable.from_sequences(SEQUENCES, NUM_ITEMS))
    items = tf.constant([[0, 1, 2]], tf.int32)
    assert not layer.at_latest(items, items >= 0).numpy().any()   # an untrained prior: 0
    table = CP.SuccessorTable.from_sequences([[-1, 3, -1, 4]], 5)
    assert table.successors.tolist() == [4] and table.counts.tolist() == [0.5]


def test_an_empty_table_has_the_layout_a_checkpoint_restores():
    empty = CP.SuccessorTable.empty(NUM_ITEMS, 7)
    assert empty.row_splits.shape == (NUM_ITEMS + 1,) and empty.successors.shape == (7,)
    with pytest.raises(ValueError, match="successor table"):
        from models.config import make_config
        from tests.test_stars_model import _model, _small_setup
        catalog, _ = _small_setup()
        _model(catalog, make_config("tiny", cooccurrence_prior=True))


def test_the_model_adds_the_prior_to_h_next_logits_only():
    """L_next against a numpy reference: the full softmax over h·w_j + γ·log(1 + count_j)
    with each position's count less its own later events; L_gen without the term; the
    ranking's ``next_prior`` is the term after the latest event."""
    from models.config import make_config
    from tests.test_stars_model import L, _log_softmax, _small_setup
    catalog, inputs = _small_setup()
    items, valid = inputs["items"].numpy(), inputs["valid"].numpy()
    targets = inputs["next_items"].numpy()
    sequences = [list(row) + [int(t)] for row, t in zip(items, inputs["target"].numpy())]
    global NUM_ITEMS
    saved, NUM_ITEMS = NUM_ITEMS, len(catalog)
    try:
        table = CP.SuccessorTable.from_sequences(sequences, len(catalog))
        config = make_config("tiny", max_history=L, full_softmax=True, alpha=0.0,
                             use_context=False, cooccurrence_prior=True)
        from models.stars_model import StarsModel
        tf.keras.utils.set_random_seed(0)
        model = StarsModel(catalog, config, num_event_types=3,
                           user_vocab_sizes={"user_cat_region": 3}, successors=table)
        plain = model.loss_parts(inputs)
        model.cooccurrence.gamma.assign(0.7)
        parts = model.loss_parts(inputs)
        hidden = model.encode(inputs)[0].numpy()[:, 1:]
        queries = model.next_head(hidden.reshape(-1, hidden.shape[-1])).numpy()
        vectors = model.item_embeddings().numpy()
        rows = []
        for b in range(items.shape[0]):
            for t in range(L):
                if not valid[b, t] or targets[b, t] < 0:
                    continue
                sources = [t - k for k in range(3) if t - k >= 0]
                counts = _reference(sequences, skip=lambda u, i, d: (
                    u == b and i in sources and i + d > t))
                weights = [w if valid[b, i] else 0.0
                           for w, i in zip(CP.RECENT_WEIGHTS, sources)]
                count = _dense(counts, [items[b, i] for i in sources], weights)
                logits = queries[b * L + t] @ vectors.T + 0.7 * np.log1p(count)
                rows.append(-_log_softmax(logits[None])[0, targets[b, t]])
        np.testing.assert_allclose(float(parts["loss_next"]), np.mean(rows), rtol=1e-4)
        assert float(parts["loss_next"]) != float(plain["loss_next"])
        np.testing.assert_allclose(float(parts["loss_gen"]), float(plain["loss_gen"]), rtol=1e-6)
        np.testing.assert_allclose(model.next_prior(inputs).numpy(),
                                   model.cooccurrence.at_latest(inputs["items"],
                                                                inputs["valid"]).numpy())
        # The sampled softmax gets the term too, and γ trains.
        from models.schedule import make_optimizer
        sampled = StarsModel(catalog, config.replace(full_softmax=False), num_event_types=3,
                             user_vocab_sizes={"user_cat_region": 3}, successors=table)
        sampled.compile(optimizer=make_optimizer(config, 10))
        sampled.loss_parts(inputs)
        assert np.isfinite(sampled.train_step(inputs)["loss"].numpy())
        assert float(sampled.cooccurrence.gamma.numpy()) != 0.0
    finally:
        NUM_ITEMS = saved
