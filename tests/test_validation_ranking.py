"""ValidationRanking: masked full-catalogue HR/NDCG@10 of the validation target,
checked against a direct numpy ranking, and what EarlyStopping does with it."""
import math

import numpy as np
import pytest
import tensorflow as tf

from models import validation_ranking as VR


class FixedModel(tf.keras.Model):
    """Test double of StarsModel's two towers: fixed user and item embeddings."""

    def __init__(self, items, gen, nxt):
        super().__init__()
        self.items = tf.Variable(items, dtype=tf.float32)
        self.gen = tf.constant(gen, tf.float32)
        self.nxt = tf.constant(nxt, tf.float32)

    def item_embeddings(self):
        return tf.convert_to_tensor(self.items)

    def user_embeddings(self, inputs, training=False):
        rows = inputs["row"]
        return tf.gather(self.gen, rows), tf.gather(self.nxt, rows)


class TrendModel(FixedModel):
    """Test double with an item-and-time term: item (t mod I) gets +3 at request time t."""
    item_trend = "on"

    def item_prior(self, request_time):
        return 3.0 * tf.one_hot(tf.cast(request_time, tf.int32) % self.items.shape[0],
                                self.items.shape[0])


def _numpy_metrics(queries, items, history, targets, k=10, prior=None):
    hits, gains = [], []
    for row, (q, seen, target) in enumerate(zip(queries, history, targets)):
        scores = items @ q + (0.0 if prior is None else prior[row])
        order = [i for i in np.argsort(-scores, kind="stable") if i not in set(seen)]
        rank = order.index(target[0]) + 1
        hits.append(rank <= k)
        gains.append(1 / math.log2(rank + 1) if rank <= k else 0.0)
    return float(np.mean(hits)), float(np.mean(gains))


@pytest.fixture
def setup():
    rng = np.random.default_rng(3)
    n, num_items, d = 40, 60, 8
    items = rng.normal(size=(num_items, d))
    gen, nxt = rng.normal(size=(n, d)), rng.normal(size=(n, d))
    history = [rng.choice(num_items, size=rng.integers(0, 6), replace=False) for _ in range(n)]
    targets = [np.array([rng.choice([i for i in range(num_items) if i not in h])])
               for h in history]
    batches = [{"row": tf.range(s, min(n, s + 16))} for s in range(0, n, 16)]
    return FixedModel(items, gen, nxt), batches, history, targets


def test_logs_match_a_numpy_ranking_with_history_masked(setup):
    model, batches, history, targets = setup
    callback = VR.ValidationRanking.from_batches(batches, history, targets, ("gi", "ni"))
    callback.set_model(model)
    logs = {}
    callback.on_epoch_end(0, logs)
    for variant, queries in (("gi", model.gen.numpy()), ("ni", model.nxt.numpy())):
        hr, ndcg = _numpy_metrics(queries, model.items.numpy(), history, targets)
        assert logs[f"val_{variant}_hr@10"] == pytest.approx(hr)
        assert logs[f"val_{variant}_ndcg@10"] == pytest.approx(ndcg)
    assert logs[VR.MONITOR] == max(logs["val_gi_ndcg@10"], logs["val_ni_ndcg@10"])
    assert callback.epochs == [logs]


def test_scores_from_cached_user_queries_follow_the_item_side(setup):
    model, batches, history, targets = setup
    callback = VR.ValidationRanking.from_batches(batches, history, targets, ("gi", "ni"))
    callback.set_model(model)
    queries = callback.user_queries()
    np.testing.assert_allclose(queries["ni"], model.nxt.numpy())
    assert callback.scores(queries) == callback.scores()
    model.items = tf.Variable(-model.items)  # only the item table changes
    hr, ndcg = _numpy_metrics(model.nxt.numpy(), model.items.numpy(), history, targets)
    assert callback.scores(queries)["ni"] == (pytest.approx(hr), pytest.approx(ndcg))


def test_a_target_in_the_history_mask_is_never_ranked(setup):
    model, batches, history, targets = setup
    # The target of every example is also in its history: masked, so never a hit.
    history = [np.append(h, t) for h, t in zip(history, targets)]
    callback = VR.ValidationRanking.from_batches(batches, history, targets, ("ni",))
    callback.set_model(model)
    logs = {}
    callback.on_epoch_end(0, logs)
    assert logs["val_ni_hr@10"] == 0.0 and "val_gi_hr@10" not in logs


