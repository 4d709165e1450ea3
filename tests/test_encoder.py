"""The sequence encoder (STARS §4.2): attention masks, causality, and the two read-outs."""
import numpy as np
import tensorflow as tf

from models.config import make_config
from models.encoder import SequenceEncoder, attention_masks
from models.item_catalog import ItemCatalog
from models.stars_model import StarsModel, last_valid_position, read_outs

# Position 0 is [USER] (always valid); the history is left-padded, with an unknown item
# (valid False) in the middle of row 2 and at the end of row 3; row 4 is an empty history.
VALID = np.array([[1, 1, 1, 1, 1, 1],
                  [1, 0, 0, 1, 1, 1],
                  [1, 0, 1, 0, 1, 1],
                  [1, 0, 1, 1, 1, 0],
                  [1, 0, 0, 0, 0, 0]], bool)


def _reference_masks(valid):
    """Plain numpy: mask[b, q, k] = query q may attend to key k."""
    batch, length = valid.shape
    causal = np.zeros((batch, length, length), bool)
    last = np.zeros((batch, length, length), bool)
    for b in range(batch):
        for q in range(length):
            for k in range(length):
                seen = k <= q and valid[b, k]
                causal[b, q, k] = seen or q == k
                if q == 0:  # [USER]: itself, and in the last layer every valid key
                    last[b, q, k] = k == 0 or valid[b, k]
                else:
                    last[b, q, k] = seen or q == k
    return causal, last


def test_attention_masks_match_numpy_reference():
    causal, last = (m.numpy() for m in attention_masks(tf.constant(VALID)))
    ref_causal, ref_last = _reference_masks(VALID)
    np.testing.assert_array_equal(causal, ref_causal)
    np.testing.assert_array_equal(last, ref_last)


def test_attention_masks_properties():
    causal, last = (m.numpy() for m in attention_masks(tf.constant(VALID)))
    length = VALID.shape[1]
    # Causal: nothing above the diagonal, in either mask's item rows.
    upper = np.triu(np.ones((length, length), bool), 1)
    assert not causal[:, upper].any()
    assert not last[:, 1:][:, upper[1:]].any()
    # [USER] sees only itself except in the last layer, where it sees every valid key.
    np.testing.assert_array_equal(causal[:, 0], np.eye(length, dtype=bool)[0][None].repeat(5, 0))
    np.testing.assert_array_equal(last[:, 0], VALID)
    # Padding keys are masked for every other query.
    off_diagonal = ~np.eye(length, dtype=bool)[None]
    assert not (~VALID[:, None, :] & (causal | last) & off_diagonal).any()
    # A padded query row sees itself (so no row is all-masked), plus the earlier valid
    # keys like any causal row; its output is never read.
    for b, q in zip(*np.nonzero(~VALID)):
        expected = np.arange(length) == q
        expected |= (np.arange(length) < q) & VALID[b]
        np.testing.assert_array_equal(causal[b, q], expected)
        np.testing.assert_array_equal(last[b, q], expected)
    # Item rows are the same in both masks; only the [USER] row differs.
    np.testing.assert_array_equal(causal[:, 1:], last[:, 1:])


def _encoder(num_layers=2):
    tf.keras.utils.set_random_seed(1)
    return SequenceEncoder(d_model=16, num_layers=num_layers, num_heads=2, ff_dim=32,
                           dropout=0.1)


def test_future_tokens_do_not_change_earlier_states():
    encoder = _encoder()
    rng = np.random.default_rng(0)
    tokens = rng.normal(size=(2, 7, 16)).astype(np.float32)
    valid = np.ones((2, 7), bool)
    valid[1, 1:3] = False  # left padding in row 1
    base = encoder(tf.constant(tokens), tf.constant(valid)).numpy()
    for t in (3, 5, 6):
        changed = tokens.copy()
        changed[:, t] += rng.normal(size=(2, 16)).astype(np.float32) * 3
        out = encoder(tf.constant(changed), tf.constant(valid)).numpy()
        # Item positions before t are untouched (including the [USER] state the items read
        # in the earlier layers) ...
        np.testing.assert_allclose(out[:, 1:t], base[:, 1:t], atol=1e-6)
        # ... position t itself changes, and so does h_gen: the last layer's [USER] row
        # attends to the whole history.
        assert np.abs(out[:, t] - base[:, t]).max() > 1e-3
        assert np.abs(out[:, 0] - base[:, 0]).max() > 1e-3


def test_padded_tokens_do_not_influence_valid_states():
    encoder = _encoder()
    rng = np.random.default_rng(1)
    tokens = rng.normal(size=(1, 6, 16)).astype(np.float32)
    valid = np.array([[1, 0, 0, 1, 1, 1]], bool)
    base = encoder(tf.constant(tokens), tf.constant(valid)).numpy()
    changed = tokens.copy()
    changed[:, 1:3] = rng.normal(size=(1, 2, 16)) * 5
    out = encoder(tf.constant(changed), tf.constant(valid)).numpy()
    keep = valid[0]
    np.testing.assert_allclose(out[:, keep], base[:, keep], atol=1e-6)


def test_single_layer_user_row_sees_history():
    """With one layer that layer is the last one: [USER] attends to the history."""
    encoder = _encoder(num_layers=1)
    rng = np.random.default_rng(2)
    tokens = rng.normal(size=(1, 4, 16)).astype(np.float32)
    valid = np.ones((1, 4), bool)
    base = encoder(tf.constant(tokens), tf.constant(valid)).numpy()
    changed = tokens.copy()
    changed[:, 3] += rng.normal(size=(1, 16)).astype(np.float32) * 3
    out = encoder(tf.constant(changed), tf.constant(valid)).numpy()
    np.testing.assert_allclose(out[:, 1:3], base[:, 1:3], atol=1e-6)
    assert np.abs(out[:, 0] - base[:, 0]).max() > 1e-3


