"""Serving the co-occurrence prior: the index's top-K merged with the latest events' successors.

The prior γ·log(1 + count_j) depends on the request's latest events, so it cannot be a
coordinate of the index.  It is exact to add it after the search: an item with no count
scores its plain inner product, so if it belongs in the top k of ``h·w_j + prior_j`` it is
already in the index's top k; every other item in the answer has a count, so it is among
the latest events' successors.  The merge therefore ranks the union of the index's top k
and the successors (tens to hundreds of items: what the successor table holds after three
items) by the full score, and keeps k.  With an approximate index the merge is as exact as
the index's own top k.
"""
from __future__ import annotations

import stars  # noqa: F401
import tensorflow as tf


def successor_counts(prior, recent, weights):
    """(rows [M], items [M], counts [M]): each request row's successors of its ``recent``
    events [B, R] (``weights`` [B, R], 0 = none) with their weighted counts, one entry per
    (row, item)."""
    row, item, value = prior.entries(recent, weights)
    num_items = tf.cast(prior.num_items, tf.int64)
    keys, where = tf.unique(row * num_items + item)
    counts = tf.math.unsorted_segment_sum(value, where, tf.shape(keys)[0])
    return keys // num_items, keys % num_items, counts


def _member(keys, sorted_keys):
    """[N] bool: which ``keys`` are in ``sorted_keys`` (ascending), and [N] their slot."""
    if_any = tf.size(sorted_keys) > 0
    slot = tf.searchsorted(sorted_keys, keys)
    clipped = tf.minimum(slot, tf.maximum(tf.size(sorted_keys, out_type=slot.dtype) - 1, 0))
    found = tf.logical_and(if_any, tf.equal(
        tf.gather(tf.concat([sorted_keys, tf.zeros([1], sorted_keys.dtype)], 0), clipped), keys))
    return found, clipped


def merge_top_k(index_scores, index_items, queries, indexed, prior, recent, weights, k: int):
    """(scores [B, k], items [B, k]) of the top k by ``h·w_j + γ·log(1 + count_j)``.

    ``index_scores``/``index_items`` [B, K ≥ k]: the index's answer for ``queries`` [B, D]
    (item = catalogue index); ``indexed`` [I, D]: the vectors the index holds (so an item
    outside its answer is scored the same way); ``prior``: the model's CooccurrencePrior.
    """
    batch = tf.shape(index_items, out_type=tf.int64)[0]
    num_items = tf.cast(prior.num_items, tf.int64)
    rows, items, counts = successor_counts(prior, recent, weights)
    keys = rows * num_items + items
    order = tf.argsort(keys)
    keys, rows, items, counts = (tf.gather(x, order) for x in (keys, rows, items, counts))

    index_items = tf.cast(index_items, tf.int64)
    index_rows = tf.repeat(tf.range(batch), tf.shape(index_items, out_type=tf.int64)[1])
    flat_items = tf.reshape(index_items, [-1])
    in_successors, slot = _member(index_rows * num_items + flat_items, keys)
    index_counts = tf.where(in_successors, tf.gather(tf.concat([counts, [0.0]], 0), slot), 0.0)
    gamma = tf.cast(prior.gamma, tf.float32)
    index_total = (tf.reshape(tf.cast(index_scores, tf.float32), [-1]) +
                   gamma * tf.math.log1p(index_counts))

    # Successors the index did not return: scored here, the index's way.
    answered = tf.sort(index_rows * num_items + flat_items)
    returned, _ = _member(keys, answered)
    extra = tf.logical_not(returned)
    extra_rows, extra_items = tf.boolean_mask(rows, extra), tf.boolean_mask(items, extra)
    extra_total = (tf.reduce_sum(tf.gather(queries, extra_rows) *
                                 tf.gather(indexed, extra_items), axis=1) +
                   gamma * tf.math.log1p(tf.boolean_mask(counts, extra)))

    all_rows = tf.concat([index_rows, extra_rows], 0)
    order = tf.argsort(all_rows, stable=True)
    ragged = lambda values: tf.RaggedTensor.from_value_rowids(
        tf.gather(values, order), tf.gather(all_rows, order), nrows=batch)
    totals = ragged(tf.concat([index_total, extra_total], 0)).to_tensor(float("-inf"))
    candidates = ragged(tf.concat([flat_items, extra_items], 0)).to_tensor(-1)
    top = tf.math.top_k(totals, k=k)
    return top.values, tf.gather(candidates, top.indices, batch_dims=1)


__all__ = ["merge_top_k", "successor_counts"]
