"""The user's latest items, weighted by recency: what "items like / after the latest ones" reads.

Both item-to-item parts of the NI score look at the same few events: the semantic match
(``models.semantic_match``: text similarity to them) and the successor source
(``models.successor_source``: what followed them in training).  One recency profile
r = (1, ½, ¼) over the latest three known events serves both, and the offline
co-occurrence baseline (``evaluation.cooccurrence``) uses it too, so the three
agree on what "latest" means.
"""
from __future__ import annotations

import tensorflow as tf

RECENCY = (1.0, 0.5, 0.25)           # r_k, k = 0 the latest known event


def recency_weights(items, valid):
    """``items`` [B, L] catalogue indices (−1 unknown, left padded: the latest event is
    rightmost), ``valid`` [B, L] -> [B, L] float32: r_k at the k-th latest known event for
    k < len(RECENCY), 0 everywhere else (padding, unknown items, older events)."""
    items = tf.cast(items, tf.int32)
    known = tf.logical_and(tf.cast(valid, tf.bool), items >= 0)
    # 0 for the latest known event, 1 for the one before, ...
    rank = tf.cumsum(tf.cast(known, tf.int32), axis=1, reverse=True) - 1
    profile = tf.constant(RECENCY + (0.0,), tf.float32)
    weights = tf.gather(profile, tf.clip_by_value(rank, 0, len(RECENCY)))
    return tf.where(known & (rank < len(RECENCY)), weights, 0.0)


__all__ = ["RECENCY", "recency_weights"]
