"""The successor source: what followed the user's latest items in training, NI's second source.

Item b counts 1/d after item a when it follows a by d ≤ ``WINDOW`` events in a training
example's sequence (a ≠ b).  A request's count of item j sums the counts after its latest
known events with the recency profile of ``models.latest_items`` (1, ½, ¼), and NI's score
becomes

    s_j = h_next · w_j + γ · log(1 + count_j).

The count is a high-rank item-to-item signal that a d-dimensional dot product does not
hold (a rank-128 SVD of Beauty's keeps half of its ranking quality), and it is what
LambdaMART's candidate generator and features are made of.  γ is not trained: like η and
the cold-item norm it is chosen on the validation target after training
(``choose_weight``; 0 = off, ties to the smaller), so training is unchanged.  Trained in,
it reached the same figure and the encoder came to lean on it (BUILD_NOTES.md,
"Offline evaluation").

The count depends on the request's latest items, so unlike the item trend it cannot be a
coordinate of the index: serving adds it after the search, exactly (``merge_top_k``).
"""
from __future__ import annotations

import dataclasses
from typing import Iterable, Optional, Sequence

import numpy as np
import tensorflow as tf

from models.latest_items import RECENCY, recency_weights

WINDOW = 3
WEIGHTS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)   # γ tried on the validation target, ascending


def successor_pairs(sequences: Iterable[Sequence[int]], window: int = WINDOW):
    """(sources, successors, weights): one entry per ordered pair (a, b) with b at d ≤
    ``window`` events after a in a sequence (a ≠ b), weighted 1/d."""
    rows, cols, weights = [], [], []
    for sequence in sequences:
        seq = np.asarray(sequence, np.int64)
        for d in range(1, window + 1):
            a, b = seq[:-d], seq[d:]
            keep = a != b
            rows.append(a[keep])
            cols.append(b[keep])
            weights.append(np.full(int(keep.sum()), 1.0 / d, np.float32))

    def cat(parts, dtype):
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)

    return cat(rows, np.int64), cat(cols, np.int64), cat(weights, np.float32)


def successor_matrix(sequences: Iterable[Sequence[int]], num_items: int,
                     window: int = WINDOW):
    """scipy CSR [I, I]: row a holds the windowed counts of the items that followed a."""
    return pair_matrix(*successor_pairs(sequences, window), num_items)


def pair_matrix(sources, successors, weights, num_items: int):
    """scipy CSR [I, I] of weighted (source, successor) pairs, repeats summed."""
    from scipy import sparse
    matrix = sparse.csr_matrix((np.asarray(weights, np.float32),
                                (np.asarray(sources, np.int64), np.asarray(successors, np.int64))),
                               shape=(num_items, num_items))
    matrix.sum_duplicates()
    matrix.sort_indices()
    return matrix


def example_sequences(histories: Sequence[np.ndarray], targets: Sequence[np.ndarray]) -> list:
    """Each training example's events: its known history items (catalogue indices, ≥ 0),
    then its first target (the next event; later targets belong to later examples)."""
    out = []
    for history, target in zip(histories, targets):
        seq = np.concatenate([np.asarray(history, np.int64), np.asarray(target, np.int64)[:1]])
        out.append(seq[seq >= 0])
    return out


@dataclasses.dataclass(frozen=True)
class SuccessorTable:
    """The counts as CSR arrays: item a's successors are ``successors[row_splits[a]:
    row_splits[a + 1]]``, with ``counts`` alongside."""
    row_splits: np.ndarray   # int64 [I + 1]
    successors: np.ndarray   # int64 [nnz]
    counts: np.ndarray       # float32 [nnz]

    @classmethod
    def from_sequences(cls, sequences, num_items: int, window: int = WINDOW) -> "SuccessorTable":
        return cls.from_matrix(successor_matrix(sequences, num_items, window))

    @classmethod
    def from_matrix(cls, matrix) -> "SuccessorTable":
        """From a CSR count matrix (``pair_matrix``)."""
        return cls(matrix.indptr.astype(np.int64), matrix.indices.astype(np.int64),
                   matrix.data.astype(np.float32))

    @classmethod
    def empty(cls, num_items: int, entries: int) -> "SuccessorTable":
        """A table of ``entries`` zero entries: the layout a checkpoint then restores."""
        return cls(np.zeros(num_items + 1, np.int64), np.zeros(entries, np.int64),
                   np.zeros(entries, np.float32))

    @property
    def num_items(self) -> int:
        return len(self.row_splits) - 1


