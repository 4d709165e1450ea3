"""Directed co-occurrence counts of the training sequences: which items follow which.

Item b counts 1/d after item a when it follows a by d ≤ ``window`` events in a training
sequence (a ≠ b); a user's query is the counts that follow their last ``RECENT`` items,
weighted 1, ½, ¼ from the latest.  The count and the recency profile are the model's own
(``models.successor_source``, ``models.latest_items``): the ``cooccurrence`` baseline and
LambdaMART's candidate generator and features count what STARS' second retrieval source
serves (``stars_cooc`` in the offline evaluation).  From the training split only.
"""
from __future__ import annotations

import numpy as np

from models.latest_items import RECENCY as RECENT_WEIGHTS
from models.successor_source import WINDOW, example_sequences, successor_pairs

RECENT = len(RECENT_WEIGHTS)


def _sparse(rows, cols, values, n):
    from scipy import sparse
    return sparse.csr_matrix((np.asarray(values, np.float32), (rows, cols)), shape=(n, n))


class CooccurrenceCounts:
    """``matrix`` [I, I]: the windowed counts; ``transitions`` [I, I]: adjacent pairs only
    (d = 1, weight 1 each); ``out_degree`` [I]: each item's adjacent successors."""

    def __init__(self, train_split, num_items: int, window: int = WINDOW):
        self.num_items = n = int(num_items)
        rows, cols, weights = successor_pairs(
            example_sequences(train_split.history, train_split.targets), window)
        self.matrix = _sparse(rows, cols, weights, n)
        adjacent = weights == 1.0
        self.transitions = _sparse(rows[adjacent], cols[adjacent],
                                   np.ones(int(adjacent.sum())), n)
        self.out_degree = np.asarray(self.transitions.sum(axis=1)).ravel()

    def recent(self, histories) -> np.ndarray:
        """[n, I]: each item's count after the user's last ``RECENT`` items."""
        from scipy import sparse
        recent = [np.asarray(h)[::-1][:RECENT] for h in histories]   # most recent first
        q_rows = np.concatenate([np.full(len(r), i) for i, r in enumerate(recent)] or [[]])
        q_cols = np.concatenate(recent or [[]]).astype(np.int64)
        q_vals = np.concatenate([RECENT_WEIGHTS[:len(r)] for r in recent] or [[]])
        query = sparse.csr_matrix((q_vals.astype(np.float32), (q_rows.astype(np.int64), q_cols)),
                                  shape=(len(histories), self.num_items))
        return np.asarray((query @ self.matrix).todense(), np.float32)