def test_early_stopping_keeps_the_best_epoch_weights(setup):
    model, batches, history, targets = setup
    good = model.items.numpy()
    # Epoch 1 keeps the good items; every later epoch scrambles them (worse ranking).

    class Scramble(tf.keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            model.items.assign(good if epoch == 0 else
                               np.random.default_rng(epoch).normal(size=good.shape) * 0.01)

    callback = VR.ValidationRanking.from_batches(batches, history, targets, ("ni",))
    stopper = tf.keras.callbacks.EarlyStopping(monitor=VR.MONITOR, mode="max", patience=2,
                                               restore_best_weights=True)
    callbacks = tf.keras.callbacks.CallbackList([Scramble(), callback, stopper], model=model)
    callbacks.on_train_begin()
    for epoch in range(6):
        logs = {}
        callbacks.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    callbacks.on_train_end()
    assert stopper.best_epoch == 0 and epoch == 2
    np.testing.assert_allclose(model.items.numpy(), good, rtol=1e-6)


def test_bad_arguments_are_rejected(setup):
    model, batches, history, targets = setup
    with pytest.raises(ValueError, match="empty"):
        VR.ValidationRanking.from_batches([], history, targets)
    with pytest.raises(ValueError, match="variants"):
        VR.ValidationRanking.from_batches(batches, history, targets, ("rr",))
    with pytest.raises(ValueError, match="histories"):
        VR.ValidationRanking.from_batches(batches, history[:-1], targets)


def test_the_models_item_prior_is_added_at_each_examples_request_time(setup):
    model, batches, history, targets = setup
    trend = TrendModel(model.items.numpy(), model.gen.numpy(), model.nxt.numpy())
    times = np.arange(len(targets)) * 7 + 5
    for b in batches:
        b["target_timestamp"] = tf.constant(times[b["row"].numpy()], tf.int64)
    callback = VR.ValidationRanking.from_batches(batches, history, targets, ("ni",))
    callback.set_model(trend)
    prior = 3.0 * np.eye(len(model.items.numpy()))[times % len(model.items.numpy())]
    hr, ndcg = _numpy_metrics(model.nxt.numpy(), model.items.numpy(), history, targets,
                              prior=prior)
    assert callback.scores()["ni"] == (pytest.approx(hr), pytest.approx(ndcg))
    callback.set_model(model)  # the same ranking without the term differs
    assert callback.scores()["ni"] != (pytest.approx(hr), pytest.approx(ndcg))


def test_a_streamed_split_is_read_once_a_pass_one_batch_at_a_time(setup):
    """The Trainer's form: ``split()`` yields the batches anew at every pass, and the
    callback keeps none of them (memory bounded by the batch, not the split)."""
    import gc
    import weakref
    model, batches, history, targets = setup
    reference = VR.ValidationRanking.from_batches(batches, history, targets, ("gi", "ni"))
    reference.set_model(model)
    passes, alive = [], []

    def split():
        passes.append(len(passes))
        yielded = []
        for b in batches:
            rows = b["row"].numpy()
            batch = VR.RankingBatch(dict(b), [np.asarray(history[r]) for r in rows],
                                    [np.asarray(targets[r]) for r in rows])
            yielded.append(weakref.ref(batch))
            gc.collect()
            # only this batch and the one the callback still holds are alive
            alive.append(sum(ref() is not None for ref in yielded[:-2]))
            yield batch

    streamed = VR.ValidationRanking(split, ("gi", "ni"))
    streamed.set_model(model)
    assert streamed.scores() == reference.scores() and len(passes) == 1
    queries = streamed.user_queries()
    np.testing.assert_allclose(queries["ni"], model.nxt.numpy())
    assert streamed.scores(queries) == reference.scores() and len(passes) == 3
    assert len(alive) == 3 * len(batches) and not any(alive)
    with pytest.raises(ValueError, match="examples"):
        streamed.scores({"ni": queries["ni"][:-1]})
    with pytest.raises(ValueError, match="examples"):
        streamed.scores({"ni": np.concatenate([queries["ni"], queries["ni"][:1]])})
    empty = VR.ValidationRanking(lambda: iter(()), ("ni",))
    empty.set_model(model)
    with pytest.raises(ValueError, match="empty"):
        empty.scores()