# ---- read-outs --------------------------------------------------------------------------
# History validity only (no [USER] column): left padding; an unknown item at the end;
# unknown in the middle; an empty history.
HISTORY_VALID = np.array([[0, 0, 1, 1, 1],
                          [0, 1, 1, 1, 0],
                          [1, 0, 1, 0, 1],
                          [0, 0, 0, 0, 0]], bool)


def test_last_valid_position():
    np.testing.assert_array_equal(last_valid_position(tf.constant(HISTORY_VALID)).numpy(),
                                  [4, 3, 4, -1])


def _coded_hidden(batch, length, dim=3):
    """hidden[b, p] = 100 b + p in every dimension, so a read-out names its position."""
    codes = 100.0 * np.arange(batch)[:, None] + np.arange(length)[None, :]
    return np.repeat(codes[..., None], dim, axis=-1).astype(np.float32)


def test_read_outs_with_user_token():
    hidden = _coded_hidden(4, 6)
    gen, nxt = (x.numpy() for x in read_outs(tf.constant(hidden), tf.constant(HISTORY_VALID),
                                             use_user_token=True))
    # h_next: the latest KNOWN event (history index + 1 for [USER]); empty -> [USER].
    np.testing.assert_array_equal(nxt[:, 0], [5, 104, 205, 300])
    # h_gen: always the [USER] position.
    np.testing.assert_array_equal(gen[:, 0], [0, 100, 200, 300])


def test_read_outs_without_user_token_is_masked_mean():
    rng = np.random.default_rng(3)
    hidden = rng.normal(size=(4, 6, 5)).astype(np.float32)
    gen, nxt = (x.numpy() for x in read_outs(tf.constant(hidden), tf.constant(HISTORY_VALID),
                                             use_user_token=False))
    for b in range(3):
        expected = hidden[b, 1:][HISTORY_VALID[b]].mean(axis=0)
        np.testing.assert_allclose(gen[b], expected, rtol=1e-5, atol=1e-6)
    # Empty history: no items to pool; falls back to position 0 (finite, no 0/0).
    np.testing.assert_allclose(gen[3], hidden[3, 0])
    np.testing.assert_allclose(nxt[3], hidden[3, 0])
    np.testing.assert_allclose(nxt[1], hidden[1, 4])


# ---- the model's encode under left padding ------------------------------------------------
def _catalog(num_items=40, seed=0):
    rng = np.random.default_rng(seed)
    text = rng.normal(size=(num_items, 16)).astype(np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    subclass = (np.arange(num_items) % 4).astype(np.int32)
    return ItemCatalog(np.array([f"item{i}" for i in range(num_items)]), text,
                       (rng.random((num_items, 5)) < 0.3).astype(np.float32), subclass,
                       subclass // 2, np.ones(num_items, np.float32),
                       np.ones(num_items, np.int32))


def _encode_inputs(items):
    items = np.asarray(items, np.int32)
    valid = items >= 0
    length = items.shape[1]
    out = {"items": tf.constant(items), "valid": tf.constant(valid),
           "position": tf.constant(np.where(valid, length - np.arange(length)[None], 0)),
           "user": {}}
    for name, value in (("event_type_id", 1), ("recency_bucket", 2), ("hour", 9),
                        ("day_of_week", 3), ("week_of_year", 20), ("holiday", 0)):
        out[name] = tf.constant(np.where(valid, value, 0).astype(np.int64))
    return out


def test_model_read_outs_ignore_padding_amount_and_trailing_unknown():
    """The same history, padded to different lengths or followed by an unknown item, gives
    the same h_gen / h_next: positions count back from the latest event, padding is masked,
    and h_next reads the latest known event."""
    config = make_config("tiny", dropout=0.0, max_history=8)
    tf.keras.utils.set_random_seed(0)
    model = StarsModel(_catalog(), config, num_event_types=3)
    short = _encode_inputs([[-1, 3, 7, 11], [-1, -1, -1, -1]])
    long_ = _encode_inputs([[-1, -1, -1, -1, -1, 3, 7, 11], [-1] * 8])
    _, gen_s, next_s = model.encode(short)
    hidden_l, gen_l, next_l = model.encode(long_)
    np.testing.assert_allclose(next_s.numpy(), next_l.numpy(), atol=1e-5)
    np.testing.assert_allclose(gen_s.numpy(), gen_l.numpy(), atol=1e-5)
    np.testing.assert_allclose(next_l.numpy()[0], hidden_l.numpy()[0, -1], atol=1e-6)
    # Empty history: h_next falls back to the [USER] state, which equals h_gen.
    np.testing.assert_allclose(next_l.numpy()[1], gen_l.numpy()[1], atol=1e-6)
    # An unknown item after the history: h_next still reads item 11's position. Its
    # position counter differs (the unknown one takes position 0 = padding), so compare
    # against the state at the latest known position.
    trailing = _encode_inputs([[-1, -1, -1, -1, 3, 7, 11, -1]])
    hidden_t, _, next_t = model.encode(trailing)
    np.testing.assert_allclose(next_t.numpy()[0], hidden_t.numpy()[0, 7], atol=1e-6)