class SuccessorSource(tf.keras.layers.Layer):
    """The count table and γ (a model-selection choice, not trained)."""

    def __init__(self, table: SuccessorTable, **kwargs):
        kwargs.setdefault("dtype", "float32")  # a count term: full precision under mixed
        super().__init__(**kwargs)
        self.num_items = table.num_items
        self.entries_count = len(table.successors)
        self.row_splits = tf.Variable(table.row_splits, trainable=False, name="row_splits")
        self.successors = tf.Variable(table.successors, trainable=False, name="successors")
        self.counts = tf.Variable(table.counts, trainable=False, name="counts")
        self.weight = tf.Variable(0.0, trainable=False, name="successor_weight")
        self.built = True   # every variable exists now; training never calls the layer

    def user_counts(self, items, valid):
        """(rows [M], items [M], counts [M]) int64, int64, float32: each request row's
        successors of its latest events (``items``/``valid`` [B, L] as the model's inputs)
        with their recency-weighted counts, one entry per (row, item)."""
        weights = recency_weights(items, valid)
        sources = tf.maximum(tf.cast(items, tf.int64), 0)
        starts = tf.gather(self.row_splits, sources)
        lengths = tf.gather(self.row_splits, sources + 1) - starts
        lengths = tf.where(weights > 0, lengths, tf.zeros_like(lengths))
        spans = tf.ragged.range(tf.reshape(starts, [-1]), tf.reshape(starts + lengths, [-1]))
        event = spans.value_rowids()                    # which (row, position) it follows
        rows = event // tf.cast(tf.shape(items)[1], tf.int64)
        successors = tf.gather(self.successors, spans.flat_values)
        values = (tf.gather(self.counts, spans.flat_values) *
                  tf.gather(tf.reshape(weights, [-1]), event))
        num_items = tf.constant(self.num_items, tf.int64)
        keys, where = tf.unique(rows * num_items + successors)
        counts = tf.math.unsorted_segment_sum(values, where, tf.shape(keys)[0])
        return keys // num_items, keys % num_items, counts

    def log_counts(self, items, valid):
        """[B, I] log(1 + count_j) of each request over the whole catalogue."""
        rows, successors, counts = self.user_counts(items, valid)
        shape = tf.stack([tf.shape(items, out_type=tf.int64)[0],
                          tf.constant(self.num_items, tf.int64)])
        return tf.math.log1p(tf.scatter_nd(tf.stack([rows, successors], 1), counts, shape))

    def call(self, items, valid):
        """[B, I] γ · log(1 + count_j): NI's second-source term."""
        return self.weight * self.log_counts(items, valid)

    def merge_top_k(self, index_scores, index_items, queries, vectors, items, valid, k: int,
                    item_bias=None):
        """(scores [B, k], items [B, k]): the top k by ``query · vector_j (+ item_bias_j) +
        γ log(1 + count_j)`` from the index's answer and the latest events' successors.

        Exact: an item without a count scores what the index scores, so if it belongs in
        the top k it is in the index's top k (``index_scores``/``index_items`` [B, K ≥ k],
        catalogue indices); every other item in the answer is a successor.  So the union
        of both, ranked by the full score (a successor the index did not return is scored
        here the index's way: ``queries`` [B, D] against ``vectors`` [I, D], plus
        ``item_bias`` [I] when the index holds one, e.g. the item trend), holds the exact
        top k, as exact as the index's own answer.
        """
        batch = tf.shape(index_items, out_type=tf.int64)[0]
        width = tf.shape(index_items, out_type=tf.int64)[1]
        num_items = tf.constant(self.num_items, tf.int64)
        rows, successors, counts = self.user_counts(items, valid)
        gamma = tf.cast(self.weight, tf.float32)
        # The index's answer, each with its count (0 for a non-successor).
        index_items = tf.cast(index_items, tf.int64)
        answer_rows = tf.repeat(tf.range(batch), width)
        answer_keys = answer_rows * num_items + tf.reshape(index_items, [-1])
        keys = rows * num_items + successors
        order = tf.argsort(keys)
        sorted_keys, sorted_counts = tf.gather(keys, order), tf.gather(counts, order)
        found, slot = _lookup(answer_keys, sorted_keys)
        padded_counts = tf.concat([sorted_counts, tf.zeros([1], tf.float32)], 0)
        answer_counts = tf.where(found, tf.gather(padded_counts, slot), 0.0)
        answer_total = (tf.reshape(tf.cast(index_scores, tf.float32), [-1]) +
                        gamma * tf.math.log1p(answer_counts))
        # Successors the index did not return, scored the index's way.
        returned, _ = _lookup(keys, tf.sort(answer_keys))
        extra = tf.logical_not(returned)
        extra_rows, extra_items = tf.boolean_mask(rows, extra), tf.boolean_mask(successors, extra)
        extra_total = (tf.reduce_sum(tf.gather(tf.cast(queries, tf.float32), extra_rows) *
                                     tf.gather(tf.cast(vectors, tf.float32), extra_items), 1) +
                       gamma * tf.math.log1p(tf.boolean_mask(counts, extra)))
        if item_bias is not None:
            extra_total += tf.gather(tf.cast(item_bias, tf.float32), extra_items)
        all_rows = tf.concat([answer_rows, extra_rows], 0)
        order = tf.argsort(all_rows, stable=True)

        def ragged(values, pad):
            return tf.RaggedTensor.from_value_rowids(
                tf.gather(values, order), tf.gather(all_rows, order), nrows=batch).to_tensor(pad)

        totals = ragged(tf.concat([answer_total, extra_total], 0), float("-inf"))
        candidates = ragged(tf.concat([tf.reshape(index_items, [-1]), extra_items], 0),
                            tf.constant(-1, tf.int64))
        top = tf.math.top_k(totals, k=k)
        return top.values, tf.gather(candidates, top.indices, batch_dims=1)


