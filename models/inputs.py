"""Transformed sequence features -> the dense, left-padded tensors the model reads.

Histories arrive as variable-length (sparse) features, one value per event.
The adapter keeps the latest ``max_history`` events, left-pads them so the
latest event is always in the last column, maps item ids to the catalogue
index (-1 = unknown/padding), and builds for every position its training
target (the next event, or the example's target after the last one), the
context of that target, and its same-page pool (the items shown on the
target's page) for negative sampling.
"""
from typing import List, Mapping, Sequence

import numpy as np
import tensorflow as tf

from models import features as F

EVENT_FEATURES = ("event_type_id", "recency_bucket") + F.EVENT_CALENDAR_FEATURES
CONTEXT_FEATURES = ("hour", "day_of_week", "week_of_year", "holiday")
POOLS = "next_pools"  # [B*L, None]: one negative-sampling pool per history position
# The outputs laid out [B, L] (one column per history position); ``next_pools`` is [B*L, None].
SEQUENCE_KEYS = (("items", "valid", "position", "next_items", "next_timestamp")
                 + EVENT_FEATURES + tuple(f"next_{name}" for name in CONTEXT_FEATURES))


def _as_sparse(x):
    if isinstance(x, tf.RaggedTensor):
        return x.to_sparse()
    if isinstance(x, tf.SparseTensor):
        return x
    return tf.sparse.from_dense(x)


def numpy_rows(tensor) -> List[np.ndarray]:
    """Per-row numpy values of a dense, sparse or ragged [B, ...] tensor."""
    if isinstance(tensor, tf.SparseTensor):
        tensor = tf.RaggedTensor.from_sparse(tensor)
    if isinstance(tensor, tf.RaggedTensor):
        values, splits = tensor.flat_values.numpy(), tensor.row_splits.numpy()
        return [values[a:b] for a, b in zip(splits[:-1], splits[1:])]
    return [np.reshape(row, -1) for row in tensor.numpy()]


def take_rows(batch: Mapping, start, stop) -> dict:
    """Examples ``start:stop`` of a model-input batch (``InputAdapter``'s layout, cut to any
    width): every tensor is example-major except ``next_pools``, one row per position."""
    def rows(x):
        if isinstance(x, tf.SparseTensor):
            begin = tf.concat([[start], tf.zeros_like(x.dense_shape[1:])], 0)
            size = tf.concat([[stop - start], x.dense_shape[1:]], 0)
            return tf.sparse.slice(x, begin, size)
        return x[start:stop]
    out = tf.nest.map_structure(rows, {k: v for k, v in batch.items() if k != POOLS})
    if POOLS in batch:
        width = tf.shape(batch["valid"], out_type=tf.int64)[1]
        out[POOLS] = batch[POOLS][start * width:stop * width]
    return out


def _dense_first(x, default):
    return F.first(x, default=default)


