"""The [USER] token (STARS §4.1): coarse static user features -> one token of width d.

Numeric features arrive z-scored with a missing flag and as quantile buckets;
categorical ones as vocabulary ids (high-cardinality ones like e-mail domain get
small embedding tables).  Everything is concatenated and projected to d.
"""
from typing import Mapping

import tensorflow as tf


class UserToken(tf.keras.layers.Layer):
    """``vocab_sizes``: categorical feature -> number of ids (OOV included)."""

    def __init__(self, numeric_features, vocab_sizes: Mapping[str, int], num_buckets: int,
                 d_model: int, embedding_dim: int = 8, **kwargs):
        super().__init__(**kwargs)
        self.numeric_features = tuple(numeric_features)
        self.categorical_features = tuple(sorted(vocab_sizes))
        self.numeric = tf.keras.layers.Dense(d_model, name="numeric")
        self.buckets = {name: tf.keras.layers.Embedding(num_buckets + 1, embedding_dim,
                                                        name=f"{name}_bucket")
                        for name in self.numeric_features}
        self.categorical = {name: tf.keras.layers.Embedding(
            vocab_sizes[name], min(embedding_dim * 2, max(2, vocab_sizes[name])), name=name)
            for name in self.categorical_features}
        self.projection = tf.keras.layers.Dense(d_model, name="projection")
        self.bias = self.add_weight(name="user_bias", shape=(d_model,), initializer="zeros")

    def call(self, user: Mapping[str, tf.Tensor]):
        """``user``: name -> [B] tensors (``<n>_z``, ``<n>_missing``, ``<n>_bucket``,
        ``<c>_id``)."""
        parts = []
        if self.numeric_features:
            numeric = tf.stack([tf.cast(user[f"{n}_{s}"], tf.float32)
                                for n in self.numeric_features for s in ("z", "missing")], -1)
            parts.append(self.numeric(numeric))
            parts += [self.buckets[n](user[f"{n}_bucket"]) for n in self.numeric_features]
        parts += [self.categorical[n](user[f"{n}_id"]) for n in self.categorical_features]
        if not parts:
            return tf.zeros_like(self.bias)[None, :] + self.bias
        return self.projection(tf.concat(parts, -1)) + self.bias
