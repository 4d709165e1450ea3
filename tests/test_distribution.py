"""Distributed training (``models.distribution``): the strategy the environment asks for, and
the STARS model trained on two replicas against the same training on one device.

Logical devices can only be set up before TensorFlow initialises, so the training runs in
fresh processes (``main``) on one tiny dataset built here: under the default strategy with a
batch of 2 x B users; under ``MirroredStrategy`` over 2 logical CPUs with B users per replica
(the same global batches); and as a 2-worker ``MultiWorkerMirroredStrategy`` cluster on
loopback ports (TF_CONFIG), one replica of B users per worker.  The model is the Trainer's
(``models.trainer``: its input pipeline with length buckets, model, optimiser, fit loop with
the validation ranking and early stopping, the choices after training, the checkpoint), with
the full softmax and no dropout, so that the runs compute the same function and differ only by
the order of floating-point sums (sampled negatives and dropout masks are drawn per replica).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

from models import distribution as D

USERS, ITEMS, COLD, L, PER_REPLICA_BATCH, EPOCHS = 48, 30, 3, 8, 6, 3
# Agreement asked of every run with the single-device one, on each logged loss and metric
# (relative) and on the users' and the items' embeddings after training (absolute, values
# ~0.3-3).  Measured: losses within 2.3e-7 relative, the ranking metrics equal, embeddings
# within 6e-7.  Averaging the replicas' mean losses instead of taking the global batch's mean
# (global_loss) moves the losses by ~1e-2.
RTOL, ATOL = 1e-5, 1e-5


# ---- the strategy choice ------------------------------------------------------------------
def _tf_config(cluster, task=("worker", 0)):
    return json.dumps({"cluster": cluster, "task": {"type": task[0], "index": task[1]}})


TWO_WORKERS = {"worker": ["localhost:2222", "localhost:2223"]}
VERTEX_TWO = {"chief": ["cmle-chief-0:2222"], "worker": ["cmle-worker-0:2222"]}


@pytest.mark.parametrize("tf_config, gpus, logical_cpus, kind", [
    (None, 0, 0, D.DEFAULT),
    ("", 1, 0, D.DEFAULT),                                    # one GPU: no strategy needed
    (None, 2, 0, D.MIRRORED),
    (None, 0, 2, D.MIRRORED),
    (_tf_config({"worker": ["localhost:2222"]}), 0, 0, D.DEFAULT),   # a cluster of one
    (_tf_config({"worker": ["localhost:2222"]}), 4, 0, D.MIRRORED),
    (_tf_config(TWO_WORKERS), 0, 0, D.MULTI_WORKER),
    (_tf_config(VERTEX_TWO, ("chief", 0)), 8, 0, D.MULTI_WORKER),   # Vertex: chief + worker
    (_tf_config({"chief": ["c:1"], "ps": ["p:1"], "evaluator": ["e:1"]}), 0, 0, D.DEFAULT),
])
def test_the_strategy_follows_tf_config_and_the_local_devices(tf_config, gpus, logical_cpus,
                                                              kind):
    assert D.choose(tf_config, gpus, logical_cpus) == kind


def test_only_the_chief_writes():
    assert D.is_chief(None)
    assert D.is_chief(_tf_config(TWO_WORKERS, ("worker", 0)))   # no chief: worker 0
    assert not D.is_chief(_tf_config(TWO_WORKERS, ("worker", 1)))
    assert D.is_chief(_tf_config(VERTEX_TWO, ("chief", 0)))
    assert not D.is_chief(_tf_config(VERTEX_TWO, ("worker", 0)))
    with pytest.raises(ValueError, match="TF_CONFIG"):
        D.cluster_workers("not json")


def test_replica_slices_cover_every_row_once():
    import tensorflow as tf
    for rows in (0, 1, 2, 5, 6, 13):
        for replicas in (1, 2, 3):
            got = [tuple(int(x) for x in D.replica_slices(tf.constant(rows), replicas, i))
                   for i in range(replicas)]
            assert got[0][0] == 0 and got[-1][1] == rows
            assert all(a[1] == b[0] for a, b in zip(got, got[1:]))


# ---- single device against MirroredStrategy over 2 logical CPUs ----------------------------
def _dataset(seed=5):
    """USERS users over ITEMS items (6 subclasses; the last COLD never seen), histories of
    1..L+3 events whose next item tends to share the subclass."""
    rng = np.random.default_rng(seed)
    histories, targets = [], []
    seen = ITEMS - COLD
    for _ in range(USERS):
        taste = rng.integers(0, 6)
        items = [int(taste + 6 * rng.integers(0, seen // 6)) if rng.random() < 0.7
                 else int(rng.integers(0, seen)) for _ in range(int(rng.integers(2, L + 5)))]
        histories.append([f"i{i}" for i in items[:-1]])
        targets.append([f"i{items[-1]}"])
    return histories, targets


def _features(histories, targets):
    import tensorflow as tf

    from models.inputs import EVENT_FEATURES

    def ragged(rows, dtype):
        return tf.RaggedTensor.from_row_lengths(
            tf.constant([v for r in rows for v in r], dtype), [len(r) for r in rows]).to_sparse()
    n = [len(h) for h in histories]
    ranges = {"event_type_id": (1, 4), "recency_bucket": (0, 11), "hour": (0, 24),
              "day_of_week": (0, 7), "week_of_year": (0, 53), "holiday": (0, 1)}
    assert set(ranges) == set(EVENT_FEATURES)
    rng = np.random.default_rng(1)
    f = {"item_id": ragged(histories, tf.string), "target_item_id": ragged(targets, tf.string),
         "page_item_count": ragged([[0] * k for k in n], tf.int64),
         "page_item_id": ragged([[] for _ in n], tf.string),
         "target_page_item_id": ragged([[] for _ in n], tf.string),
         "user_id": ragged([[f"u{u}"] for u in range(len(n))], tf.string),
         "timestamp": ragged([[86400 * (j + 1) for j in range(k)] for k in n], tf.int64),
         "target_timestamp": tf.constant([86400 * (k + 2) for k in n], tf.int64)}
    for name, (low, high) in ranges.items():
        f[name] = ragged([list(rng.integers(low, high, k)) for k in n], tf.int64)
        if name in ("hour", "day_of_week", "week_of_year", "holiday"):
            f[f"target_{name}"] = tf.constant(rng.integers(low, high, len(n)), tf.int64)
    return f


class _Accessor:
    """The Trainer's DataAccessor over in-memory features: batches of ``options.batch_size``,
    shuffled with ``options.shuffle_seed`` when asked, as TFXIO's factory makes them."""

    def __init__(self, splits):
        self.splits = splits

    def tf_dataset_factory(self, file_pattern, options, schema):
        import tensorflow as tf
        features = self.splits[file_pattern]
        data = tf.data.Dataset.from_tensor_slices(features)
        if options.shuffle:
            data = data.shuffle(USERS, seed=options.shuffle_seed, reshuffle_each_iteration=True)
        return data.batch(options.batch_size)