def _lookup(keys, sorted_keys):
    """([N] bool, [N] int): which ``keys`` are in ``sorted_keys`` (ascending) and where."""
    size = tf.size(sorted_keys, out_type=tf.int64)
    slot = tf.minimum(tf.searchsorted(sorted_keys, keys, out_type=tf.int64),
                      tf.maximum(size - 1, 0))
    padded = tf.concat([sorted_keys, tf.constant([-1], tf.int64)], 0)
    return tf.logical_and(size > 0, tf.equal(tf.gather(padded, slot), keys)), slot


def choose_weight(model, ranking) -> Optional[dict]:
    """Model selection of γ on the validation target: each of ``WEIGHTS`` is scored by
    ``ranking`` (a ``ValidationRanking``; NI masked NDCG@10, the score γ changes) and the
    best is kept, ties to the smaller.  Leaves ``model.successor_source.weight`` set;
    returns what was tried and chosen, or None for a model without the source or a
    ranking without NI."""
    source = getattr(model, "successor_source", None)
    if source is None or "ni" not in ranking.variants:
        return None
    queries = {"ni": ranking.user_queries()["ni"]}   # γ is not in the encoder
    tried = []
    for weight in WEIGHTS:
        source.weight.assign(weight)
        hr, ndcg = ranking.scores(queries)["ni"]
        tried.append({"weight": weight, "val_hr@10": round(hr, 5), "val_ndcg@10": round(ndcg, 5)})
    best = max(tried, key=lambda t: (t["val_ndcg@10"], -t["weight"]))
    source.weight.assign(best["weight"])
    return {"chosen": best["weight"], "window": WINDOW, "recency": list(RECENCY),
            "tried": tried}


__all__ = ["SuccessorSource", "SuccessorTable", "WEIGHTS", "WINDOW", "choose_weight",
           "example_sequences", "pair_matrix", "successor_matrix", "successor_pairs"]
