"""Semantic item tokens (STARS §4.1): x_i = W [e_i + δ_i ; g(t_i)], δ's freeze and cold start."""
import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from models.config import make_config
from models.item_catalog import ItemCatalog
from models.item_tokens import ItemTokenizer
from models.schedule import make_optimizer
from models.stars_model import DeltaUnfreeze, StarsModel

NUM_ITEMS, TEXT_DIM, NUM_TAGS, L = 40, 16, 6, 6
COLD = np.arange(32, 40)  # items nobody interacted with: counts 0


def _catalog(seed=0):
    rng = np.random.default_rng(seed)
    text = rng.normal(size=(NUM_ITEMS, TEXT_DIM)).astype(np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    tags = (rng.random((NUM_ITEMS, NUM_TAGS)) < 0.3).astype(np.float32)
    subclass = (np.arange(NUM_ITEMS) % 5).astype(np.int32)
    counts = np.full(NUM_ITEMS, 7.0, np.float32)
    counts[COLD] = 0.0
    return ItemCatalog(np.array([f"item{i}" for i in range(NUM_ITEMS)]), text, tags, subclass,
                       subclass // 2, counts, np.ones(NUM_ITEMS, np.int32))


def _inputs(histories, targets):
    """Model inputs as InputAdapter makes them (left-padded, -1 = padding)."""
    batch = len(histories)
    items = np.full((batch, L), -1, np.int32)
    for b, h in enumerate(histories):
        h = h[-L:]
        items[b, L - len(h):] = h
    valid = items >= 0
    target = np.array([t[0] if t else -1 for t in targets], np.int32)
    out = {"items": items, "valid": valid,
           "position": np.where(valid, L - np.arange(L)[None], 0).astype(np.int64),
           "targets": tf.ragged.constant(targets, dtype=tf.int32, ragged_rank=1),
           "target": target,
           "next_items": np.concatenate([items[:, 1:], target[:, None]], 1),
           "next_pools": tf.RaggedTensor.from_row_lengths(tf.zeros([0], tf.int32),
                                                          tf.zeros([batch * L], tf.int64)),
           "user": {}}
    for name, value in (("event_type_id", 1), ("recency_bucket", 2), ("hour", 9),
                        ("day_of_week", 3), ("week_of_year", 20), ("holiday", 0)):
        out[name] = np.where(valid, value, 0).astype(np.int64)
    for name in ("hour", "day_of_week", "week_of_year", "holiday"):
        out[f"target_{name}"] = np.full(batch, out[name][0, -1], np.int64)
        out[f"next_{name}"] = np.concatenate([out[name][:, 1:], out[f"target_{name}"][:, None]], 1)
    return {k: tf.constant(v) if isinstance(v, np.ndarray) else v for k, v in out.items()}


def _warm_batch(rng, batch=16):
    """Histories and targets of warm items only (the cold ones are never interacted with)."""
    warm = np.setdiff1d(np.arange(NUM_ITEMS), COLD)
    histories = [list(rng.choice(warm, size=rng.integers(2, L + 1), replace=False))
                 for _ in range(batch)]
    return _inputs(histories, [[int(rng.choice(warm))] for _ in range(batch)])


def _tokens(tokenizer, indices=None):
    indices = np.arange(NUM_ITEMS) if indices is None else indices
    return tokenizer(tf.constant(indices)).numpy()


def test_fresh_token_is_the_token_of_text_and_tags_alone():
    catalog = _catalog()
    tokenizer = ItemTokenizer(catalog, make_config("tiny"))
    tokens = _tokens(tokenizer)
    np.testing.assert_array_equal(tokenizer.delta_raw.numpy(), 0.0)
    expected = tokenizer.token_projection(tf.concat(
        [catalog.text_embedding, tokenizer.tag_projection(catalog.tag_multi_hot)], -1)).numpy()
    np.testing.assert_allclose(tokens, expected, rtol=1e-6, atol=1e-6)
    # Opening the gate changes nothing until δ is trained: δ starts at zero.
    tokenizer.delta_gate.assign(1.0)
    np.testing.assert_allclose(_tokens(tokenizer), expected, rtol=1e-6, atol=1e-6)
    assert tokens.shape == (NUM_ITEMS, make_config("tiny").d_model)


def test_tokens_of_any_index_shape():
    tokenizer = ItemTokenizer(_catalog(), make_config("tiny"))
    all_tokens = tokenizer.all_tokens().numpy()
    grid = tokenizer(tf.constant([[3, 5], [5, 0]])).numpy()
    np.testing.assert_allclose(grid[0, 1], all_tokens[5], atol=1e-6)
    np.testing.assert_allclose(grid[1, 0], all_tokens[5], atol=1e-6)


def test_delta_frozen_then_trained_and_cold_items_keep_zero():
    """δ does not move during the frozen epoch, moves once DeltaUnfreeze opens the gate,
    and items without training interactions keep δ = 0 throughout (cold start)."""
    config = make_config("tiny", dropout=0.0, delta_frozen_epochs=1, max_history=L)
    tf.keras.utils.set_random_seed(0)
    model = StarsModel(_catalog(), config, num_event_types=3)
    rng = np.random.default_rng(0)
    batches = [_warm_batch(rng) for _ in range(2)]
    data = tf.data.Dataset.from_tensors(batches[0]).concatenate(
        tf.data.Dataset.from_tensors(batches[1]))
    all_items = tf.range(NUM_ITEMS)
    snapshots = []

    class Snapshot(tf.keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            snapshots.append((float(model.items.delta_gate.numpy()),
                              model.items.delta_raw.numpy().copy(),
                              model.items.delta(all_items).numpy(),
                              kernel()))

    def kernel():
        return model.items.token_projection.kernel.numpy().copy()

    # run_eagerly: two tiny epochs, no multi-second autograph tracing.
    model.compile(optimizer=make_optimizer(config, 4), run_eagerly=True)
    model.item_embeddings(all_items)  # build, to snapshot the initial token projection
    initial_kernel = kernel()
    model.fit(data, epochs=2, verbose=0, callbacks=[DeltaUnfreeze(1), Snapshot()])

    (gate1, raw1, delta1, kernel1), (gate2, raw2, delta2, _) = snapshots
    # Epoch 1 (frozen): the rest of the model trained, δ stayed exactly zero.
    assert gate1 == 0.0
    assert np.abs(kernel1 - initial_kernel).max() > 0
    np.testing.assert_array_equal(raw1, 0.0)
    np.testing.assert_array_equal(delta1, 0.0)
    # Epoch 2 (unfrozen): the warm items' δ moved ...
    assert gate2 == 1.0
    warm = np.setdiff1d(np.arange(NUM_ITEMS), COLD)
    moved = np.abs(delta2[warm]).max(axis=1) > 0
    assert moved.mean() > 0.5, moved
    # ... at the reduced scale: δ = delta_lr_scale · δ_raw.
    np.testing.assert_allclose(delta2[warm], config.delta_lr_scale * raw2[warm], rtol=1e-6)
    # Cold items (counts 0) keep δ = 0 exactly, although they were sampled as negatives.
    np.testing.assert_array_equal(delta2[COLD], 0.0)
    # A cold item's token is still its text-and-tags token.
    tokens = model.items(tf.constant(COLD)).numpy()
    items = model.items
    expected = items.token_projection(tf.concat(
        [tf.gather(items.text_embedding, COLD),
         items.tag_projection(tf.gather(items.tags, COLD))], -1)).numpy()
    np.testing.assert_allclose(tokens, expected, rtol=1e-5, atol=1e-6)


def test_frozen_delta_gets_no_gradient_and_unfrozen_cold_rows_neither():
    config = make_config("tiny", dropout=0.0, max_history=L)
    tf.keras.utils.set_random_seed(0)
    model = StarsModel(_catalog(), config, num_event_types=3)
    batch = _warm_batch(np.random.default_rng(1))

    def delta_gradient():
        with tf.GradientTape() as tape:
            loss = model.compute_loss(batch, training=True)
        grad = tape.gradient(loss, model.items.delta_raw)
        return tf.convert_to_tensor(grad).numpy()

    model.compute_loss(batch)  # build
    np.testing.assert_array_equal(delta_gradient(), 0.0)  # gate 0: frozen
    model.items.delta_gate.assign(1.0)
    grad = delta_gradient()
    assert np.abs(grad[np.setdiff1d(np.arange(NUM_ITEMS), COLD)]).max() > 0
    np.testing.assert_array_equal(grad[COLD], 0.0)


def test_no_text_is_an_id_embedding_model():
    catalog = _catalog()
    config = make_config("tiny", "stars_no_text")
    assert not config.use_text and config.use_delta and config.delta_frozen_epochs == 0
    tf.keras.utils.set_random_seed(0)
    tokenizer = ItemTokenizer(catalog, config)
    tokens = _tokens(tokenizer)
    # No text: e_i is all zero and the residual becomes a (non-zero-initialised) ID embedding,
    # open from the start.
    np.testing.assert_array_equal(tokenizer.text_embedding.numpy(), 0.0)
    assert tokenizer.text_embedding.shape[1] == config.d_model
    assert float(tokenizer.delta_gate.numpy()) == 1.0
    delta = tokenizer.delta(tf.range(NUM_ITEMS)).numpy()
    warm = np.setdiff1d(np.arange(NUM_ITEMS), COLD)
    assert (np.abs(delta[warm]).max(axis=1) > 0).all()
    # Two warm items with identical tags still get different tokens (their ID rows differ).
    catalog.tag_multi_hot[1] = catalog.tag_multi_hot[0]
    tokenizer.tags.assign(catalog.tag_multi_hot)
    tokens = _tokens(tokenizer)
    assert np.abs(tokens[0] - tokens[1]).max() > 1e-4
    # The text embeddings of the catalogue are not used at all.
    other = _catalog(seed=5)
    tokenizer_other = ItemTokenizer(other, config)
    np.testing.assert_array_equal(tokenizer_other.text_embedding.numpy(), 0.0)


def test_no_tags_ignores_tags():
    catalog = _catalog()
    changed = catalog.tag_multi_hot.copy()
    changed[3] = 1.0 - changed[3]
    changed[7] = 1.0
    for use_tags in (False, True):
        tokenizer = ItemTokenizer(catalog, make_config("tiny", use_tags=use_tags))
        before = _tokens(tokenizer)
        tokenizer.tags.assign(changed)
        after = _tokens(tokenizer)
        if use_tags:  # contrast: with tags on, the changed rows' tokens change
            assert np.abs(after[3] - before[3]).max() > 1e-4
            assert np.abs(after[7] - before[7]).max() > 1e-4
        else:
            np.testing.assert_array_equal(after, before)
    # Without tags the projection's input is the semantic part alone.
    tokenizer = ItemTokenizer(catalog, make_config("tiny", use_tags=False))
    _tokens(tokenizer)
    assert tokenizer.token_projection.kernel.shape[0] == TEXT_DIM


def test_tag_mlp_projection():
    catalog = _catalog()
    tokenizer = ItemTokenizer(catalog, make_config("tiny", tag_mlp=True))
    tokens = _tokens(tokenizer)
    assert np.isfinite(tokens).all()
    assert len(tokenizer.tag_projection.layers) == 2


def test_delta_dropout_drops_whole_items_in_training_only():
    config = make_config("tiny", delta_frozen_epochs=0, delta_lr_scale=1.0, delta_dropout=0.5)
    tokenizer = ItemTokenizer(_catalog(), config)
    tokenizer.build(None)
    rng = np.random.default_rng(1)
    tokenizer.delta_raw.assign(rng.normal(size=tokenizer.delta_raw.shape).astype(np.float32))
    warm = np.setdiff1d(np.arange(NUM_ITEMS), COLD)
    with_delta = tokenizer(warm).numpy()
    bare = ItemTokenizer(_catalog(), config.replace(use_delta=False))
    bare.token_projection = tokenizer.token_projection
    bare.tag_projection = tokenizer.tag_projection
    without_delta = bare(warm).numpy()
    # Inference keeps every δ.
    np.testing.assert_allclose(tokenizer(warm, training=False).numpy(), with_delta, rtol=1e-6)
    tf.random.set_seed(3)
    # Each item appears twice in one call: both copies share the item's draw.
    dropped = tokenizer(np.concatenate([warm, warm]), training=True).numpy()
    first, second = dropped[:len(warm)], dropped[len(warm):]
    np.testing.assert_allclose(first, second, rtol=1e-6)
    kept = np.isclose(first, with_delta, atol=1e-6).all(axis=1)
    gone = np.isclose(first, without_delta, atol=1e-6).all(axis=1)
    assert (kept | gone).all() and kept.any() and gone.any()


def test_delta_dropout_must_be_a_rate():
    import pytest
    for rate in (-0.1, 1.0):
        with pytest.raises(ValueError, match="delta_dropout"):
            ItemTokenizer(_catalog(), make_config("tiny", delta_dropout=rate))


def test_standardised_text_is_centred_and_scaled_per_dimension_over_the_catalogue():
    catalog = _catalog()
    text = catalog.text_embedding.copy()
    text[:, 3] = 0.25  # a constant dimension keeps scale 1 (no division by zero)
    catalog = dataclasses.replace(catalog, text_embedding=text)
    config = make_config("tiny", use_tags=False, use_delta=False, text_standardize=True)
    tokens = ItemTokenizer(catalog, config)
    projected = tokens.all_tokens().numpy()
    std = text.std(0)
    reference = (text - text.mean(0)) / np.where(std > 1e-8, std, 1.0)
    reference[:, 3] = 0.0
    expected = tokens.token_projection(reference.astype(np.float32)).numpy()
    np.testing.assert_allclose(projected, expected, rtol=1e-4, atol=1e-5)
    # Off (the default): the raw embedding goes in.
    plain = ItemTokenizer(catalog, config.replace(text_standardize=False))
    projected = plain.all_tokens().numpy()
    np.testing.assert_allclose(projected, plain.token_projection(text).numpy(), rtol=1e-5,
                               atol=1e-6)


def test_id_only_token_is_delta_itself():
    """Without text or tags (the ID-only SASRec) the token is SASRec's embedding table, δ,
    with no projection; a never-seen item has δ = 0."""
    config = make_config("tiny", use_text=False, use_tags=False, delta_frozen_epochs=0,
                         delta_lr_scale=1.0)
    tokenizer = ItemTokenizer(_catalog(), config)
    tokenizer.build(None)
    rng = np.random.default_rng(2)
    delta = rng.normal(size=tokenizer.delta_raw.shape).astype(np.float32)
    tokenizer.delta_raw.assign(delta)
    expected = delta.copy()
    expected[COLD] = 0.0
    np.testing.assert_allclose(tokenizer.all_tokens().numpy(), expected, rtol=1e-6)
    assert [v.name for v in tokenizer.trainable_variables] == ["delta_raw:0"]
    with pytest.raises(ValueError, match="text, tags or δ"):
        ItemTokenizer(_catalog(), config.replace(use_delta=False))