def train_once(strategy, per_replica_batch: int) -> dict:
    """The Trainer's training on the test dataset under ``strategy``: the history, the item
    and validation users' embeddings after training, the choices made after it."""
    import types

    import tensorflow as tf

    from models import trainer
    from models import validation_ranking as VR
    from models.config import make_config
    from models.item_catalog import ItemCatalog
    from models.item_trend import trend_table
    from models.successor_source import SuccessorTable

    histories, targets = _dataset()
    rng = np.random.default_rng(0)
    text = rng.normal(size=(ITEMS, 16)).astype(np.float32)
    counts = np.bincount([int(i[1:]) for h in histories[:40] for i in h], minlength=ITEMS)
    catalog = ItemCatalog(np.array([f"i{i}" for i in range(ITEMS)]),
                          text / np.linalg.norm(text, axis=1, keepdims=True),
                          (rng.random((ITEMS, 6)) < 0.3).astype(np.float32),
                          (np.arange(ITEMS) % 6).astype(np.int32),
                          (np.arange(ITEMS) % 3).astype(np.int32),
                          counts.astype(np.float32), np.ones(ITEMS, np.int32))
    accessor = _Accessor({"train": _features(histories[:40], targets[:40]),
                          "eval": _features(histories[40:], targets[40:])})
    no_schema = types.SimpleNamespace(transformed_metadata=types.SimpleNamespace(schema=None))
    meta = trainer.ModelMeta(num_event_types=3, user_numeric=[], user_vocab_sizes={},
                             catalog_transformed_uri="", catalog_transform_graph_uri="",
                             transform_graph_uri="")
    # The tiny preset with the cpu preset's parts (item trend, semantic match, successor
    # source), the full softmax and no dropout.
    config = trainer.fit_user_token(make_config(
        "tiny", max_history=L, batch_size=per_replica_batch, epochs=EPOCHS, dropout=0.0,
        full_softmax=True, item_trend=True, semantic_match=True, successor_source=True,
        delta_frozen_epochs=1, early_stopping_patience=5), meta)
    replicas = strategy.num_replicas_in_sync
    adapter = trainer.make_adapter(catalog, config, meta)
    # The shuffles' seeds combine with the global seed: both runs start from the same.
    tf.keras.utils.set_random_seed(config.seed)
    train_data, steps = trainer.training_dataset("train", accessor, no_schema, adapter, config,
                                                 replicas)
    eval_data = trainer.input_dataset("eval", accessor, no_schema, adapter,
                                      config.batch_size * replicas, shuffle=False)
    ranking = trainer.validation_ranking("eval", accessor, no_schema, adapter, config)
    # Fixed tables from the training users' sequences (a trend of one event an hour).
    sequences = [[int(i[1:]) for i in h + t] for h, t in zip(histories[:40], targets[:40])]
    events = np.concatenate(sequences)
    trend = trend_table(events, np.arange(len(events)) * 3600, len(catalog))
    successors = SuccessorTable.from_sequences(sequences, len(catalog))
    meta = meta.with_trend(trend).with_successors(successors)
    with strategy.scope():
        model = trainer.build_model(catalog, config, meta, trend, successors)
    started = time.perf_counter()
    history = trainer.train(model, config, train_data, eval_data, steps * config.epochs,
                            validation_callbacks=[ranking], monitor=VR.MONITOR,
                            monitor_mode="max", strategy=strategy, steps_per_epoch=steps)
    train_s = time.perf_counter() - started
    trained = {"items": model.item_embeddings().numpy().tolist(),
               "users": np.concatenate(ranking.user_queries()["ni"]).tolist()}
    # What the chief does next in run_fn: the choices after training, the checkpoint (which
    # the IndexBuilder rebuilds the model from, on one device).
    selection = trainer.select_after_training(model, ranking, catalog.counts, config)
    with tempfile.TemporaryDirectory() as directory:
        trainer.save_trained(model, config, meta, directory)
        reloaded = trainer.load_trained(directory, catalog)[0]
        np.testing.assert_array_equal(reloaded.item_embeddings().numpy(),
                                      model.item_embeddings().numpy())
    return {"replicas": replicas, "steps_per_epoch": steps, "train_s": round(train_s, 2),
            "history": {k: [float(x) for x in v] for k, v in history.history.items()},
            "selection": selection, **trained}


