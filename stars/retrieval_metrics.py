"""Retrieval metrics over materialised top-K lists (numpy, vectorised).

Shared by everything that scores a ranking: the Trainer's validation ranking
(``models.validation_ranking``), the pipeline's Evaluator (``components.stars_evaluator``)
and the offline evaluation (``evaluation``); numpy only, below all of them.

Conventions shared by every function here:

* Items are integer indices into the catalogue (``0 .. num_items - 1``).  In a
  top-K list, ``-1`` means "no item" (padding when fewer than K items could be
  ranked, e.g. a catalogue smaller than K or everything else masked out).
  ``-1`` never matches a target.  Apart from ``-1``, a row must not repeat an
  item (a ranking is a set in order); this is checked.
* Targets are given per example as an int array (the next item, or every
  future item of the user in the eval window).  Duplicate targets count once;
  an empty array means "no target": such an example gets 0 for every metric
  and ``has_target = False``, and the *caller* must exclude it from means
  (``summarise`` does this with ``has_target`` by default).
* Positions are 1-based in ``rank``; discount at position ``p`` is
  ``1 / log2(p + 1)``.

Metric definitions for an example with target set ``T`` (``|T| > 0``) and
ranked list ``L`` (first ``k`` entries ``L_k``):

* ``hit@k``    = 1 if ``T ∩ L_k`` is non-empty else 0.
* ``recall@k`` = ``|T ∩ L_k| / |T|`` -- the standard definition.  With more
  than ``k`` targets it cannot reach 1; that is intended (it measures the
  share of the user's future that was retrieved).  With one target it equals
  ``hit@k``.
* ``ndcg@k``   = ``DCG@k / IDCG@k`` with binary relevance, ``DCG@k`` =
  sum over positions ``p <= k`` holding a target of ``1/log2(p+1)``, and the
  ideal ``IDCG@k`` puts ``min(|T|, k)`` targets at the top.  Always in [0, 1].
* ``rank``     = position (1-based) of the first target in the whole list
  (``Kmax`` entries), 0 if no target is in the list.
* ``mrr``      = ``1 / rank`` (0 when ``rank == 0``): reciprocal rank within
  ``Kmax``.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

DEFAULT_KS: Tuple[int, ...] = (5, 10, 20, 50)

# Keys of `per_example_metrics` that are not averaged by `summarise`.
_NOT_AVERAGED = ("rank", "num_targets", "has_target")

ArrayList = Sequence[Sequence[int]]


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def as_top_k(top_k) -> np.ndarray:
    arr = np.asarray(top_k)
    if arr.ndim != 2:
        raise ValueError(f"top_k must be [N, K], got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"top_k must hold integer item indices, got {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def _check_no_duplicates(top_k: np.ndarray, name: str = "top_k") -> None:
    if top_k.shape[1] < 2:
        return
    s = np.sort(top_k, axis=1)
    dup = (s[:, 1:] == s[:, :-1]) & (s[:, 1:] >= 0)
    if dup.any():
        row = int(np.nonzero(dup.any(axis=1))[0][0])
        raise ValueError(f"{name} row {row} repeats an item: {top_k[row].tolist()}")


def _flatten_lists(lists: ArrayList, n: int, what: str) -> Tuple[np.ndarray, np.ndarray]:
    """(row index, value) pairs of a ragged list of int arrays, as two int64 arrays."""
    if len(lists) != n:
        raise ValueError(f"{what} has {len(lists)} entries for {n} rows")
    arrays = [np.asarray(t, dtype=np.int64).reshape(-1) for t in lists]
    lengths = np.fromiter((a.size for a in arrays), dtype=np.int64, count=n)
    if lengths.sum() == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.repeat(np.arange(n, dtype=np.int64), lengths), np.concatenate(arrays)


def _check_ks(ks: Sequence[int], k_max: int) -> Tuple[int, ...]:
    ks = tuple(int(k) for k in ks)
    for k in ks:
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        if k > k_max:
            raise ValueError(
                f"k={k} exceeds the list length Kmax={k_max}; materialise at least "
                f"max(ks) items per example (pad with -1)")
    return ks


# --------------------------------------------------------------------------
# per-example metrics
# --------------------------------------------------------------------------

def per_example_metrics(top_k, targets: ArrayList,
                        ks: Sequence[int] = DEFAULT_KS) -> Dict[str, np.ndarray]:
    """Hit@k, Recall@k, NDCG@k, rank and MRR of each example (see module doc).

    Args:
      top_k: int array ``[N, Kmax]`` of ranked item indices, ``-1`` = no item.
      targets: ``N`` int arrays of target item indices (may be empty).
      ks: cut-offs, each ``<= Kmax``.

    Returns:
      dict of ``[N]`` arrays: ``hit@k``, ``recall@k``, ``ndcg@k`` for each k
      (float64), ``mrr`` (float64), ``rank`` (int64, 0 = not found),
      ``num_targets`` (int64, distinct targets) and ``has_target`` (bool).
      Metrics of examples without targets are 0; exclude them from means
      (``summarise(metrics)`` does).
    """
    top_k = as_top_k(top_k)
    n, k_max = top_k.shape
    ks = _check_ks(ks, k_max)
    _check_no_duplicates(top_k)
    rows, items = _flatten_lists(targets, n, "targets")
    if items.size and items.min() < 0:
        raise ValueError("targets must be item indices >= 0")

    # Membership of each list entry in its own row's target set, vectorised by
    # encoding (row, item) pairs as one int64 key.
    modulus = int(max(items.max() if items.size else 0,
                      top_k.max() if top_k.size else 0)) + 1
    if n * modulus >= np.iinfo(np.int64).max:  # pragma: no cover - absurd sizes
        raise OverflowError("N * num_items does not fit in int64")
    target_keys = np.unique(rows * modulus + items)  # also de-duplicates targets
    num_targets = np.bincount(target_keys // modulus, minlength=n).astype(np.int64)
    list_keys = np.arange(n, dtype=np.int64)[:, None] * modulus + top_k
    relevant = np.isin(list_keys, target_keys) & (top_k >= 0)

    discount = 1.0 / np.log2(np.arange(2, k_max + 2, dtype=np.float64))
    ideal = np.concatenate([[0.0], np.cumsum(discount)])  # ideal[m] = IDCG of m hits
    gains = relevant * discount  # [N, Kmax]
    hits_cum = np.cumsum(relevant, axis=1)
    dcg_cum = np.cumsum(gains, axis=1)
    has_target = num_targets > 0
    safe_nt = np.maximum(num_targets, 1)

    out: Dict[str, np.ndarray] = {}
    for k in ks:
        hits = hits_cum[:, k - 1]
        out[f"hit@{k}"] = (hits > 0).astype(np.float64)
        out[f"recall@{k}"] = np.where(has_target, hits / safe_nt, 0.0)
        idcg = ideal[np.minimum(num_targets, k)]
        out[f"ndcg@{k}"] = np.where(idcg > 0, dcg_cum[:, k - 1] / np.where(idcg > 0, idcg, 1.0),
                                    0.0)
    found = relevant.any(axis=1) if k_max else np.zeros(n, bool)
    rank = np.where(found, np.argmax(relevant, axis=1) + 1 if k_max else 0, 0).astype(np.int64)
    out["rank"] = rank
    out["mrr"] = np.where(rank > 0, 1.0 / np.maximum(rank, 1), 0.0)
    out["num_targets"] = num_targets
    out["has_target"] = has_target
    return out


def summarise(metrics: Mapping[str, np.ndarray],
              mask: Optional[np.ndarray] = None) -> Dict[str, float]:
    """Means of the per-example metrics over the examples selected by ``mask``.

    ``mask`` defaults to ``metrics["has_target"]`` (all examples when absent).
    ``rank``, ``num_targets`` and ``has_target`` are not averaged; the number of
    examples averaged is returned as ``num_examples``.  Means over zero
    examples are NaN.
    """
    keys = [k for k in metrics if k not in _NOT_AVERAGED]
    n = len(next(iter(metrics.values()))) if metrics else 0
    if mask is None:
        mask = metrics.get("has_target", np.ones(n, bool))
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != (n,):
        raise ValueError(f"mask has shape {mask.shape}, expected ({n},)")
    count = int(mask.sum())
    result = {k: (float(np.mean(np.asarray(metrics[k], np.float64)[mask])) if count
                  else float("nan"))
              for k in keys}
    result["num_examples"] = count
    return result


# --------------------------------------------------------------------------
# corpus-level
# --------------------------------------------------------------------------

def coverage_at_k(top_k, k: int, num_items: int) -> float:
    """Share of the catalogue (``num_items`` items) that appears in at least one
    example's first ``k`` recommendations (``-1`` entries ignored)."""
    top_k = as_top_k(top_k)
    if num_items <= 0:
        raise ValueError("num_items must be positive")
    if k <= 0:
        raise ValueError("k must be positive")
    ids = top_k[:, :k]
    ids = ids[ids >= 0]
    if ids.size and ids.max() >= num_items:
        raise ValueError(f"item index {int(ids.max())} >= num_items={num_items}")
    return float(np.unique(ids).size) / float(num_items)


