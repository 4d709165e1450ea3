"""Semantic match to the latest items: a text-similarity part of the NI score.

Shoppers' next purchase often resembles what they just bought (a refill, the same
brand's matching product).  The transformer can carry the latest item's token to
h_next, but its learned coordinates also have to hold everything else; an explicit
term can say it directly.  So the NI score gets

    s_j = h_next · w_j + Σ_k a_k · key(latest_k) · key(j),

where key(i) is item i's frozen text embedding, unit-normalised (at ``dim`` below the
text's width: projected onto the catalogue's top ``dim`` singular directions and
normalised again), and a_k (k = 0 the latest event, 1 the one before, ...) are learned
weights that start at 0, so an untrained match changes nothing.  A cold item has a
key (its text), so it is matched from its first day.

In the serving space the keys are appended to the item vectors and Σ_k a_k key(latest_k)
to the NI query; GI's query gets zeros there.  Retrieval stays one inner product.

Off in every preset (``semantic_match_dim`` = 0): on Amazon Beauty's validation target
it moved STARS by +2% at the text's full width and −1% at 128 (BUILD_NOTES.md).
"""
from __future__ import annotations

import numpy as np

import stars  # noqa: F401
import tensorflow as tf

RECENT = 3       # latest events matched
WEIGHT_SCALE = 10.0  # a_k = scale · raw: Adam moves a scalar ~lr per step; Beauty fits ~1.3–2


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.maximum(norms, 1e-12)).astype(np.float32)


def semantic_keys(text: np.ndarray, dim: int) -> np.ndarray:
    """[I, min(dim, d_e)] unit keys: the unit text rows projected onto their top right
    singular vectors (uncentred, so the shop's common direction is kept as in the
    cosine), normalised again.  All-zero text rows keep all-zero keys."""
    if dim <= 0:
        raise ValueError(f"the semantic match needs a positive dimension, got {dim}")
    unit = unit_rows(np.asarray(text, np.float64))
    if dim < unit.shape[1] and len(unit) > 1:
        _, _, basis = np.linalg.svd(unit.astype(np.float64), full_matrices=False)
        unit = unit @ basis[:dim].T.astype(np.float32)
    return unit_rows(unit[:, :dim])


class SemanticMatch(tf.keras.layers.Layer):
    """The item keys and the learned recency weights a_k of the NI query's text part."""

    def __init__(self, text: np.ndarray, dim: int, **kwargs):
        kwargs.setdefault("dtype", "float32")  # a cosine term: full precision under mixed
        super().__init__(**kwargs)
        keys = semantic_keys(text, dim)
        self.dim = keys.shape[1]
        self.keys = tf.Variable(keys, trainable=False, name="semantic_keys")
        self.weights_raw = self.add_weight(name="recency_weights", shape=[RECENT],
                                           initializer="zeros")

    @property
    def recency_weights(self):
        return WEIGHT_SCALE * self.weights_raw

    def item_keys(self, indices=None):
        """[..., dim] the keys of ``indices`` (every item when None)."""
        return self.keys if indices is None else tf.gather(self.keys, tf.cast(indices, tf.int32))

    def queries(self, items, valid):
        """``items`` [B, L] catalogue indices (−1 unknown), ``valid`` [B, L] ->
        [B, L, dim]: at each position t, Σ_k a_k key(items[t − k]) over the known events
        at t − k (left padding: earlier events are to the left)."""
        items = tf.cast(items, tf.int32)
        known = tf.logical_and(tf.cast(valid, tf.bool), items >= 0)
        length = tf.shape(items)[1]
        weights = self.recency_weights
        out = tf.zeros(tf.concat([tf.shape(items), [self.dim]], 0))
        for k in range(RECENT):
            shifted = tf.pad(items, [[0, 0], [k, 0]], constant_values=-1)[:, :length]
            present = tf.pad(known, [[0, 0], [k, 0]])[:, :length]
            keys = tf.gather(self.keys, tf.maximum(shifted, 0))
            out += weights[k] * keys * tf.cast(present, keys.dtype)[..., None]
        return out