def main(out_path: str, worker: str = "") -> None:
    """Runs in a fresh process; results as JSON in ``out_path``.  Without ``worker``: the
    single-device and the mirrored training.  ``worker`` "INDEX:PORT,PORT": this process is
    that worker of a loopback cluster (TF_CONFIG), training under the strategy chosen from it."""
    import tensorflow as tf
    # Three of these processes share the machine: one thread each for TensorFlow's ops.
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    if worker:
        index, ports = worker.split(":")
        os.environ["TF_CONFIG"] = json.dumps({
            "cluster": {"worker": [f"localhost:{p}" for p in ports.split(",")]},
            "task": {"type": "worker", "index": int(index)}})
        strategy = D.strategy_from_environment()
        assert isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        runs = {"worker": train_once(strategy, PER_REPLICA_BATCH)}
    else:
        D.use_logical_cpus(2)
        single = train_once(tf.distribute.get_strategy(), 2 * PER_REPLICA_BATCH)
        strategy = D.strategy_from_environment(logical_cpus=2)
        assert isinstance(strategy, tf.distribute.MirroredStrategy)
        runs = {"single": single, "mirrored": train_once(strategy, PER_REPLICA_BATCH)}
    with open(out_path, "w") as f:
        json.dump(runs, f)


RUN = ("import sys; from stars.environment import configure; configure(); "
       "from tests.test_distribution import main; main(*sys.argv[1:])")