# --------------------------------------------------------------------------
# ranking with the "masked" protocol
# --------------------------------------------------------------------------

def _top_k_chunk(scores: np.ndarray, k: int) -> np.ndarray:
    """Top-k columns of each row (k <= columns), ties by lower index, -inf -> -1."""
    n, num = scores.shape
    kth = np.partition(scores, num - k, axis=1)[:, num - k][:, None]
    greater = scores > kth
    equal = scores == kth
    # Among the entries equal to the k-th value, keep the lowest indices that
    # fill the k slots.
    need = k - greater.sum(axis=1, keepdims=True)
    selected = greater | (equal & (np.cumsum(equal, axis=1, dtype=np.int64) <= need))
    cols = np.nonzero(selected)[1].reshape(n, k)  # ascending index per row
    vals = np.take_along_axis(scores, cols, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")  # stable: ties keep lower index
    idx = np.take_along_axis(cols, order, axis=1)
    idx[np.take_along_axis(vals, order, axis=1) == -np.inf] = -1
    return idx


def top_k_from_scores(scores, k: int, exclude: Optional[ArrayList] = None,
                      chunk_elements: int = 1 << 22) -> np.ndarray:
    """Top-k item indices per row of a score matrix, the "masked" protocol.

    Args:
      scores: float array ``[N, I]`` (one score per catalogue item).
      k: list length; may exceed ``I`` (the tail is ``-1``).
      exclude: optional ``N`` int arrays of items removed from each row's
        ranking (the user's history); negative entries are ignored.
      chunk_elements: rows are processed in chunks of about this many scores,
        so memory stays bounded for large ``N * I``.

    Returns:
      int64 ``[N, k]``, best first; equal scores are ordered by lower item
      index.  Excluded items, NaN and ``-inf`` scores are never returned: when
      fewer than ``k`` items remain, the row is padded with ``-1``.
    """
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must be [N, I], got shape {scores.shape}")
    if k <= 0:
        raise ValueError("k must be positive")
    n, num_items = scores.shape
    dtype = scores.dtype if np.issubdtype(scores.dtype, np.floating) else np.float64
    if exclude is not None:
        ex_rows, ex_items = _flatten_lists(exclude, n, "exclude")
        keep = ex_items >= 0
        ex_rows, ex_items = ex_rows[keep], ex_items[keep]
        if ex_items.size and ex_items.max() >= num_items:
            raise IndexError(f"excluded item {int(ex_items.max())} >= {num_items} items")
        bounds = np.searchsorted(ex_rows, np.arange(n + 1))  # ex_rows is sorted
    result = np.full((n, k), -1, dtype=np.int64)
    if n == 0 or num_items == 0:
        return result
    kk = min(k, num_items)
    step = max(1, int(chunk_elements) // num_items)
    for start in range(0, n, step):
        stop = min(n, start + step)
        chunk = np.array(scores[start:stop], dtype=dtype, copy=True)
        chunk[np.isnan(chunk)] = -np.inf
        if exclude is not None:
            lo, hi = bounds[start], bounds[stop]
            chunk[ex_rows[lo:hi] - start, ex_items[lo:hi]] = -np.inf
        result[start:stop, :kk] = _top_k_chunk(chunk, kk)
    return result
