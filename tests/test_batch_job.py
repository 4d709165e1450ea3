"""The batch user-embedding job (`stars batch user-embeddings`) on the DirectRunner.

Fast tests use a TEST DOUBLE of the serving SavedModel: a tf.Module exposing a
``user_embeddings`` signature with the real inputs/outputs whose embeddings encode what it
was given (history length, last item, item sum, request time, user features, region), so
the job's grouping, ordering, cutting, as-of filtering and feature mapping are checked
exactly.  The e2e test runs the real pushed STARS model.
"""

import argparse
import json
import math
import os
import shutil

import numpy as np
import pandas as pd
import pytest

from serving.batch import job
from serving.batch.cli import add_batch_parser
from serving.batch.embedded_store import EmbeddedStore
from serving.batch.redis_store import RedisStore
from tests.test_user_store import redis_url  # noqa: F401  (the redis-server fixture)

DOUBLE_DIM = 8
OFFSET = 1000.0  # the double's "context offset": h_gen = h_gen_base + OFFSET


def _save_user_embeddings_double(export_dir):
    """Test double of the pushed serving model: only the ``user_embeddings`` signature,
    same input names/dtypes/shapes and outputs as models/serving.py, with one numeric
    (``age``) and one categorical (``segment``) user feature."""
    import tensorflow as tf

    class UserEmbeddingsTestDouble(tf.Module):
        @tf.function(input_signature=[
            tf.TensorSpec([None, None], tf.string, "history_item_ids"),
            tf.TensorSpec([None, None], tf.string, "history_event_types"),
            tf.TensorSpec([None, None], tf.int64, "history_timestamps"),
            tf.TensorSpec([None], tf.int64, "request_timestamp"),
            tf.TensorSpec([None], tf.string, "region"),
            tf.TensorSpec([None, 4], tf.float32, "context_signals"),
            tf.TensorSpec([None], tf.float32, "user_num_age"),
            tf.TensorSpec([None], tf.string, "user_cat_segment")])
        def user_embeddings(self, history_item_ids, history_event_types, history_timestamps,
                            request_timestamp, region, context_signals, user_num_age,
                            user_cat_segment):
            present = tf.not_equal(history_item_ids, "")
            items = tf.strings.to_number(tf.where(present, history_item_ids, "0"), tf.float32)
            base = tf.stack([
                tf.reduce_sum(tf.cast(present, tf.float32), 1),          # history length
                items[:, -1],                                             # newest item
                tf.reduce_sum(items, 1),                                  # kept items
                tf.cast(request_timestamp, tf.float32),
                tf.where(tf.math.is_nan(user_num_age), -1.0, user_num_age),
                tf.cast(tf.equal(user_cat_segment, "vip"), tf.float32),
                tf.cast(tf.equal(region, "eu"), tf.float32),
                tf.reduce_sum(tf.cast(tf.equal(history_event_types, "purchase"), tf.float32), 1),
            ], axis=1) + tf.reduce_sum(context_signals, 1, keepdims=True) * 0.0
            return {"h_gen": base + OFFSET, "h_next": 2.0 * base + OFFSET,
                    "h_gen_base": base, "h_next_base": 2.0 * base}

    module = UserEmbeddingsTestDouble()
    tf.saved_model.save(module, str(export_dir), signatures={
        "user_embeddings": module.user_embeddings.get_concrete_function()})


@pytest.fixture(scope="module")
def model_base(tmp_path_factory):
    base = tmp_path_factory.mktemp("double_model")
    _save_user_embeddings_double(base / "3")
    (base / "1").mkdir()          # not a SavedModel: ignored when picking the latest version
    return base


