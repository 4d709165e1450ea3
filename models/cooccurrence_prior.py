"""Co-occurrence prior: how often each item followed the user's latest items in training.

Item b counts 1/d after item a when it follows a by d ≤ ``WINDOW`` events in a user's
training sequence (a ≠ b).  A request's count for item j is the counts after its last
``len(RECENT_WEIGHTS)`` events, weighted 1, ½, ¼ from the latest, and the logit gets

    s_j = h · w_j + γ · log(1 + count_j),

with γ learned from 0 (an untrained prior changes nothing).  The count is a high-rank
item-to-item signal that a d-dimensional dot product does not hold (on Beauty a rank-128
SVD of it keeps half its ranking quality), and it is what LambdaMART's candidate
generator and features are made of.  Post hoc on a trained STARS it lifted Beauty's
validation NDCG@10 by 6% (BUILD_NOTES.md); trained in, the encoder learns what the count
does not already say.

In training, a position's count leaves out what the user's own sequence adds after that
position (its target among them): at a request those events have not happened yet, and a
count that holds its own target would teach γ to trust it too much.
"""
from __future__ import annotations

import dataclasses
from typing import Iterable, Sequence

import numpy as np

import stars  # noqa: F401
import tensorflow as tf

WINDOW = 3
RECENT_WEIGHTS = (1.0, 0.5, 0.25)


def successor_counts(sequences: Iterable[Sequence[int]], num_items: int, window: int = WINDOW):
    """scipy CSR [I, I]: row a holds the windowed counts of the items that followed a
    (catalogue indices; negative = unknown item, skipped as a source or successor)."""
    from scipy import sparse
    rows, cols, weights = [], [], []
    for sequence in sequences:
        seq = np.asarray(sequence, np.int64)
        for d in range(1, window + 1):
            a, b = seq[:-d], seq[d:]
            keep = (a != b) & (a >= 0) & (b >= 0)
            rows.append(a[keep])
            cols.append(b[keep])
            weights.append(np.full(int(keep.sum()), 1.0 / d, np.float32))
    cat = lambda parts, dtype: np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)
    return sparse.csr_matrix((cat(weights, np.float32),
                              (cat(rows, np.int64), cat(cols, np.int64))),
                             shape=(num_items, num_items))


@dataclasses.dataclass(frozen=True)
class SuccessorTable:
    """The counts as CSR arrays: item a's successors are ``successors[row_splits[a]:
    row_splits[a + 1]]`` with ``counts`` alongside."""
    row_splits: np.ndarray   # int64 [I + 1]
    successors: np.ndarray   # int32 [nnz]
    counts: np.ndarray       # float32 [nnz]

    @classmethod
    def from_sequences(cls, sequences, num_items: int, window: int = WINDOW) -> "SuccessorTable":
        matrix = successor_counts(sequences, num_items, window)
        matrix.sum_duplicates()
        matrix.sort_indices()
        return cls(matrix.indptr.astype(np.int64), matrix.indices.astype(np.int32),
                   matrix.data.astype(np.float32))

    @classmethod
    def empty(cls, num_items: int, nnz: int) -> "SuccessorTable":
        """A table of ``nnz`` zero entries: the layout a checkpoint then restores."""
        return cls(np.zeros(num_items + 1, np.int64), np.zeros(nnz, np.int32),
                   np.zeros(nnz, np.float32))

    @property
    def num_items(self) -> int:
        return len(self.row_splits) - 1


def recent_events(items, valid):
    """([B, L, R] item indices, [B, L, R] weights): at each position t, the events at t,
    t − 1, ... with ``RECENT_WEIGHTS`` (0 where the position is padding or unknown)."""
    items = tf.cast(items, tf.int32)
    valid = tf.cast(valid, tf.bool)
    shifted_items, shifted_weights = [], []
    for k, weight in enumerate(RECENT_WEIGHTS):
        pad = [[0, 0], [k, 0]]
        it = tf.pad(items, pad, constant_values=-1)[:, :tf.shape(items)[1]]
        ok = tf.pad(valid, pad, constant_values=False)[:, :tf.shape(items)[1]]
        ok = tf.logical_and(ok, it >= 0)
        shifted_items.append(tf.maximum(it, 0))
        shifted_weights.append(tf.where(ok, weight, 0.0))
    return tf.stack(shifted_items, -1), tf.stack(shifted_weights, -1)


