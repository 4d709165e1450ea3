"""StarsModel end to end on small synthetic catalogues (spec §2–§5).

The model inputs are built here directly, in the form InputAdapter produces them
(see tests/test_inputs.py). Training drives ``train_step`` through a
``tf.function`` traced without autograph: the model's ops need no autograph
conversion, and converting the Keras internals would cost tens of seconds of
tracing on a 2-core machine.
"""
import contextlib
import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from models import calendar
from models.config import ABLATIONS, make_config
from models.item_catalog import ItemCatalog
from models.item_trend import trend_table
from models.schedule import make_optimizer
from models.stars_model import StarsModel, history_so_far

TEXT_DIM, NUM_TAGS, L = 16, 6, 8
CONTEXT = ("hour", "day_of_week", "week_of_year", "holiday")
USER_VOCAB = {"user_cat_region": 3}


def _unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _catalog(text, subclass, counts, seed=0):
    rng = np.random.default_rng(seed)
    n = len(text)
    return ItemCatalog(np.array([f"item{i}" for i in range(n)]), _unit(text),
                       (rng.random((n, NUM_TAGS)) < 0.3).astype(np.float32),
                       np.asarray(subclass, np.int32), np.asarray(subclass, np.int32) // 2,
                       np.asarray(counts, np.float32), np.ones(n, np.int32))


def _inputs(histories, targets, context=(9, 3, 20, 0), pages=None):
    """Model inputs as InputAdapter makes them: left-padded histories (-1 = padding or
    unknown item), per-position next items and contexts, ragged targets and pools."""
    batch = len(histories)
    items = np.full((batch, L), -1, np.int32)
    for b, h in enumerate(histories):
        h = list(h)[-L:]
        items[b, L - len(h):] = h
    valid = items >= 0
    target = np.array([t[0] if len(t) else -1 for t in targets], np.int32)
    out = {"items": items, "valid": valid,
           "position": np.where(valid, L - np.arange(L)[None], 0).astype(np.int64),
           "event_type_id": np.where(valid, 1 + np.arange(L)[None] % 2, 0).astype(np.int64),
           "recency_bucket": np.where(valid, np.arange(L)[None] % 4, 0).astype(np.int64),
           "targets": tf.ragged.constant([list(t) for t in targets], dtype=tf.int32,
                                         ragged_rank=1, inner_shape=()),
           "target": target,
           "next_items": np.concatenate([items[:, 1:], target[:, None]], 1),
           "user": {"user_cat_region_id": tf.constant(np.arange(batch) % 3, tf.int64)}}
    if pages is None:
        pages = [[] for _ in range(batch * L)]
    out["next_pools"] = tf.ragged.constant(pages, dtype=tf.int32, ragged_rank=1, inner_shape=())
    # Event times: a day apart, the latest a day before the request (day 100).
    times = np.where(valid, (100 - (L - np.arange(L)[None])) * 86400, 0).astype(np.int64)
    out["target_timestamp"] = np.full(batch, 100 * 86400, np.int64)
    out["next_timestamp"] = np.concatenate([times[:, 1:], out["target_timestamp"][:, None]], 1)
    for name, value in zip(CONTEXT, context):
        out[name] = np.where(valid, value, 0).astype(np.int64)
        out[f"target_{name}"] = np.full(batch, value, np.int64)
        out[f"next_{name}"] = np.concatenate([out[name][:, 1:], out[f"target_{name}"][:, None]], 1)
    return {k: tf.constant(v) if isinstance(v, np.ndarray) else v for k, v in out.items()}


def _log_softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def _model(catalog, config, trend=None):
    tf.keras.utils.set_random_seed(config.seed)
    return StarsModel(catalog, config, num_event_types=3, user_vocab_sizes=USER_VOCAB,
                      trend=trend)


def _train(model, config, batches, steps, unfreeze_at=None):
    """Runs ``steps`` compiled train steps cycling over ``batches``; the per-step losses."""
    model.compile(optimizer=make_optimizer(config, steps))
    # Build the layers and the optimiser's slots first, so the step is traced only once
    # (a first trace that creates variables is traced again).
    model.loss_parts(batches[0])
    model.optimizer.build(model.trainable_variables)
    step = tf.function(model.train_step, autograph=False, reduce_retracing=True)
    history = []
    with _no_graph_rewrites():
        for i in range(steps):
            if unfreeze_at is not None and i == unfreeze_at:
                model.items.delta_gate.assign(1.0)  # what DeltaUnfreeze does at an epoch start
            parts = step(batches[i % len(batches)])
            history.append({k: float(v) for k, v in parts.items()})
    return history


