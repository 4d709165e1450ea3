"""Transformer encoder over [USER] + the item sequence, and the two read-outs (STARS §4.2).

Layout: position 0 is the [USER] token, positions 1..L the history, left-padded
so the latest event is always at position L.  Attention is causal, so the hidden
state at item position t sees only events up to t and can be trained to
predict event t+1 (every position is a training target).  The [USER] row sees
only itself in every layer but the last, where it attends to the whole
history: h_gen (long-term interest) summarises everything, yet no item
position ever sees a state that looked at its future.

* ``h_next`` = the hidden state at the last position (short-term intent, NI);
* ``h_gen``  = the hidden state at the [USER] position (general interest, GI).
"""
import tensorflow as tf


def attention_masks(valid):
    """``valid`` bool [B, 1+L] (position 0 = [USER]) -> (causal mask, last-layer mask) [B, T, T]."""
    length = tf.shape(valid)[1]
    causal = tf.linalg.band_part(tf.ones([length, length], tf.bool), -1, 0)
    keys = valid[:, None, :]
    causal = tf.logical_and(causal[None], keys)
    user_row = tf.concat([tf.ones_like(keys[:, :, :1]), keys[:, :, 1:]], axis=-1)
    last = tf.concat([user_row, causal[:, 1:, :]], axis=1)
    # A padded query row would otherwise attend to nothing; let it see itself.
    eye = tf.eye(length, dtype=tf.bool)[None]
    return tf.logical_or(causal, eye), tf.logical_or(last, eye)


class EncoderBlock(tf.keras.layers.Layer):
    def __init__(self, d_model, num_heads, ff_dim, dropout, **kwargs):
        super().__init__(**kwargs)
        self.attention = tf.keras.layers.MultiHeadAttention(
            num_heads, key_dim=d_model // num_heads, dropout=dropout)
        self.ff = tf.keras.Sequential([tf.keras.layers.Dense(ff_dim, activation="relu"),
                                       tf.keras.layers.Dense(d_model)])
        self.norm1 = tf.keras.layers.LayerNormalization(epsilon=1e-6)
        self.norm2 = tf.keras.layers.LayerNormalization(epsilon=1e-6)
        self.dropout = tf.keras.layers.Dropout(dropout)

    def call(self, x, mask, training=False):
        # Pre-norm: stabler for deep stacks and large learning rates.
        h = self.norm1(x)
        x = x + self.dropout(self.attention(h, h, attention_mask=mask, training=training),
                             training=training)
        return x + self.dropout(self.ff(self.norm2(x)), training=training)


class SequenceEncoder(tf.keras.layers.Layer):
    def __init__(self, d_model, num_layers, num_heads, ff_dim, dropout, **kwargs):
        super().__init__(**kwargs)
        self.blocks = [EncoderBlock(d_model, num_heads, ff_dim, dropout, name=f"block_{i}")
                       for i in range(num_layers)]
        self.norm = tf.keras.layers.LayerNormalization(epsilon=1e-6)
        self.dropout = tf.keras.layers.Dropout(dropout)

    def call(self, tokens, valid, training=False):
        """tokens [B, 1+L, d], valid bool [B, 1+L] -> hidden states [B, 1+L, d]."""
        causal, last = attention_masks(valid)
        x = self.dropout(tokens, training=training)
        for i, block in enumerate(self.blocks):
            x = block(x, last if i == len(self.blocks) - 1 else causal, training=training)
        return self.norm(x)