def own_future(items, valid, next_items, window: int = WINDOW):
    """([B, L, P] items, [B, L, P] weights ≤ 0): what the user's own sequence adds after
    position t to the counts after t's recent events: for the event at t − k and a
    successor d ≤ window steps after it with d > k, −(recent weight k)/d at that
    successor (``next_items[t + d − k − 1]``), unless it is the event's own item."""
    items = tf.cast(items, tf.int32)
    next_items = tf.cast(next_items, tf.int32)
    length = tf.shape(items)[1]
    recent, recent_w = recent_events(items, valid)
    out_items, out_weights = [], []
    for k, weight in enumerate(RECENT_WEIGHTS):
        for d in range(k + 1, window + 1):
            ahead = d - k - 1   # next_items[t + ahead] is the event d steps after t − k
            succ = tf.pad(next_items, [[0, 0], [0, ahead]], constant_values=-1)[:, ahead:]
            succ = succ[:, :length]
            source = recent[..., k]
            ok = tf.logical_and(recent_w[..., k] > 0,
                                tf.logical_and(succ >= 0, tf.not_equal(succ, source)))
            out_items.append(tf.maximum(succ, 0))
            out_weights.append(tf.where(ok, -weight / d, 0.0))
    return tf.stack(out_items, -1), tf.stack(out_weights, -1)


class CooccurrencePrior(tf.keras.layers.Layer):
    """γ · log(1 + count): the co-occurrence term of every (request, item) logit."""

    def __init__(self, table: SuccessorTable, **kwargs):
        kwargs.setdefault("dtype", "float32")  # a count term: full precision under mixed
        super().__init__(**kwargs)
        self.num_items = table.num_items
        self.nnz = len(table.successors)
        self.row_splits = tf.Variable(table.row_splits, trainable=False, name="row_splits")
        self.successors = tf.Variable(table.successors, trainable=False, name="successors")
        self.counts = tf.Variable(table.counts, trainable=False, name="counts")
        self.gamma = self.add_weight(name="gamma", shape=[], initializer="zeros")

    def entries(self, recent, weights):
        """(rows [M], items [M], values [M]): the successors of each row's ``recent``
        events [N, R] with their counts × the event's weight (``weights`` [N, R], 0 =
        none); an item followed by several of the events has one entry per event."""
        recent = tf.cast(recent, tf.int64)
        starts = tf.gather(self.row_splits, recent)
        lengths = tf.gather(self.row_splits, recent + 1) - starts
        lengths = tf.where(weights > 0, lengths, tf.zeros_like(lengths))
        spans = tf.ragged.range(tf.reshape(starts, [-1]),
                                tf.reshape(starts + lengths, [-1]))
        pair = spans.value_rowids()                       # which (row, r) an entry is from
        rows = pair // tf.cast(tf.shape(recent)[1], tf.int64)
        items = tf.cast(tf.gather(self.successors, spans.flat_values), tf.int64)
        values = (tf.gather(self.counts, spans.flat_values) *
                  tf.gather(tf.reshape(tf.cast(weights, tf.float32), [-1]), pair))
        return rows, items, values

    def counts_after(self, recent, weights, extra=None, extra_weights=None):
        """[N, I] Σ_r weights[n, r] · counts[recent[n, r], :] (+ ``extra_weights`` at the
        ``extra`` items, [N, P]), floored at 0."""
        n = tf.shape(recent, out_type=tf.int64)[0]
        rows, items, values = self.entries(recent, weights)
        index = tf.stack([rows, items], 1)
        if extra is not None:
            extra_rows = tf.repeat(tf.range(n), tf.shape(extra, out_type=tf.int64)[1])
            index = tf.concat([index, tf.stack([extra_rows, tf.reshape(tf.cast(extra, tf.int64),
                                                                       [-1])], 1)], 0)
            values = tf.concat([values, tf.reshape(tf.cast(extra_weights, tf.float32),
                                                   [-1])], 0)
        dense = tf.scatter_nd(index, values, tf.stack([n, tf.cast(self.num_items, tf.int64)]))
        return tf.maximum(dense, 0.0)

    def call(self, recent, weights, extra=None, extra_weights=None):
        """[N, I] logit offsets over the whole catalogue."""
        return self.gamma * tf.math.log1p(self.counts_after(recent, weights, extra,
                                                            extra_weights))

    def at_latest(self, items, valid):
        """[B, I] the offsets of each example's request (after its latest known event)."""
        return self(*latest_events(items, valid))


def latest_events(items, valid):
    """([B, R] items, [B, R] weights): ``recent_events`` at each example's latest known
    event, the request's (all-zero weights for an empty history)."""
    recent, weights = recent_events(items, valid)
    positions = tf.broadcast_to(tf.range(tf.shape(items)[1])[None, :], tf.shape(items))
    latest = tf.reduce_max(tf.where(tf.cast(valid, tf.bool), positions, -1), axis=1)
    latest = tf.maximum(latest, 0)
    return (tf.gather(recent, latest, batch_dims=1),
            tf.gather(weights, latest, batch_dims=1))


__all__ = ["CooccurrencePrior", "RECENT_WEIGHTS", "SuccessorTable", "WINDOW", "latest_events",
           "own_future", "recent_events", "successor_counts"]