def _write_data(data_dir, interactions, users=None):
    data_dir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"item_id": ["11", "12"], "title": ["a", "b"]}).to_csv(
        data_dir / "items.csv", index=False)
    pd.DataFrame(interactions).to_csv(data_dir / "interactions.csv", index=False)
    if users is not None:
        pd.DataFrame(users).to_csv(data_dir / "users.csv", index=False)
    return data_dir


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    rows = []
    for i, ts in enumerate([100, 200, 300, 400, 500]):     # u1: 5 events + one late
        rows.append(("u1", str(11 + i), ts, "view", "", "us"))
    rows.append(("u1", "16", 900, "purchase", "", "us"))
    rows.append(("u2", "21", 200, "buy", "2", ""))             # same time: seq orders them
    rows.append(("u2", "22", 200, "view", "1", ""))
    rows.append(("u3", "999999", 300, "add_to_cart", "", "eu"))  # not in the catalogue
    rows.append(("u5", "31", 950, "view", "", "eu"))          # only after as_of=600
    interactions = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp",
                                               "event_type", "sequence_number", "region"])
    users = {"user_id": ["u1", "u2", "u4"], "age": ["30", "", "50"],
             "segment": ["vip", "regular", "vip"], "region": ["us", "eu", ""]}
    return _write_data(tmp_path_factory.mktemp("data"), interactions, users)


def _base(store, user):
    entry = store.get(user)
    assert entry is not None, f"{user} not stored"
    h_gen, h_next = entry[:2]
    np.testing.assert_allclose(h_next, 2 * h_gen)
    return h_gen.tolist()


def test_job_embeds_every_user_into_the_embedded_store(model_base, data_dir, tmp_path):
    spec = f"embedded:{tmp_path / 'store'}"
    report = job.run(str(model_base), str(data_dir), spec, as_of=600, max_history=3,
                     batch_size=2, grace_seconds=0)
    assert report["model_dir"].endswith("/3") and report["dim"] == DOUBLE_DIM
    assert report["model_version"] == "3"
    assert report["events_read"] == 10 and report["events_after_as_of"] == 2
    assert report["users"] == 4 and report["users_with_history"] == 3
    assert report["users_without_history"] == 1          # u4 (users table only)
    assert report["users_written"] == report["stored"] == 4 and report["as_of"] == 600
    assert report["events_used"] == 3 + 2 + 1
    store = EmbeddedStore(tmp_path / "store")
    assert store.version() == report["version"]
    # [length, newest item, sum of kept items, request time, age, vip, region eu, purchases]
    assert _base(store, "u1") == [3, 15, 13 + 14 + 15, 600, 30, 1, 0, 0]
    assert _base(store, "u2") == [2, 21, 43, 600, -1, 0, 1, 1]       # home region eu
    assert _base(store, "u3") == [1, 999999, 999999, 600, -1, 0, 1, 0]
    assert _base(store, "u4") == [0, 0, 0, 600, 50, 1, 0, 0]         # [USER] features only
    # The latest item ids of the (cut) history, oldest first, for the successor source.
    assert [store.get(u)[3] for u in ("u1", "u3", "u4")] == [("13", "14", "15"),
                                                              ("999999",), ()]
    assert store.get("u5") is None                  # only known from after as_of
    assert {e[2] for e in store.get_many(["u1", "u2", "u3", "u4"])} == {"3"}  # model version
    assert store.get("nobody") is None
    first = report["version"]

    # Again through the CLI with the defaults: as of the latest event, 200 events kept.
    parser = argparse.ArgumentParser()
    add_batch_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["batch", "user-embeddings", "--model-base-path", str(model_base),
                              "--data-dir", str(data_dir), "--store", spec,
                              "--grace-seconds", "0"])
    assert args.func(args) == 0
    assert store.version() != first and store.generations() == [first, store.version()]
    assert _base(store, "u1") == [6, 16, 11 + 12 + 13 + 14 + 15 + 16, 950, 30, 1, 0, 1]
    assert _base(store, "u5") == [1, 31, 31, 950, -1, 0, 1, 0]


def test_job_into_redis_and_version_flag(model_base, data_dir, redis_url):  # noqa: F811
    report = job.run(str(model_base), str(data_dir), redis_url, version=3,
                     as_of="1970-01-01T00:10:00", grace_seconds=0,
                     beam_args=["--direct_running_mode=in_memory", "--direct_num_workers=1"])
    assert report["as_of"] == 600 and report["stored"] == 4
    store = RedisStore.from_url(redis_url)
    try:
        assert store.version() == report["version"]
        assert _base(store, "u2") == [2, 21, 43, 600, -1, 0, 1, 1]
        entries = store.get_many(["u1", "u4", "nobody"])
        assert entries[2] is None and {e[2] for e in entries[:2]} == {"3"}
    finally:
        store.close()
    with pytest.raises(FileNotFoundError):
        job.run(str(model_base), str(data_dir), redis_url, version=1)


