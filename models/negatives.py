"""Negatives of the candidate slice (STARS §4.3), sampled in TensorFlow ops.

For each positive the K negatives are filled in this order:

0. same-page: up to ``max_same_page`` distinct items shown on the positive's
   page but not clicked (a random subset when the page has more);
1. same-subclass: items of the positive's fine-grained subclass (hard
   negatives), without replacement;
2. random: uniform catalogue items as the fallback, without replacement while
   the catalogue allows, then with replacement (only tiny catalogues get there).

The positive is never a negative, and no item repeats while the catalogue has
enough other items.  Stages 1 and 2 skip the items already taken, so a
subclass row only falls through to random items once it is exhausted.  The
ops are batched and shape-static in K, so the sampler runs inside a
``tf.function`` train step or in a ``tf.data`` map after batching (which
overlaps it with the accelerator).
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

SAME_PAGE, SUBCLASS, RANDOM = 0, 1, 2
_BIG = np.iinfo(np.int32).max // 2  # sorts after every real position


def _floyd_sample(m, n, width, seed):
    """Uniform n-subsets of [0, m) per row (n <= m), in columns [0, n); -1 after.

    Floyd's algorithm: one vectorised step per column, so the cost is
    O(max n · width) per row whatever the size of the range.
    """
    rows = tf.shape(m)[0]
    draws = tf.random.stateless_uniform([rows, width], seed, dtype=tf.float64)
    columns = tf.range(width)

    def body(i, chosen):
        j = m - n + i
        t = tf.cast(tf.floor(draws[:, i] * tf.cast(j + 1, tf.float64)), tf.int32)
        t = tf.minimum(t, j)
        taken = tf.reduce_any(tf.equal(chosen, t[:, None]), axis=1)
        value = tf.where(taken, j, t)
        write = tf.logical_and(tf.equal(columns, i)[None, :], (i < n)[:, None])
        return i + 1, tf.where(write, value[:, None], chosen)

    steps = tf.reduce_max(tf.concat([n, [0]], 0))
    _, chosen = tf.while_loop(lambda i, _: i < steps, body,
                              (tf.constant(0), tf.fill([rows, width], -1)))
    return chosen


def _skip_excluded(u, excluded):
    """The u-th position (0-based) that is not in ``excluded`` ([B, E], distinct, _BIG = none).

    With the exclusions sorted, q_k - k counts the free positions before q_k, so
    the answer is u plus the number of exclusions whose count is <= u.
    """
    q = tf.sort(excluded, axis=1)
    free_before = q - tf.range(tf.shape(q)[1])[None, :]
    shift = tf.reduce_sum(tf.cast(free_before[:, None, :] <= u[:, :, None], tf.int32), axis=2)
    return u + shift


def _take(values, index):
    """values[b, index[b, k]] with index clipped into range (callers mask the rest)."""
    width = tf.shape(values)[1]
    return tf.gather(values, tf.clip_by_value(index, 0, width - 1), batch_dims=1)


class CandidateSliceSampler(tf.Module):
    """Samples [B, K] negatives for a batch of positives (see the module docstring).

    The subclass → items table is kept as CSR: item ids sorted by subclass
    (``sorted_items``) and per-subclass ``offsets``, so a subclass member is one
    gather at a random offset into the positive's range.
    """

    def __init__(self, item_subclass, num_negatives: int, max_same_page: int,
                 num_subclass: int | None = None, seed: int | None = None, name=None):
        super().__init__(name=name)
        subclass = np.asarray(item_subclass).astype(np.int64).reshape(-1)
        if subclass.size < 2:
            raise ValueError("a catalogue needs at least 2 items to have negatives")
        if num_subclass is None:
            num_subclass = int(subclass.max()) + 1
        if subclass.min() < 0 or subclass.max() >= num_subclass:
            raise ValueError(f"subclass ids must lie in [0, {num_subclass})")
        if num_negatives < 1 or max_same_page < 0:
            raise ValueError("need num_negatives >= 1 and max_same_page >= 0")
        order = np.argsort(subclass, kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(subclass.size)
        offsets = np.concatenate([[0], np.cumsum(np.bincount(subclass, minlength=num_subclass))])
        self.num_items = int(subclass.size)
        self.num_negatives = int(num_negatives)
        self.max_same_page = int(min(max_same_page, num_negatives))
        self._subclass = tf.constant(subclass, tf.int32)
        self._sorted_items = tf.constant(order, tf.int32)
        self._rank = tf.constant(rank, tf.int32)
        self._offsets = tf.constant(offsets, tf.int32)
        self._generator = (tf.random.Generator.from_seed(seed) if seed is not None
                           else tf.random.Generator.from_non_deterministic_state())

    def __call__(self, positives, same_page=None, seed=None):
        """Returns (negatives [B, K], source [B, K]), both in the dtype of ``positives``.

        ``same_page``: tf.RaggedTensor [B, None] of the items on each positive's
        page (may hold the positive, duplicates, or nothing), or a dense [B, P]
        tensor padded with -1; None means no pages.  ``seed``: an int [2] tensor
        for stateless, reproducible sampling; by default the sampler's own
        tf.random.Generator advances.  ``source`` is SAME_PAGE, SUBCLASS or RANDOM.
        """
        positives = tf.convert_to_tensor(positives)
        out_dtype = positives.dtype
        pos = tf.cast(positives, tf.int32)
        batch = tf.shape(pos)[0]
        k, cap, num_items = self.num_negatives, self.max_same_page, self.num_items
        if seed is None:
            seed = self._generator.make_seeds(1)[:, 0]
        page_seed, floyd_seed, fill_seed = tf.unstack(
            tf.random.experimental.stateless_split(seed, 3))

        same, n_same = self._same_page(pos, same_page, page_seed)
        start = tf.gather(self._offsets, tf.gather(self._subclass, pos))
        size = tf.gather(self._offsets, tf.gather(self._subclass, pos) + 1) - start
        same_rank = tf.gather(self._rank, tf.maximum(same, 0))
        in_subclass = tf.logical_and(
            same >= 0, tf.logical_and(same_rank >= start[:, None],
                                      same_rank < (start + size)[:, None]))
        outside = tf.logical_and(same >= 0, tf.logical_not(in_subclass))

        # Stage 1: positions within the subclass range, minus the positive and page picks.
        sub_excluded = tf.concat(
            [(tf.gather(self._rank, pos) - start)[:, None],
             tf.where(in_subclass, same_rank - start[:, None], _BIG)], 1)
        m_sub = size - 1 - tf.reduce_sum(tf.cast(in_subclass, tf.int32), 1)
        n_sub = tf.minimum(k - n_same, m_sub)
        # Stage 2: ranks outside the subclass block (the block is exhausted by then),
        # in coordinates with the block removed, minus the page picks outside it.
        block_free_rank = tf.where(same_rank < start[:, None], same_rank, same_rank - size[:, None])
        rand_excluded = tf.where(outside, block_free_rank, _BIG)
        m_rand = num_items - size - tf.reduce_sum(tf.cast(outside, tf.int32), 1)
        n_rand = tf.minimum(k - n_same - n_sub, m_rand)

        # Both stages share one Floyd loop over [2B] rows.
        u = _floyd_sample(tf.concat([m_sub, m_rand], 0), tf.concat([n_sub, n_rand], 0), k,
                          floyd_seed)
        u_sub, u_rand = u[:batch], u[batch:]
        v_sub = _skip_excluded(u_sub, sub_excluded)
        sub_items = tf.gather(self._sorted_items,
                              tf.clip_by_value(start[:, None] + v_sub, 0, num_items - 1))
        w = _skip_excluded(u_rand, rand_excluded)
        rank = tf.where(w < start[:, None], w, w + size[:, None])
        rand_items = tf.gather(self._sorted_items, tf.clip_by_value(rank, 0, num_items - 1))
        # Tiny catalogues only: the rest uniformly with replacement, still never the positive.
        draw = tf.cast(tf.floor(tf.random.stateless_uniform([batch, k], fill_seed, dtype=tf.float64)
                                * (num_items - 1)), tf.int32)
        draw = tf.minimum(draw, num_items - 2)
        fill_items = draw + tf.cast(draw >= pos[:, None], tf.int32)

        col = tf.range(k)[None, :]
        a = n_same[:, None]
        b = a + n_sub[:, None]
        c = b + n_rand[:, None]
        same_k = tf.pad(same, [[0, 0], [0, k - cap]], constant_values=-1)
        negatives = tf.where(col < a, same_k,
                             tf.where(col < b, _take(sub_items, col - a),
                                      tf.where(col < c, _take(rand_items, col - b),
                                               _take(fill_items, col - c))))
        source = tf.where(col < a, SAME_PAGE, tf.where(col < b, SUBCLASS, RANDOM))
        source = tf.broadcast_to(source, tf.shape(negatives))
        return tf.cast(negatives, out_dtype), tf.cast(source, out_dtype)

    def _same_page(self, pos, same_page, seed):
        """Up to ``max_same_page`` distinct page items != positive: ([B, cap] padded -1, count)."""
        batch, cap = tf.shape(pos)[0], self.max_same_page
        if same_page is None:
            return tf.fill([batch, cap], -1), tf.zeros([batch], tf.int32)
        if isinstance(same_page, tf.RaggedTensor):
            pool = tf.cast(same_page, tf.int32).to_tensor(default_value=-1)
        else:
            pool = tf.cast(tf.convert_to_tensor(same_page), tf.int32)
        valid = tf.logical_and(tf.logical_and(pool >= 0, pool < self.num_items),
                               tf.not_equal(pool, pos[:, None]))
        ordered = tf.sort(tf.where(valid, pool, self.num_items), axis=1)
        previous = tf.concat([tf.fill([batch, 1], -1), ordered], 1)[:, :-1]
        unique = tf.logical_and(tf.not_equal(ordered, previous), ordered < self.num_items)
        # A random subset when the page has more than `cap`: random keys, unique ones first.
        keys = tf.where(unique, tf.random.stateless_uniform(tf.shape(ordered), seed), 2.0)
        order = tf.argsort(keys, axis=1)
        picked = tf.where(tf.gather(unique, order, batch_dims=1),
                          tf.gather(ordered, order, batch_dims=1), -1)
        picked = tf.pad(picked, [[0, 0], [0, cap]], constant_values=-1)[:, :cap]
        count = tf.minimum(tf.reduce_sum(tf.cast(unique, tf.int32), 1), cap)
        return picked, count
