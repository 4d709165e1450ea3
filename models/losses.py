"""Training losses of STARS (§4.3), as pure TensorFlow functions.

    s_j    = h · w_j − α · log p_j                      (popularity-corrected logit)
    L_next = −log softmax_C(s)[i+]                       (candidate slice C = {i+} ∪ N)
    L_neg  = −(1/|N|) Σ_{j∈N} log σ(−s_j)
    L_aux  = in-batch InfoNCE in the product-vocabulary space

Every function casts its inputs to float32 first: under mixed precision the
encoder emits float16, whose range is too small for a softmax over many
candidates (and for the large negative constant that masks logits).  Masks use
that finite constant rather than −inf so a fully masked row gives 0, not NaN,
and gradients stay finite.  Weighted means divide with ``divide_no_nan`` so a
batch whose rows are all masked (e.g. only padding) contributes 0.
"""
from __future__ import annotations

import tensorflow as tf

# Logit of a masked candidate: exp(MASKED - s) underflows to exactly 0 in float32
# for any realistic s, yet stays finite so 0 * MASKED is 0 and no NaN appears.
MASKED_LOGIT = -1e9


def _f32(x):
    return tf.cast(tf.convert_to_tensor(x), tf.float32)


def _weighted_mean(values, weights):
    """Σ w·v / Σ w over rows; 0 when Σ w = 0.  Rows of weight 0 are dropped with
    ``tf.where`` (not multiplied), so even a non-finite masked row cannot leak in."""
    if weights is None:
        return tf.reduce_mean(values)
    weights = tf.broadcast_to(_f32(weights), tf.shape(values))
    kept = tf.where(weights > 0, values * weights, tf.zeros_like(values))
    return tf.math.divide_no_nan(tf.reduce_sum(kept), tf.reduce_sum(weights))


def corrected_logits(scores, log_p, alpha):
    """s_j = scores_j − α·log p_j for broadcastable ``scores`` (h·w_j) and ``log_p``.

    Subtracting the log-prior removes the popularity bias the softmax would
    otherwise learn from the data (logQ-style correction); α = 0 recovers the
    plain dot-product logits.
    """
    return _f32(scores) - _f32(alpha) * _f32(log_p)


def next_item_loss(logits, weights=None, negative_mask=None):
    """L_next = −log softmax(logits)[:, 0], the weighted mean over rows.

    logits [B, 1+K] with the positive in column 0.  ``weights`` [B]: 0 masks a
    row (e.g. a padding position); the result is 0 when every weight is 0.
    ``negative_mask`` [B, K], True = a real negative: False entries (padding,
    an accidental copy of the positive) are removed from the softmax by a large
    finite negative logit, so a row with no negatives left costs 0.
    """
    logits = _f32(logits)
    if negative_mask is not None:
        negative_mask = tf.cast(negative_mask, tf.bool)
        keep = tf.concat([tf.ones_like(negative_mask[:, :1]), negative_mask], axis=1)
        logits = tf.where(keep, logits, MASKED_LOGIT)
    per_row = -tf.nn.log_softmax(logits, axis=1)[:, 0]
    return _weighted_mean(per_row, weights)


def excluded_negatives(candidates, excluded, labels):
    """bool, shaped like ``candidates`` [N, K] (item ids): True where a candidate is one of
    its row's ``excluded`` items [N, H] (ids, −1 = none) and not the row's label [N].

    The items a ranking will never show (the user's history under the masked protocol,
    the post-filter's exclusions) are not competitors the model must beat: leaving them
    in the softmax spends its gradient pushing down items that are removed anyway."""
    candidates = tf.cast(candidates, tf.int32)
    excluded = tf.cast(excluded, tf.int32)
    labels = tf.cast(labels, tf.int32)
    hit = tf.reduce_any(tf.logical_and(candidates[:, :, None] == excluded[:, None, :],
                                       excluded[:, None, :] >= 0), axis=-1)
    return tf.logical_and(hit, candidates != labels[:, None])