@contextlib.contextmanager
def _no_graph_rewrites():
    """Grappler's rewrites of the train-step graph take longer than 100 tiny steps."""
    previous = tf.config.optimizer.get_experimental_options()
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    try:
        yield
    finally:
        tf.config.optimizer.set_experimental_options(
            {"disable_meta_optimizer": previous.get("disable_meta_optimizer", False)})


def _scores(model, inputs, head="next"):
    gen, nxt = model.user_embeddings(inputs)
    query = nxt if head == "next" else gen
    return query.numpy() @ model.item_embeddings().numpy().T


# ---- (a) the loss falls and NI learns a planted next-item pattern ------------------------
CHAIN_ITEMS, CHAIN_SUBCLASSES = 50, 5
PER_SUBCLASS = CHAIN_ITEMS // CHAIN_SUBCLASSES


def _successor(i):
    """Planted pattern: item i is followed by the next item of its subclass (cyclically)."""
    return (i // PER_SUBCLASS) * PER_SUBCLASS + (i % PER_SUBCLASS + 1) % PER_SUBCLASS


def _chain_batch(rng, batch):
    histories, targets = [], []
    for _ in range(batch):
        h = [int(rng.integers(CHAIN_ITEMS))]
        for _ in range(int(rng.integers(1, L))):
            h.append(_successor(h[-1]))
        histories.append(h)
        targets.append([_successor(h[-1]), _successor(_successor(h[-1]))])
    return histories, targets


def test_loss_falls_and_next_item_is_retrieved():
    rng = np.random.default_rng(0)
    text = rng.normal(size=(CHAIN_ITEMS, TEXT_DIM))
    catalog = _catalog(text, np.arange(CHAIN_ITEMS) // PER_SUBCLASS,
                       np.full(CHAIN_ITEMS, 5.0))
    config = make_config("tiny", dropout=0.0, max_history=L)
    model = _model(catalog, config)
    batches = [_inputs(*_chain_batch(rng, 32)) for _ in range(8)]
    history = _train(model, config, batches, steps=100, unfreeze_at=50)

    first = np.mean([h["loss_next"] for h in history[:3]])
    last = np.mean([h["loss_next"] for h in history[-10:]])
    assert all(np.isfinite(h["loss"]) for h in history)
    assert last < 0.5 * first, (first, last)

    histories, _ = _chain_batch(np.random.default_rng(99), 64)
    expected = np.array([_successor(h[-1]) for h in histories])
    scores = _scores(model, _inputs(histories, [[int(e)] for e in expected]))
    top5 = np.argsort(-scores, axis=1)[:, :5]
    hit = np.mean([e in row for e, row in zip(expected, top5)])
    assert hit >= 0.7, hit


# ---- (b) cold start: unseen items are retrieved from their text ---------------------------
GROUPS, WARM_PER_GROUP, COLD_PER_GROUP = 6, 6, 2
PER_GROUP = WARM_PER_GROUP + COLD_PER_GROUP


def _cold_start_setup():
    """Groups of items with similar text; the last items of each group are cold (count 0,
    never in any history or target). Users' histories and targets are warm items of one
    group. Returns (catalog, item group, cold mask, training batches, probe inputs, the
    probe users' groups)."""
    rng = np.random.default_rng(1)
    centroids = _unit(rng.normal(size=(GROUPS, TEXT_DIM)))
    group = np.repeat(np.arange(GROUPS), PER_GROUP)
    text = centroids[group] + 0.2 * _unit(rng.normal(size=(len(group), TEXT_DIM)))
    cold = np.tile(np.arange(PER_GROUP) >= WARM_PER_GROUP, GROUPS)
    catalog = _catalog(text, group, np.where(cold, 0.0, 10.0), seed=1)

    def users(rng, groups):
        histories, targets = [], []
        for g in groups:
            warm = np.flatnonzero((group == g) & ~cold)
            histories.append([int(i) for i in rng.choice(warm, size=int(rng.integers(3, L + 1)))])
            targets.append([int(rng.choice(warm))])
        return _inputs(histories, targets)

    rng = np.random.default_rng(2)
    batches = [users(rng, rng.integers(0, GROUPS, 32)) for _ in range(6)]
    probe_groups = np.repeat(np.arange(GROUPS), 4)
    return catalog, group, cold, batches, users(rng, probe_groups), probe_groups


def _own_vs_other_cold(scores, group, cold, user_groups):
    """For each user: (own group's cold items in the top-10, other groups' cold items in the
    top-10, own cold item scored above another group's cold item) as flat boolean lists."""
    cold_items = np.flatnonzero(cold)
    top10 = np.argsort(-scores, axis=1)[:, :10]
    own_hits, other_hits, pairs = [], [], []
    for u, g in enumerate(user_groups):
        own = cold_items[group[cold_items] == g]
        other = cold_items[group[cold_items] != g]
        own_hits += [c in top10[u] for c in own]
        other_hits += [c in top10[u] for c in other]
        pairs += [scores[u, a] > scores[u, b] for a in own for b in other]
    return np.mean(own_hits), np.mean(other_hits), np.mean(pairs)


def test_cold_start_items_retrieved_from_text_but_not_by_id_only_model():
    """Popularity prior off (α = 0, as in the paper's ablation table)."""
    catalog, group, cold, batches, probe, user_groups = _cold_start_setup()
    config = make_config("tiny", dropout=0.0, max_history=L, alpha=0.0)
    model = _model(catalog, config)
    _train(model, config, batches, steps=100, unfreeze_at=50)
    np.testing.assert_array_equal(model.items.delta(tf.constant(np.flatnonzero(cold))), 0.0)
    own, other, pairs = _own_vs_other_cold(_scores(model, probe), group, cold, user_groups)
    # The user's own group's cold items (never trained, δ = 0) are in its top-10 of the
    # 48 items; other groups' cold items are not.
    assert own >= 0.8, own
    assert other <= 0.1, other
    assert pairs >= 0.95, pairs

    # Contrast, ID-only (SASRec-style: no text, no tags): a cold item has no trained ID
    # embedding (δ masked to 0), so every cold item gets the same embedding and the same
    # score for every user: the model cannot tell one user's cold items from another's.
    id_config = make_config("tiny", "sasrec_id", dropout=0.0, max_history=L)
    id_model = _model(catalog, id_config)
    id_model.compile(optimizer=make_optimizer(id_config, 3))
    for batch in batches[:3]:
        id_model.train_step(batch)
    cold_items, warm_items = np.flatnonzero(cold), np.flatnonzero(~cold)
    id_items = id_model.item_embeddings().numpy()
    np.testing.assert_allclose(id_items[cold_items],
                               np.repeat(id_items[cold_items[:1]], len(cold_items), 0),
                               rtol=1e-6, atol=1e-6)
    assert np.abs(id_items[warm_items] - id_items[warm_items[:1]]).max() > 1e-4
    id_scores = _scores(id_model, probe)[:, cold_items]
    np.testing.assert_allclose(id_scores, np.repeat(id_scores[:, :1], len(cold_items), 1),
                               rtol=1e-5, atol=1e-5)


def test_cold_start_with_popularity_prior_ranks_own_group_cold_items_first():
    """Default α = 1. Cold items are sampled as (same-subclass) negatives with the largest
    −α·log p boost, so training pushes their scores down and the absolute top-10 rate is
    lower than with α = 0; their ORDER still follows the text: for a user, the own group's
    cold items outscore other groups' cold items."""
    catalog, group, cold, batches, probe, user_groups = _cold_start_setup()
    config = make_config("tiny", dropout=0.0, max_history=L)
    assert config.alpha == 1.0
    model = _model(catalog, config)
    _train(model, config, batches, steps=100, unfreeze_at=50)
    own, other, pairs = _own_vs_other_cold(_scores(model, probe), group, cold, user_groups)
    assert pairs >= 0.9, pairs
    assert own > 3 * other, (own, other)


# ---- (c) objective variants and ablations ------------------------------------------------
def _small_setup(num_items=48, **overrides):
    rng = np.random.default_rng(4)
    catalog = _catalog(rng.normal(size=(num_items, TEXT_DIM)), np.arange(num_items) % 4,
                       rng.integers(0, 20, num_items))
    histories = [list(rng.integers(0, num_items, int(rng.integers(1, L + 1))))
                 for _ in range(8)]
    histories[0] = histories[0][:-1] + [-1]  # an unknown item at the end
    targets = [list(rng.integers(0, num_items, int(rng.integers(1, 3)))) for _ in range(8)]
    targets[1] = []  # no known target
    pages = [list(rng.integers(0, num_items, int(rng.integers(0, 6)))) for _ in range(8 * L)]
    return catalog, _inputs(histories, targets, pages=pages)


@pytest.mark.parametrize("overrides", [{"alpha": 0.0}, {"full_softmax": True},
                                       {"full_softmax": True, "alpha": 0.0}, {},
                                       {"mask_history": True},
                                       {"full_softmax": True, "mask_history": True}])
def test_loss_paths_are_finite(overrides):
    catalog, inputs = _small_setup()
    config = make_config("tiny", max_history=L, **overrides)
    parts = _model(catalog, config).loss_parts(inputs, training=True)
    assert {"loss", "loss_next", "loss_gen"} <= set(parts)
    for name, value in parts.items():
        assert np.isfinite(value.numpy()), (name, value)
    np.testing.assert_allclose(parts["loss"].numpy(),
                               (parts["loss_next"] + parts["loss_gen"]).numpy(), rtol=1e-6)


def test_history_so_far_holds_each_positions_past_items():
    items = np.array([[-1, 3, 5, 3], [2, 4, 8, 6]])
    valid = np.array([[False, True, True, True], [True, False, True, True]])  # 4: unknown
    want = np.array([[[-1 if j > t or not valid[b, j] else items[b, j] for j in range(4)]
                      for t in range(4)] for b in range(2)])
    np.testing.assert_array_equal(history_so_far(items, valid).numpy(), want)


def test_mask_history_takes_each_positions_past_items_out_of_its_softmax():
    """L_next against a numpy reference: every known position's full softmax over the
    catalogue with the items it has already seen removed (its own target kept)."""
    catalog, inputs = _small_setup()
    config = make_config("tiny", max_history=L, full_softmax=True, alpha=0.0,
                         use_context=False, lambda_gen=0.0, mask_history=True)
    model = _model(catalog, config)
    got = float(model.loss_parts(inputs)["loss_next"])
    hidden = model.encode(inputs)[0].numpy()[:, 1:]
    queries = model.next_head(hidden.reshape(-1, hidden.shape[-1])).numpy()
    items = model.item_embeddings().numpy()
    seq, valid = inputs["items"].numpy(), inputs["valid"].numpy()
    targets = inputs["next_items"].numpy()
    per_row, masked = [], 0
    for b in range(seq.shape[0]):
        for t in range(L):
            if not valid[b, t] or targets[b, t] < 0:
                continue
            logits = queries[b * L + t] @ items.T
            seen = {int(i) for i, ok in zip(seq[b, :t + 1], valid[b, :t + 1]) if ok}
            seen.discard(int(targets[b, t]))
            masked += len(seen)
            logits[list(seen)] = -np.inf
            per_row.append(-_log_softmax(logits[None])[0, targets[b, t]])
    assert masked > 0
    np.testing.assert_allclose(got, np.mean(per_row), rtol=1e-4)
    model.config = config.replace(mask_history=False)  # same weights, every item competing
    assert float(model.loss_parts(inputs)["loss_next"]) > got


def _trend(num_items, seed=5):
    """A trend table over random events in the 100 days before the requests."""
    rng = np.random.default_rng(seed)
    return trend_table(rng.integers(0, num_items, 300), rng.integers(0, 100, 300) * 86400,
                       num_items, period_s=7 * 86400, window=2)


def test_item_trend_adds_beta_times_the_request_periods_trend_to_every_logit():
    """L_next and L_gen against a numpy reference: full softmax over h·w_j + β·trend_j(t),
    t = each softmax row's own request time (the next event's, or the example's)."""
    catalog, inputs = _small_setup()
    trend = _trend(len(catalog))
    config = make_config("tiny", max_history=L, full_softmax=True, alpha=0.0,
                         use_context=False, item_trend=True)
    model = _model(catalog, config, trend)
    model.loss_parts(inputs)
    model.item_trend.beta.assign(0.8)
    parts = model.loss_parts(inputs)
    hidden, gen, _ = model.encode(inputs)
    hidden = hidden.numpy()[:, 1:]
    queries = model.next_head(hidden.reshape(-1, hidden.shape[-1])).numpy()
    items = model.item_embeddings().numpy()
    targets, valid = inputs["next_items"].numpy(), inputs["valid"].numpy()
    times = inputs["next_timestamp"].numpy()
    rows = []
    for b in range(targets.shape[0]):
        for t in range(L):
            if valid[b, t] and targets[b, t] >= 0:
                logits = queries[b * L + t] @ items.T + 0.8 * trend.rows[trend.row_of(times[b, t])]
                rows.append(-_log_softmax(logits[None])[0, targets[b, t]])
    np.testing.assert_allclose(float(parts["loss_next"]), np.mean(rows), rtol=1e-4)
    gen_q = model.gen_head(gen).numpy()
    gen_rows = []
    for b, future in enumerate(inputs["targets"].to_list()):
        request = inputs["target_timestamp"].numpy()[b]
        for target in future:
            logits = gen_q[b] @ items.T + 0.8 * trend.rows[trend.row_of(request)]
            gen_rows.append(-_log_softmax(logits[None])[0, target])
    np.testing.assert_allclose(float(parts["loss_gen"]), np.mean(gen_rows), rtol=1e-4)
    # What the rankings add to h·w_j: the same term, at the request's time.
    prior = model.item_prior(inputs["target_timestamp"]).numpy()
    np.testing.assert_allclose(prior[0], 0.8 * trend.rows[trend.row_of(100 * 86400)], rtol=1e-6)
    # The sampled softmax gets the term too, and β trains.
    sampled = _model(catalog, config.replace(full_softmax=False), trend)
    sampled.compile(optimizer=make_optimizer(config, 10))
    sampled.loss_parts(inputs)
    assert np.isfinite(sampled.train_step(inputs)["loss"].numpy())
    assert float(sampled.item_trend.beta.numpy()) != 0.0


def test_item_trend_needs_its_table_and_is_off_elsewhere():
    catalog, _ = _small_setup()
    with pytest.raises(ValueError, match="trend table"):
        _model(catalog, make_config("tiny", item_trend=True))
    model = _model(catalog, make_config("tiny"))
    assert model.item_trend is None and model.item_prior(tf.constant([0])) is None
    assert make_config("benchmark").item_trend
    assert not make_config("benchmark", "stars_no_context").item_trend
    assert not make_config("benchmark", "sasrec_plain").item_trend
    assert make_config("benchmark", "sasrec_id").item_trend


def test_lambda_neg_and_lambda_aux_add_terms():
    catalog, inputs = _small_setup()
    base = make_config("tiny", max_history=L)
    parts = _model(catalog, base).loss_parts(inputs, training=True)
    assert "loss_neg" not in parts and "loss_aux" not in parts

    config = base.replace(lambda_neg=0.5, lambda_aux=0.25, lambda_gen=0.7)
    parts = {k: float(v) for k, v in _model(catalog, config).loss_parts(inputs).items()}
    assert parts["loss_neg"] > 0 and parts["loss_aux"] > 0
    assert all(np.isfinite(v) for v in parts.values())
    np.testing.assert_allclose(parts["loss"], parts["loss_next"] + 0.7 * parts["loss_gen"]
                               + 0.5 * parts["loss_neg"] + 0.25 * parts["loss_aux"], rtol=1e-5)

    # lambda_gen = 0: the GI term is dropped entirely.
    parts = _model(catalog, base.replace(lambda_gen=0.0)).loss_parts(inputs)
    assert "loss_gen" not in parts
    np.testing.assert_allclose(parts["loss"].numpy(), parts["loss_next"].numpy())


@pytest.mark.parametrize("variant", sorted(ABLATIONS))
def test_every_ablation_builds_and_trains_one_step(variant):
    catalog, inputs = _small_setup()
    config = make_config("tiny", variant, max_history=L)
    model = _model(catalog, config)
    model.compile(optimizer=make_optimizer(config, 10))
    model.loss_parts(inputs)  # build every layer the variant uses
    before = [v.numpy().copy() for v in model.trainable_variables]
    parts = model.train_step(inputs)
    assert np.isfinite(parts["loss"].numpy())
    after = [v.numpy() for v in model.trainable_variables]
    assert any(np.abs(a - b).max() > 0 for a, b in zip(after, before))
    gen, nxt = model.user_embeddings(inputs)
    assert gen.shape == nxt.shape == (8, config.serving_dim)
    assert np.isfinite(gen.numpy()).all() and np.isfinite(nxt.numpy()).all()
    assert model.item_embeddings().shape == (len(catalog), config.serving_dim)


# ---- (d) the context offset Δ_ctx = W_c [τ(t); x(t, ℓ)] -----------------------------------
def _context(batch, week, holiday, hour, dow, signals=None):
    out = {"week_of_year": tf.constant([week] * batch, tf.int64),
           "holiday": tf.constant([holiday] * batch, tf.int64),
           "hour": tf.constant([hour] * batch, tf.int64),
           "day_of_week": tf.constant([dow] * batch, tf.int64)}
    if signals is not None:
        out["signals"] = tf.constant(signals, tf.float32)
    return out


def test_context_offset_zero_at_init_then_exactly_w_c_times_context():
    catalog, inputs = _small_setup()
    config = make_config("tiny", max_history=L)
    model = _model(catalog, config)
    rng = np.random.default_rng(5)
    signals = rng.normal(size=(8, 4)).astype(np.float32)
    plain = _context(8, 0, 0, 0, 0)
    busy = _context(8, 47, 6, 18, 5, signals)

    # W_c starts at zero: no context changes the user embeddings.
    gen0, next0 = model.user_embeddings(inputs, context=plain)
    gen1, next1 = model.user_embeddings(inputs, context=busy)
    np.testing.assert_array_equal(gen0.numpy(), gen1.numpy())
    np.testing.assert_array_equal(next0.numpy(), next1.numpy())
    np.testing.assert_array_equal(model.offset(busy).numpy(), 0.0)

    # Set W_c: the embeddings shift by exactly W_c [τ(t); x], the same for GI and NI.
    offset_layer = model.context_offset
    kernel = rng.normal(size=offset_layer.w_c.kernel.shape).astype(np.float32)
    offset_layer.w_c.kernel.assign(kernel)
    tau = offset_layer.tau.embeddings.numpy()[47]
    x = np.concatenate([tau, np.eye(calendar.HOLIDAY_BUCKETS)[6], np.eye(calendar.HOUR_BUCKETS)[18],
                        np.eye(calendar.DAY_OF_WEEK_BUCKETS)[5]])
    x = np.concatenate([np.repeat(x[None], 8, 0), signals], 1)
    expected = x @ kernel
    gen2, next2 = model.user_embeddings(inputs, context=busy)
    np.testing.assert_allclose((gen2 - gen0).numpy(), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose((next2 - next0).numpy(), expected, rtol=1e-4, atol=1e-5)
    # The backbone is untouched: the offset is only added.
    _, _, next_state = model.encode(inputs)
    np.testing.assert_allclose(model.next_head(next_state).numpy() + expected, next2.numpy(),
                               rtol=1e-5, atol=1e-5)
    # No signals given: zeros in their slots.
    no_signals = _context(8, 47, 6, 18, 5)
    np.testing.assert_allclose(model.offset(no_signals).numpy(),
                               np.repeat(x[:1, :-4], 8, 0) @ kernel[:-4], rtol=1e-4, atol=1e-5)
    # Default context of user_embeddings: the request's target_<context> features.
    target_ctx = {n: inputs[f"target_{n}"] for n in CONTEXT}
    np.testing.assert_allclose(model.user_embeddings(inputs)[1].numpy(),
                               model.user_embeddings(inputs, context=target_ctx)[1].numpy())


def test_no_context_variant_ignores_the_offset():
    catalog, inputs = _small_setup()
    config = make_config("tiny", "stars_no_context", max_history=L)
    model = _model(catalog, config)
    gen0, next0 = model.user_embeddings(inputs, context=_context(8, 0, 0, 0, 0))
    model.context_offset(_context(1, 0, 0, 0, 0))  # build W_c, then make it non-zero
    model.context_offset.w_c.kernel.assign(tf.ones_like(model.context_offset.w_c.kernel))
    gen1, next1 = model.user_embeddings(inputs, context=_context(8, 47, 6, 18, 5,
                                                                   np.ones((8, 4))))
    np.testing.assert_array_equal(gen0.numpy(), gen1.numpy())
    np.testing.assert_array_equal(next0.numpy(), next1.numpy())


@pytest.mark.parametrize("overrides", [{}, {"item_trend": True},
                                       {"item_trend": True, "full_softmax": True},
                                       {"item_trend": True, "semantic_match": True}])  # paper
def test_mixed_precision_trains_with_float32_losses(overrides):
    from models import trainer
    catalog, inputs = _small_setup()
    config = make_config("tiny", max_history=L, mixed_precision=True, **overrides)
    trend = _trend(len(catalog))
    meta = trainer.ModelMeta(
        num_event_types=3, user_numeric=[], user_vocab_sizes=USER_VOCAB,
        catalog_transformed_uri="", catalog_transform_graph_uri="", transform_graph_uri="")
    try:
        trainer.set_precision(config)
        model = trainer.build_model(catalog, config, meta.with_trend(trend), trend)
        assert tf.keras.mixed_precision.global_policy().compute_dtype in ("float16", "bfloat16")
        history = _train(model, config, [inputs], 2)
    finally:
        tf.keras.mixed_precision.set_global_policy("float32")
    assert all(np.isfinite(h["loss"]) for h in history)
    h_gen, h_next = model.user_embeddings(inputs)
    assert h_next.dtype == tf.float32 or np.all(np.isfinite(h_next.numpy().astype(np.float32)))
    assert h_next.shape[1] == model.item_embeddings().shape[1]  # the same serving space


@pytest.mark.parametrize("variant", ["sasrec_id", "sasrec_plain", "stars"])
def test_trainer_fit_runs_with_the_delta_callback(variant):
    """models.trainer.train (the Trainer's loop) from a fresh model: δ unfrozen at epoch 0
    for the ID-only variants (delta_frozen_epochs = 0), after epoch 1 for STARS."""
    from models import trainer
    catalog, inputs = _small_setup()
    config = make_config("tiny", variant, max_history=L, epochs=2, early_stopping_patience=1)
    model = _model(catalog, config)
    data = tf.data.Dataset.from_tensors(inputs)
    with _no_graph_rewrites():
        history = trainer.train(model, config, data, data, total_steps=2, verbose=0)
    assert len(history.history["loss_next"]) == 2
    assert float(model.items.delta_gate.numpy()) == 1.0


def test_cold_item_norm_rescales_only_never_seen_items_outside_training():
    catalog, _ = _small_setup()
    cold = np.asarray(catalog.counts) <= 0
    assert cold.any() and not cold.all()
    model = _model(catalog, make_config("tiny", max_history=L))
    raw = model.item_embeddings().numpy()
    model.cold_item_norm.assign(2.5)
    calibrated = model.item_embeddings().numpy()
    np.testing.assert_allclose(np.linalg.norm(calibrated[cold], axis=1), 2.5, rtol=1e-5)
    np.testing.assert_allclose(_unit(calibrated[cold]), _unit(raw[cold]), atol=1e-6)
    np.testing.assert_array_equal(calibrated[~cold], raw[~cold])
    some = np.array([[0, 1], [2, 3]])
    np.testing.assert_allclose(model.item_embeddings(tf.constant(some)).numpy(),
                               calibrated[some], rtol=1e-5, atol=1e-6)
    # Training (the softmax over the catalogue) sees the uncalibrated vectors.
    np.testing.assert_allclose(model.item_embeddings(training=True).numpy(), raw, rtol=1e-5,
                               atol=1e-6)


# ---- SASRec's layout: no serving projections (tied), √d token scale -------------------------
def test_without_serving_projections_the_embeddings_are_the_states_and_tokens():
    """``serving_projections`` off is SASRec's tied layout: h_gen and h_next are the encoder
    states and w_j is the item token itself, so h·w_j is the tied-embedding score."""
    catalog, inputs = _small_setup()
    config = make_config("tiny", max_history=L, use_context=False, serving_projections=False)
    model = _model(catalog, config)
    _, gen_state, next_state = model.encode(inputs)
    gen, nxt = model.user_embeddings(inputs)
    np.testing.assert_allclose(nxt.numpy(), next_state.numpy(), atol=1e-6)
    np.testing.assert_allclose(gen.numpy(), gen_state.numpy(), atol=1e-6)
    np.testing.assert_allclose(model.item_embeddings(training=True).numpy(),
                               model.items.all_tokens().numpy(), atol=1e-6)
    assert not any("projection" in v.name and "token" not in v.name
                   for v in model.trainable_variables)
    # With projections (the default) h is a learned map of the state, not the state.
    projected = _model(catalog, config.replace(serving_projections=True))
    _, _, projected_state = projected.encode(inputs)
    assert not np.allclose(projected.user_embeddings(inputs)[1].numpy(),
                           projected_state.numpy(), atol=1e-3)


def test_without_serving_projections_the_serving_space_is_the_model_width():
    catalog, _ = _small_setup()
    config = make_config("tiny", max_history=L, serving_projections=False, serving_dim=16)
    with pytest.raises(ValueError, match="serving_dim == d_model"):
        _model(catalog, config)


def test_scale_item_tokens_multiplies_only_the_encoder_input_by_sqrt_d():
    catalog, inputs = _small_setup()
    seen = {}
    for scaled in (False, True):
        config = make_config("tiny", max_history=L, scale_item_tokens=scaled)
        model = _model(catalog, config)
        encoder = model.encoder
        model.encoder = lambda sequence, mask, training=False, _e=encoder, _s=scaled: (
            seen.__setitem__(_s, sequence.numpy()) or _e(sequence, mask, training=training))
        model.encode(inputs)
        seen[("items", scaled)] = model.item_embeddings(training=True).numpy()
        if scaled:
            valid = inputs["valid"].numpy()[..., None]
            tokens = model.items(tf.maximum(inputs["items"], 0)).numpy()
            expected = (tokens * config.d_model ** 0.5 * valid
                        + model.events(inputs).numpy())
            np.testing.assert_allclose(seen[True][:, 1:], expected, rtol=1e-5, atol=1e-5)
    # Same seed, same weights: only the history tokens differ, not [USER] nor the item tower.
    np.testing.assert_allclose(seen[True][:, 0], seen[False][:, 0], atol=1e-6)
    assert not np.allclose(seen[True][:, 1:], seen[False][:, 1:])
    np.testing.assert_allclose(seen[("items", True)], seen[("items", False)], atol=1e-6)


def test_the_item_trend_is_saved_and_restored_with_the_weights(tmp_path):
    """The Trainer's model directory rebuilds the trend: its layout from the meta, its
    rows and β from the checkpoint."""
    from models import trainer
    catalog, inputs = _small_setup()
    config = make_config("tiny", max_history=L, item_trend=True)
    trend = _trend(len(catalog))
    meta = trainer.ModelMeta(
        num_event_types=3, user_numeric=[], user_vocab_sizes=USER_VOCAB,
        catalog_transformed_uri="", catalog_transform_graph_uri="",
        transform_graph_uri="").with_trend(trend)
    model = trainer.build_model(catalog, config, meta, trend)
    model.loss_parts(inputs)
    model.item_trend.beta.assign(1.25)
    trainer.save_trained(model, config, meta, str(tmp_path))
    loaded, _, loaded_meta, _, _ = trainer.load_trained(str(tmp_path), catalog=catalog)
    assert loaded_meta.trend_rows == len(trend.rows) and loaded_meta.trend_origin == trend.origin
    np.testing.assert_allclose(loaded.item_trend.rows.numpy(), trend.rows)
    assert float(loaded.item_trend.beta.numpy()) == 1.25
    np.testing.assert_allclose(loaded.item_prior(inputs["target_timestamp"]).numpy(),
                               model.item_prior(inputs["target_timestamp"]).numpy())
    with pytest.raises(ValueError, match="no trend table"):
        trainer.build_model(catalog, config, dataclasses.replace(meta, trend_rows=0))