class InputAdapter:
    """Callable: transformed feature dict -> model input dict (see ``__call__``)."""

    def __init__(self, item_ids: Sequence[str], max_history: int,
                 user_numeric: Sequence[str] = (), user_categorical: Sequence[str] = ()):
        self.max_history = max_history
        self.user_numeric = tuple(user_numeric)
        self.user_categorical = tuple(user_categorical)
        self.item_table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(list(item_ids), tf.string),
                tf.range(len(item_ids), dtype=tf.int64)), default_value=-1)

    def lookup(self, ids):
        return tf.cast(self.item_table.lookup(ids), tf.int32)

    def history_indices(self, features: Mapping[str, tf.Tensor]) -> tf.RaggedTensor:
        """The catalogue indices of each example's WHOLE history, oldest first (-1 =
        unknown item), not cut to ``max_history``: what a ranking masks as already seen."""
        history = tf.RaggedTensor.from_sparse(_as_sparse(features["item_id"]))
        return history.with_flat_values(self.lookup(history.flat_values))

    def __call__(self, features: Mapping[str, tf.Tensor]) -> dict:
        """Returns:

        * ``items`` int32 [B, L] (−1 padding), ``valid`` bool [B, L], ``position`` [B, L]
          (1 = latest event, 0 = padding), and every ``EVENT_FEATURES`` [B, L];
        * ``next_items`` int32 [B, L]: the item each position should predict (−1: none);
          ``next_<context>`` [B, L] its calendar context, ``next_timestamp`` [B, L] its time
          (unix seconds); ``next_pools`` ragged [B*L, None];
        * ``target`` int32 [B] (first target), ``targets`` ragged [B, None] (all targets),
          ``target_<context>`` [B], ``target_timestamp`` [B] (the request's time);
          ``user``: dict of [B] user features.
        """
        L = self.max_history
        item_sp = _as_sparse(features["item_id"])
        batch = tf.cast(item_sp.dense_shape[0], tf.int64)
        rows, cols = item_sp.indices[:, 0], item_sp.indices[:, 1]
        lengths = tf.math.unsorted_segment_max(cols + 1, rows, tf.cast(batch, tf.int32))
        lengths = tf.maximum(lengths, 0)
        n = tf.gather(lengths, rows)
        keep = cols >= n - L
        column = L - tf.minimum(n, L) + (cols - tf.maximum(n - L, 0))
        scatter_index = tf.stack([rows, column], axis=1)[keep]
        shape = tf.stack([batch, tf.constant(L, tf.int64)])

        def place(values, pad):
            values = tf.cast(values, tf.int64)[keep]
            return tf.scatter_nd(scatter_index, values - pad, shape) + pad

        items = tf.cast(place(self.lookup(item_sp.values), -1), tf.int32)
        valid = items >= 0
        out = {"items": items, "valid": valid,
               "position": tf.where(valid, L - tf.range(L, dtype=tf.int64)[None, :], 0)}
        for name in EVENT_FEATURES:
            out[name] = place(_as_sparse(features[name]).values, 0)

        # Targets: all of them, and the first (the request's next item).
        target_sp = _as_sparse(features["target_item_id"])
        targets = tf.RaggedTensor.from_value_rowids(
            self.lookup(target_sp.values), target_sp.indices[:, 0], nrows=batch)
        out["targets"] = targets
        out["target"] = _dense_first(targets.to_sparse(), -1)
        for name in CONTEXT_FEATURES:
            out[f"target_{name}"] = tf.cast(features[f"target_{name}"], tf.int64)
            nxt = tf.concat([out[name][:, 1:], out[f"target_{name}"][:, None]], axis=1)
            out[f"next_{name}"] = nxt
        out["next_items"] = tf.concat([items[:, 1:], out["target"][:, None]], axis=1)
        out["target_timestamp"] = tf.cast(_dense_first(features["target_timestamp"], 0), tf.int64)
        event_time = place(_as_sparse(features["timestamp"]).values, 0)
        out["next_timestamp"] = tf.concat([event_time[:, 1:], out["target_timestamp"][:, None]],
                                          axis=1)

        # Same-page pools: event-level pools, then the target's, indexed per position.
        counts = _as_sparse(features["page_item_count"]).values
        page_sp = _as_sparse(features["page_item_id"])
        event_pools = tf.RaggedTensor.from_row_lengths(self.lookup(page_sp.values), counts)
        target_page = _as_sparse(features["target_page_item_id"])
        target_pools = tf.RaggedTensor.from_value_rowids(
            self.lookup(target_page.values), target_page.indices[:, 0], nrows=batch)
        num_events = tf.shape(item_sp.values, out_type=tf.int64)[0]
        event_index = place(tf.range(num_events), -1)
        next_pool = tf.concat([event_index[:, 1:], num_events + tf.range(batch)[:, None]], axis=1)
        pools = tf.concat([event_pools, target_pools], axis=0)
        pools = tf.concat([pools, tf.RaggedTensor.from_row_lengths(
            tf.zeros([0], tf.int32), tf.zeros([1], tf.int64))], axis=0)  # an empty pool at -1
        flat_index = tf.reshape(next_pool, [-1])
        flat_index = tf.where(flat_index < 0, tf.shape(pools, out_type=tf.int64)[0] - 1,
                              flat_index)
        out["next_pools"] = tf.gather(pools, flat_index)

        user = {}
        for name in self.user_numeric:
            for suffix in ("z", "missing", "bucket"):
                user[f"{name}_{suffix}"] = features[f"{name}_{suffix}"]
        for name in self.user_categorical:
            user[f"{name}_id"] = features[f"{name}_id"]
        out["user"] = user
        return out
