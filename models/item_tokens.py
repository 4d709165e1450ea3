"""Semantic item tokens (STARS §4.1): x_i = W [ e_i + δ_i ; g(t_i) ].

* ``e_i``: the frozen text embedding (a constant, never trained), optionally
  standardised over the catalogue (``text_standardize``: minus the catalogue mean,
  over the per-dimension spread).  Sentence embeddings of one shop's titles share
  a large common direction (Beauty, MiniLM: mean pairwise cosine 0.34) and vary by
  ~0.04 per dimension, so unstandardised the text moves the token ~20× less than
  the same Adam step on δ does: item identity swamps the text from the first epoch;
* ``δ_i``: a learnable per-item residual, zero-initialised, frozen for the first
  epochs (``delta_gate`` = 0) and then trained at a smaller effective learning
  rate: δ = s·δ_raw, and Adam's step on δ_raw is scale-free, so δ moves s times
  slower.  Items with no training interactions keep δ = 0 (masked), so a
  cold-start item is represented by its text and tags alone; and in training
  δ is dropped for a random ``delta_dropout`` share of the items of each call, so
  the model also learns to score an item from its text and tags alone (the
  cold-start case) instead of leaning on δ for every warm item;
* ``g(t_i)``: the multi-hot attribute tags through a linear map or a 2-layer MLP.

The same token (projected) is the item's output embedding w_j: weights are tied,
which is what lets a cold-start item be scored at all.

With neither text nor tags (the ID-only SASRec baseline) the token is δ itself, SASRec's
embedding table: W δ, a learned map of a free table, adds no expressive power and ranked
Beauty's validation targets 3% lower (BUILD_NOTES.md).
"""
import numpy as np
import tensorflow as tf

from models.config import ModelConfig
from models.item_catalog import ItemCatalog


def text_standardizer(text: np.ndarray, enabled: bool):
    """(center, scale) [d_e] such that (e - center) * scale has zero mean and unit
    variance per dimension over the catalogue; (0, 1) when not enabled.  Constant
    dimensions keep scale 1.  Held in non-trainable variables, so they are saved and
    restored with the weights like the text table itself."""
    dim = text.shape[1]
    if not enabled or len(text) < 2:
        return np.zeros(dim, np.float32), np.ones(dim, np.float32)
    std = text.std(axis=0)
    scale = np.where(std > 1e-8, 1.0 / np.maximum(std, 1e-8), 1.0)
    return text.mean(axis=0).astype(np.float32), scale.astype(np.float32)


class ItemTokenizer(tf.keras.layers.Layer):
    def __init__(self, catalog: ItemCatalog, config: ModelConfig, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.num_items = len(catalog)
        text = catalog.text_embedding if config.use_text else np.zeros(
            (self.num_items, config.d_model), np.float32)
        # Catalogue tables are non-trainable variables, not graph constants: a 100k-item
        # catalogue would otherwise bloat every traced graph and the SavedModel's GraphDef.
        self.text_embedding = tf.Variable(text.astype(np.float32), trainable=False,
                                          name="text_embedding")
        center, scale = text_standardizer(text, config.text_standardize and config.use_text)
        self.text_center = tf.Variable(center, trainable=False, name="text_center")
        self.text_scale = tf.Variable(scale, trainable=False, name="text_scale")
        self.tags = tf.Variable(catalog.tag_multi_hot.astype(np.float32), trainable=False,
                                name="tag_multi_hot")
        self.has_interactions = tf.Variable((catalog.counts > 0).astype(np.float32)[:, None],
                                            trainable=False, name="has_interactions")
        self.delta_scale = float(config.delta_lr_scale)
        if not 0.0 <= config.delta_dropout < 1.0:
            raise ValueError(f"delta_dropout must be in [0, 1), got {config.delta_dropout}")
        if config.tag_mlp:
            self.tag_projection = tf.keras.Sequential([
                tf.keras.layers.Dense(config.tag_dim, activation="relu"),
                tf.keras.layers.Dense(config.tag_dim)], name="tag_projection")
        else:
            self.tag_projection = tf.keras.layers.Dense(config.tag_dim, use_bias=False,
                                                        name="tag_projection")
        # Without text or tags the token is the ID embedding δ itself (module docstring).
        self.id_only = not (config.use_text or config.use_tags)
        if self.id_only and not config.use_delta:
            raise ValueError("an item token needs text, tags or δ: all three are off")
        if not self.id_only:
            self.token_projection = tf.keras.layers.Dense(config.d_model, name="token_projection")

    def build(self, input_shape=None):
        if self.config.use_delta:
            self.delta_raw = self.add_weight(
                name="delta_raw", shape=(self.num_items, self.text_embedding.shape[1]),
                initializer="zeros" if self.config.use_text else
                tf.keras.initializers.TruncatedNormal(stddev=0.02 / self.delta_scale),
                trainable=True)
            self.delta_gate = self.add_weight(
                name="delta_gate", shape=(), trainable=False,
                initializer=tf.keras.initializers.Constant(
                    0.0 if self.config.delta_frozen_epochs > 0 else 1.0))
        super().build(input_shape)

    def delta(self, indices, training=False):
        """δ for the given items (zero while frozen, for never-seen items and, in
        training, for the items dropped by ``delta_dropout``)."""
        raw = tf.gather(self.delta_raw, indices)
        gate = tf.cast(self.delta_gate, raw.dtype) * self.delta_scale
        present = tf.gather(self.has_interactions, indices)
        rate = self.config.delta_dropout
        if training and rate > 0:  # one draw per catalogue item: its δ is kept or not
            kept = tf.cast(tf.random.uniform([self.num_items, 1]) >= rate, present.dtype)
            present = present * tf.gather(kept, indices)
        return gate * raw * tf.cast(present, raw.dtype)

    def call(self, indices, training=False):
        """Item indices (any shape) -> tokens [..., d_model]."""
        if not self.built:
            self.build(None)
        indices = tf.cast(indices, tf.int32)
        dtype = self.compute_dtype  # bfloat16/float16 under mixed precision
        semantic = tf.cast((tf.gather(self.text_embedding, indices) - self.text_center)
                           * self.text_scale, dtype)
        if self.config.use_delta:
            semantic = semantic + tf.cast(self.delta(indices, training), dtype)
        if self.id_only:
            return semantic
        parts = [semantic]
        if self.config.use_tags:
            parts.append(self.tag_projection(tf.cast(tf.gather(self.tags, indices), dtype)))
        return self.token_projection(tf.concat(parts, axis=-1))

    def all_tokens(self, training=False):
        return self(tf.range(self.num_items), training=training)
