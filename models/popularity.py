"""Smoothed item popularity p_j, the fixed prior of the logit correction (STARS §4.3).

    p_j = (c_j + β) / (Σ_k c_k + β·|I|)

c_j is item j's training interaction count (the Transform ``item_popularity``
frequency vocabulary); β smooths it so that items nobody interacted with
(cold-start) still get a finite log-prior.  p is computed once and kept fixed.
"""
from __future__ import annotations

import logging

import numpy as np
import tensorflow as tf

log = logging.getLogger(__name__)


def popularity_log_prior(counts, beta: float = 1.0) -> tf.Tensor:
    """log p_j, float32 [I], for counts aligned with the catalogue item order.

    Computed in float64: Σc can be large enough that float32 loses the rare items.
    """
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    c = tf.cast(tf.convert_to_tensor(counts), tf.float64)
    total = tf.reduce_sum(c) + beta * tf.cast(tf.size(c), tf.float64)
    return tf.cast(tf.math.log(c + beta) - tf.math.log(total), tf.float32)


def read_popularity_counts(vocab_file: str, item_vocabulary: list[str],
                           return_unknown: bool = False):
    """Counts c_j from a tf.Transform frequency vocabulary, in ``item_vocabulary`` order.

    Each line is "COUNT ITEM" (the item may itself contain spaces, so only the
    first space splits).  Catalogue items absent from the file get 0; items of
    the file that are not in the catalogue (including Transform's dummy entry of
    an empty vocabulary) are ignored, counted and logged.  Returns float64 [I]
    counts (weighted vocabularies hold fractional frequencies), and with
    ``return_unknown`` also the number of ignored file entries.
    """
    index = {item: i for i, item in enumerate(item_vocabulary)}
    counts = np.zeros(len(item_vocabulary), np.float64)
    unknown = 0
    with tf.io.gfile.GFile(vocab_file, "rb") as f:
        for line_number, raw in enumerate(f, 1):
            line = raw.decode("utf-8").rstrip("\r\n")
            if not line:
                continue
            count, sep, item = line.partition(" ")
            if not sep:
                raise ValueError(f"{vocab_file}:{line_number}: expected 'COUNT ITEM', got {line!r}")
            position = index.get(item)
            if position is None:
                unknown += 1
            else:
                counts[position] += float(count)
    if unknown:
        log.warning("%d popularity entries of %s are not in the catalogue and were ignored",
                    unknown, vocab_file)
    return (counts, unknown) if return_unknown else counts
