"""Length-bucketed training batches: stop paying the encoder for padding.

Most users have a few events (Amazon Beauty: median 6, window 50), yet a batch
of random users almost always holds one long history, so nearly every batch is
padded to the full window and most of the encoder's work is on padding.
Training batches are therefore grouped by history span (the columns from a
user's first known event to the latest) and cut to the widest span in the
batch.  Cutting is exact: histories are left-padded and ``position`` counts
back from the latest event, so the kept columns carry the same tokens,
positions and targets, and the cut columns were masked out of attention and of
the loss.

Batches hold a token budget, not a fixed number of users (``batch_size`` × the
mean span): each history position then weighs about as much in the loss as
under random batching, where a batch's positions number ``batch_size`` × the
mean span.  Serving and validation keep the fixed window.
"""
from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from models.inputs import SEQUENCE_KEYS

POOLS = "next_pools"


def bucket_bounds(max_history: int, growth: float = 1.5) -> list:
    """Upper span bounds (inclusive) of the buckets: 1, 2, 3, 5, 8, ... up to ``max_history``."""
    bounds, bound = [], 1
    while bound < max_history:
        bounds.append(bound)
        bound = max(bound + 1, int(math.ceil(bound * growth)))
    return bounds + [max_history]


def spans(valid):
    """Columns from each row's first known event to the last column (0: no known event)."""
    length = tf.shape(valid)[-1]
    first = tf.argmax(tf.cast(valid, tf.int32), axis=-1, output_type=tf.int32)
    return tf.where(tf.reduce_any(valid, axis=-1), length - first, 0)


def nest_pools(batch: dict, max_history: int) -> dict:
    """next_pools [B*L, None] -> [B, L, None], so a batch can be split into users."""
    out = dict(batch)
    out[POOLS] = tf.RaggedTensor.from_uniform_row_length(batch[POOLS], max_history)
    return out


def trim(batch: dict, max_history: int) -> dict:
    """Cuts a batch to its widest span.  Pools come nested [B, L, None] (from
    ``bucketed``) or flat [B*L, None] (the adapter's) and leave flat; a batch without
    pools (inference) is cut all the same."""
    if POOLS in batch and batch[POOLS].shape.rank == 2:
        batch = nest_pools(batch, max_history)
    width = tf.maximum(tf.reduce_max(spans(batch["valid"])), 1)
    start = max_history - width
    out = dict(batch)
    for key in SEQUENCE_KEYS:
        out[key] = batch[key][:, start:]
    if POOLS in batch:
        out[POOLS] = batch[POOLS][:, start:].merge_dims(0, 1)
    return out


def by_span(batches, max_history: int, batch_size: int):
    """Inference batches regrouped by history span and cut to it (what the
    encoder costs then follows the events, not the window).

    Returns (batches without pools, order): example ``order[i]`` of the input is
    example ``i`` of the output, for realigning per-example labels.
    """
    if not batches:
        return [], np.zeros(0, np.int64)
    parts = [{k: v for k, v in b.items() if k != POOLS} for b in batches]
    every = tf.nest.map_structure(lambda *xs: tf.concat(xs, axis=0), *parts)
    order = np.argsort(spans(every["valid"]).numpy(), kind="stable")
    out = []
    for start in range(0, len(order), batch_size):
        rows = tf.constant(order[start:start + batch_size])
        out.append(trim(tf.nest.map_structure(lambda x, rows=rows: tf.gather(x, rows), every),
                        max_history))
    return out, order


def span_histogram(dataset: tf.data.Dataset, max_history: int) -> np.ndarray:
    """Users per history span (index 0 .. ``max_history``) of the adapted (batched)
    dataset: one pass, from which both the token budget and the epoch length follow."""
    def add(counts, batch):
        return counts + tf.math.bincount(spans(batch["valid"]), minlength=max_history + 1,
                                         maxlength=max_history + 1, dtype=tf.int64)
    counts = dataset.reduce(tf.zeros([max_history + 1], tf.int64), add).numpy()
    if counts.sum() == 0:
        raise ValueError("the training split is empty: no user has enough history")
    return counts


def mean_span(histogram: np.ndarray) -> float:
    return float(np.dot(np.arange(len(histogram)), histogram) / max(histogram.sum(), 1))


def bucket_sizes(max_history: int, batch_size: int, mean: float) -> list:
    """Users per batch in each bucket: a token budget of ``batch_size`` × ``mean`` positions
    over the bucket's widest span."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    budget = batch_size * max(mean, 1.0)
    return [max(1, int(round(budget / b))) for b in bucket_bounds(max_history)]


def batches_per_epoch(histogram: np.ndarray, max_history: int, batch_size: int,
                      mean: float) -> int:
    """What ``bucketed`` yields per epoch: each bucket's users in full batches and one
    partial batch."""
    bounds = bucket_bounds(max_history)
    users = np.bincount(np.searchsorted(bounds, np.arange(len(histogram)), side="left"),
                        weights=histogram, minlength=len(bounds))
    sizes = bucket_sizes(max_history, batch_size, mean)
    return int(sum(math.ceil(n / size) for n, size in zip(users, sizes)))


def bucketed(dataset: tf.data.Dataset, max_history: int, batch_size: int, mean: float,
             seed: int = 0) -> tf.data.Dataset:
    """Re-batches adapted batches into length buckets of ~``batch_size`` × ``mean`` positions.

    Every user lands in exactly one batch; batches come out shuffled (a buffer of
    batches, reshuffled every epoch) so buckets interleave.
    """
    sizes = tf.constant(bucket_sizes(max_history, batch_size, mean), tf.int64)
    edges = tf.constant(bucket_bounds(max_history), tf.int32)

    def key(example):
        span = spans(example["valid"][None])[0]
        return tf.cast(tf.searchsorted(edges, span[None], side="left")[0], tf.int64)

    users = dataset.map(lambda b: nest_pools(b, max_history)).unbatch()
    grouped = users.group_by_window(
        key_func=key,
        reduce_func=lambda k, window: window.batch(tf.gather(sizes, k)),
        window_size_func=lambda k: tf.gather(sizes, k))
    return (grouped.shuffle(64, seed=seed, reshuffle_each_iteration=True)
            .map(lambda b: trim(b, max_history), num_parallel_calls=tf.data.AUTOTUNE)
            .prefetch(2))