def _same_selection(a, b) -> None:
    """The choices after training alike: the same choices, the numbers they record (norms of
    the item vectors, rounded) within 1e-3 (see the items' shift below)."""
    if isinstance(b, dict):
        assert isinstance(a, dict) and set(a) == set(b), (a, b)
        for key in b:
            _same_selection(a[key], b[key])
    elif isinstance(b, list):
        assert isinstance(a, list) and len(a) == len(b), (a, b)
        for x, y in zip(a, b):
            _same_selection(x, y)
    elif isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-3, abs=1e-3)
    else:
        assert a == b


def _agree(run: dict, single: dict) -> None:
    assert run["steps_per_epoch"] == single["steps_per_epoch"]  # the same global batches
    assert set(run["history"]) == set(single["history"])
    for name, values in single["history"].items():
        np.testing.assert_allclose(run["history"][name], values, rtol=RTOL, atol=ATOL,
                                   err_msg=name)
    np.testing.assert_allclose(run["users"], single["users"], rtol=0, atol=ATOL)
    _same_selection(run["selection"], single["selection"])
    # Items up to one shift shared by every item: the item projection's bias moves every
    # item's logit of a softmax row by the same h.b, so its gradient is 0 up to rounding, and
    # Adam's normalised steps follow that rounding (measured: 5.8e-4 after 21 steps).  No
    # score difference between items depends on it.
    items, single_items = np.asarray(run["items"]), np.asarray(single["items"])
    np.testing.assert_allclose(items - items.mean(0), single_items - single_items.mean(0),
                               rtol=0, atol=ATOL)


@pytest.mark.e2e  # ~70 s on 2 cores: three fresh TensorFlow processes side by side
def test_two_replicas_train_as_one_device(tmp_path):
    """MirroredStrategy over 2 logical CPUs in one process, and MultiWorkerMirroredStrategy
    over a 2-worker cluster on loopback (one CPU each), against one device."""
    from tests.fixtures import free_port
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CONFIG", D.LOGICAL_CPUS_VAR)}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ports = f"{free_port()},{free_port()}"
    jobs = {name: (tmp_path / f"{name}.json", tmp_path / f"{name}.log", extra)
            for name, extra in (("local", []), ("worker0", [f"0:{ports}"]),
                                ("worker1", [f"1:{ports}"]))}
    processes = {name: subprocess.Popen([sys.executable, "-c", RUN, str(out), *extra], env=env,
                                        cwd=root, stdout=open(log, "w"),
                                        stderr=subprocess.STDOUT)
                 for name, (out, log, extra) in jobs.items()}
    try:
        for name, process in processes.items():
            assert process.wait(timeout=600) == 0, jobs[name][1].read_text()[-3000:]
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
    runs = {name: json.loads(out.read_text()) for name, (out, _, _) in jobs.items()}
    single = runs["local"]["single"]
    assert len(single["history"]["loss"]) == EPOCHS and single["steps_per_epoch"] > 1
    assert {"loss", "loss_next", "loss_gen", "val_loss", "val_ndcg@10"} <= set(single["history"])
    # The model learned (runs that learned nothing would agree trivially).
    assert single["history"]["val_loss"][-1] < single["history"]["val_loss"][0] - 0.3
    assert all(single["selection"].values())  # semantic match, cold-item norm, successors
    assert runs["local"]["mirrored"]["replicas"] == 2
    _agree(runs["local"]["mirrored"], single)
    for worker in ("worker0", "worker1"):
        assert runs[worker]["worker"]["replicas"] == 2
        _agree(runs[worker]["worker"], single)