def test_failed_job_keeps_the_live_generation(model_base, data_dir, tmp_path):
    spec = f"embedded:{tmp_path / 'store'}"
    good = job.run(str(model_base), str(data_dir), spec, as_of=600, grace_seconds=0)
    bad = tmp_path / "bad"
    shutil.copytree(data_dir, bad)
    with open(bad / "interactions.csv", "a") as f:
        f.write("u9,11,700,teleport,,eu\n")               # breaks the data contract
    with pytest.raises(Exception, match="teleport"):
        job.run(str(model_base), str(bad), spec, grace_seconds=0)
    store = EmbeddedStore(tmp_path / "store")
    assert store.version() == good["version"] and store.generations() == [good["version"]]
    assert _base(store, "u1")[3] == 600


@pytest.mark.e2e
def test_job_with_the_pushed_stars_model(pushed_model, tmp_path):
    """The real job, the real pushed STARS model, the tiny synthetic data (plus a user with
    only unknown items and one with features but no events), into the embedded store."""
    from stars.data import contract
    from stars.saved_model import load_serving_model
    config, model_base_path = pushed_model
    data = tmp_path / "data"
    shutil.copytree(config.data_dir, data)
    interactions = contract.find_table_file(data, contract.INTERACTIONS)
    assert os.path.basename(interactions) == "interactions.csv"
    frame = pd.read_csv(interactions, dtype=str, keep_default_na=False)
    extra = frame.iloc[[0]].copy()
    extra["user_id"], extra["item_id"] = "zz-unknown-items", "no-such-item"
    if "page_id" in extra:
        extra["page_id"] = ""
    pd.concat([frame, extra]).to_csv(interactions, index=False)
    users_file = contract.find_table_file(data, contract.USERS)
    if users_file is not None and os.path.basename(users_file) == "users.csv":
        users = pd.read_csv(users_file, dtype=str, keep_default_na=False)
        lone = users.iloc[[0]].copy()
        lone["user_id"] = "zz-no-events"
        pd.concat([users, lone]).to_csv(users_file, index=False)

    report = job.run(model_base_path, str(data), f"embedded:{tmp_path / 'store'}",
                     grace_seconds=0, batch_size=64)
    signature = load_serving_model(report["model_dir"]).signatures["user_embeddings"]
    dim = int(signature.structured_outputs["h_gen_base"].shape[-1])
    assert report["dim"] == dim and report["users_not_finite"] == 0
    events = pd.read_csv(interactions, dtype=str)
    with_events = sorted(set(events["user_id"]))
    items_of = events.groupby("user_id")["item_id"].agg(set)
    store = EmbeddedStore(tmp_path / "store")
    entries = store.get_many(with_events)
    missing = [u for u, e in zip(with_events, entries) if e is None]
    assert not missing, f"users with interactions but no embedding: {missing[:5]}"
    for user, (h_gen, h_next, version, latest) in zip(with_events, entries):
        assert h_gen.shape == (dim,) and h_next.shape == (dim,)
        assert latest and len(latest) <= job.LATEST_ITEMS, user
        assert set(latest) <= items_of[user], user     # the user's own items
        assert version == report["model_version"] == os.path.basename(report["model_dir"])
        assert np.isfinite(h_gen).all() and np.isfinite(h_next).all(), user
    assert report["stored"] >= len(with_events)
    if users_file is not None and os.path.basename(users_file) == "users.csv":
        h_gen, h_next, _, latest = store.get("zz-no-events")
        assert latest == ()
        assert np.isfinite(h_gen).all() and not math.isclose(float(np.abs(h_gen).sum()), 0.0)
    print(json.dumps(report, default=str))
