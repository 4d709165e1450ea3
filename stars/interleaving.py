"""Round-robin interleaving of two rankings: RR, the merge of GI and NI.

One rule for every place that merges the two retrievals -- the sidecar's answer, the
pipeline's Evaluator and the offline evaluation -- so the RR that is scored is the RR
that is served.  Plain Python and numpy, no TensorFlow: the sidecar imports it.

Position ``t`` (0-based) takes the next entry of the first ranking when
``start + t`` is even, of the second otherwise, skipping entries already taken;
when the ranking whose turn it is has nothing left, the other one fills the slot,
and the merge stops when both are exhausted.
"""
from __future__ import annotations

from typing import Callable, Hashable, List, Optional, Sequence, Tuple, TypeVar, Union

import numpy as np

from stars.retrieval_metrics import as_top_k

T = TypeVar("T")


def round_robin(first: Sequence[T], second: Sequence[T], k: int, start: int = 0,
                key: Optional[Callable[[T], Hashable]] = None) -> List[Tuple[T, int]]:
    """At most ``k`` ``(entry, 0 = first / 1 = second)`` pairs of the two rankings merged
    without duplicates; ``key(entry)`` is what makes two entries the same item (the entry
    itself by default, e.g. the id of an ``(id, score)`` pair)."""
    key = key if key is not None else (lambda entry: entry)
    lists, pointers = (first, second), [0, 0]
    seen: set = set()
    out: List[Tuple[T, int]] = []
    turn = start % 2
    while len(out) < k:
        for which in (turn, 1 - turn):
            ranking, p = lists[which], pointers[which]
            while p < len(ranking) and key(ranking[p]) in seen:
                p += 1
            pointers[which] = p
            if p < len(ranking):
                pointers[which] = p + 1
                seen.add(key(ranking[p]))
                out.append((ranking[p], which))
                break
        else:
            break  # both exhausted
        turn = 1 - turn
    return out


def interleave_round_robin(list_a, list_b, k: int,
                           first: Union[int, np.ndarray] = 0) -> Tuple[np.ndarray, np.ndarray]:
    """``round_robin`` of every row of two top-K arrays (catalogue indices, ``-1`` = no
    item, as ``stars.retrieval_metrics`` lists them).

    Args:
      list_a, list_b: int ``[N, Ka]`` / ``[N, Kb]`` ranked item indices.
      k: output length.
      first: 0 (A starts) or 1 (B starts), scalar or per-row ``[N]`` array
        (alternating the starter per row removes position bias between A and B).

    Returns:
      ``(items [N, k] int64, source [N, k] int8)`` with source 0 = A, 1 = B, -1 = empty
      slot (both rows exhausted; its item is -1).
    """
    a, b = as_top_k(list_a), as_top_k(list_b)
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"lists have {a.shape[0]} and {b.shape[0]} rows")
    if k <= 0:
        raise ValueError("k must be positive")
    n = a.shape[0]
    starts = np.broadcast_to(np.asarray(first, dtype=np.int64) % 2, (n,))
    items = np.full((n, k), -1, dtype=np.int64)
    source = np.full((n, k), -1, dtype=np.int8)
    for row, (row_a, row_b) in enumerate(zip(a.tolist(), b.tolist())):
        merged = round_robin([x for x in row_a if x >= 0], [x for x in row_b if x >= 0], k,
                             start=int(starts[row]))
        if merged:
            taken, which = zip(*merged)
            items[row, :len(merged)] = taken
            source[row, :len(merged)] = which
    return items, source