def _mask_excluded_columns(logits, excluded, labels):
    """Full-catalogue logits [N, I] with each row's ``excluded`` items [N, H] (ids, −1 =
    none) set to ``MASKED_LOGIT``, its own label kept (see ``excluded_negatives``)."""
    excluded = tf.cast(excluded, tf.int32)
    where = tf.where(tf.logical_and(excluded >= 0, excluded != labels[:, None]))
    columns = tf.gather_nd(excluded, where)
    indices = tf.stack([tf.cast(where[:, 0], tf.int32), columns], axis=1)
    updates = tf.fill(tf.shape(columns), tf.constant(MASKED_LOGIT, tf.float32))
    return tf.tensor_scatter_nd_update(logits, indices, updates)


def full_softmax_loss(h, item_emb, labels, log_p=None, alpha=0.0, weights=None, excluded=None,
                      offsets=None):
    """Cross-entropy over the whole catalogue: h [N, D] against item_emb [I, D].

    The ID-only SASRec baseline scores every item instead of a sampled slice.
    ``labels`` [N] are item indices; a negative label (padding) masks its row,
    like a 0 in ``weights`` [N].  ``log_p`` [I] (None = no correction) is
    subtracted with weight α, as in the sampled loss.  ``excluded`` [N, H] (item
    ids, −1 = none; None = nothing) are removed from each row's softmax, its label
    excepted (``excluded_negatives``).  ``offsets`` [N, I] (None = none) are added to
    the logits: terms of the item and the row's request alone (the item trend).
    """
    logits = tf.matmul(_f32(h), _f32(item_emb), transpose_b=True)
    if log_p is not None:
        logits = corrected_logits(logits, log_p[None, :], alpha)
    if offsets is not None:
        logits += _f32(offsets)
    labels = tf.cast(labels, tf.int32)
    if excluded is not None:
        logits = _mask_excluded_columns(logits, excluded, labels)
    valid = tf.cast(labels >= 0, tf.float32)
    weights = valid if weights is None else valid * _f32(weights)
    per_row = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.maximum(labels, 0), logits=logits)
    return _weighted_mean(per_row, weights)


def negative_loss(negative_logits, mask=None):
    """L_neg = −mean log σ(−s_j) = mean softplus(s_j) over the unmasked negatives.

    A per-negative sigmoid term that pushes every sampled negative down on an
    absolute scale, which the softmax (only relative) does not.  ``mask`` [B, K],
    True = counted; 0 when nothing is counted.
    """
    values = tf.nn.softplus(_f32(negative_logits))  # −log σ(−s), stable for large |s|
    return _weighted_mean(values, None if mask is None else tf.cast(mask, tf.float32))


def aux_vocabulary_loss(outputs, vocab_embeddings, temperature, weights=None, target_ids=None):
    """In-batch InfoNCE between item outputs [N, E] and their targets' vocabulary embeddings [N, E].

    Row i's positive is its own target's (fixed) vocabulary embedding; the
    other rows' vocabulary embeddings are its negatives, so related items are
    pulled together in a space the model cannot reshape.  Both sides are
    L2-normalised (cosine similarity / ``temperature``).  Rows sharing a
    target item are not negatives of each other (that would push an output away
    from its own target); same target means equal ``target_ids`` [N] when given,
    else identical vocabulary-embedding rows.  ``weights`` [N]: 0 masks a row,
    both as an anchor and as a negative of the others.  Training-only.
    """
    if isinstance(temperature, (int, float)) and temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    vocab = _f32(vocab_embeddings)
    queries = tf.math.l2_normalize(_f32(outputs), axis=1)
    keys = tf.math.l2_normalize(vocab, axis=1)
    logits = tf.matmul(queries, keys, transpose_b=True) / temperature
    if target_ids is None:  # identical rows = same item; ids from a row-wise unique
        _, target_ids = tf.raw_ops.UniqueV2(x=tf.stop_gradient(vocab), axis=[0])
    target_ids = tf.reshape(target_ids, [-1])
    n = tf.shape(logits)[0]
    diagonal = tf.eye(n, dtype=tf.bool)
    same_target = tf.equal(target_ids[:, None], target_ids[None, :])
    keep = tf.logical_or(diagonal, tf.logical_not(same_target))
    if weights is not None:
        keep = tf.logical_and(keep, tf.logical_or(diagonal, (_f32(weights) > 0)[None, :]))
    logits = tf.where(keep, logits, MASKED_LOGIT)
    per_row = -tf.linalg.diag_part(tf.nn.log_softmax(logits, axis=1))
    return _weighted_mean(per_row, weights)
