"""Full-catalogue ranking and the metric blocks of a result entry: brute-force top-K over
every catalogue item (the user's history masked, and not), then HR/NDCG/Recall@K, MRR,
coverage, cold-start Recall and the category / candidate-set slices
(``stars.retrieval_metrics`` underneath)."""
from __future__ import annotations

from collections import defaultdict
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from evaluation.protocol import (
    CANDIDATE_SET_BUCKETS,
    COLD_K,
    COVERAGE_K,
    K_MAX,
    KS,
    MAX_CATEGORY_SLICES,
    SLICE_K,
)
from evaluation.results import json_value
from evaluation.splits import SplitData
from stars import retrieval_metrics as RM


def rank_full_catalogue(queries, item_embeddings, k: int = K_MAX,
                        history: Optional[Sequence[Sequence[int]]] = None,
                        chunk_rows: int = 256, item_prior=None) -> Tuple[np.ndarray, np.ndarray]:
    """``(masked, unmasked)`` top-k item indices of brute-force dot-product scores.

    ``queries`` [N, d] against ``item_embeddings`` [I, d]: every catalogue item is
    scored (no sampled negatives), ``chunk_rows`` queries at a time; ``item_prior``
    [N, I] (None = none) is added to the scores (``StarsModel.item_prior``).  ``masked``
    never contains an item of the row's ``history``; ``unmasked`` excludes nothing.
    Ties go to the lower item index; rows are padded with -1 when fewer than k
    items remain.
    """
    queries = np.asarray(queries).astype(np.float32)  # bfloat16 under mixed precision
    items = np.asarray(item_embeddings).astype(np.float32)
    n = queries.shape[0]
    masked = np.full((n, k), -1, np.int64)
    unmasked = np.full((n, k), -1, np.int64)
    for start in range(0, n, chunk_rows):
        stop = min(n, start + chunk_rows)
        scores = queries[start:stop] @ items.T
        if item_prior is not None:
            scores += np.asarray(item_prior[start:stop], np.float32)
        unmasked[start:stop] = RM.top_k_from_scores(scores, k)
        exclude = None if history is None else [np.asarray(h, np.int64)
                                                for h in history[start:stop]]
        masked[start:stop] = RM.top_k_from_scores(scores, k, exclude=exclude)
    return masked, unmasked


def rank_by_item_scores(item_scores, n: int, k: int = K_MAX,
                        history: Optional[Sequence[Sequence[int]]] = None,
                        chunk_rows: int = 512) -> Tuple[np.ndarray, np.ndarray]:
    """``(masked, unmasked)`` for a model that gives every user the same item scores
    (popularity): the same ranking helper, the score row broadcast to ``n`` users."""
    scores = np.asarray(item_scores, np.float64)
    unmasked = np.broadcast_to(RM.top_k_from_scores(scores[None, :], k), (n, k)).copy()
    masked = np.full((n, k), -1, np.int64)
    for start in range(0, n, chunk_rows):
        stop = min(n, start + chunk_rows)
        block = np.broadcast_to(scores, (stop - start, scores.shape[0]))
        exclude = None if history is None else [np.asarray(h, np.int64)
                                                for h in history[start:stop]]
        masked[start:stop] = RM.top_k_from_scores(block, k, exclude=exclude)
    return masked, unmasked


def metric_block(top_k: np.ndarray, targets: Sequence[np.ndarray], num_items: int,
                 cold: Optional[np.ndarray] = None) -> dict:
    """HR/NDCG/Recall@5/10/20, MRR@20, Coverage@10 and cold-start Recall@10 of top-k lists."""
    per = RM.per_example_metrics(top_k, targets, KS)
    summary = RM.summarise(per)
    out = {}
    for k in KS:
        out[f"hr@{k}"] = summary[f"hit@{k}"]
        out[f"ndcg@{k}"] = summary[f"ndcg@{k}"]
        out[f"recall@{k}"] = summary[f"recall@{k}"]
    out[f"mrr@{top_k.shape[1]}"] = summary["mrr"]
    out[f"coverage@{COVERAGE_K}"] = RM.coverage_at_k(top_k, COVERAGE_K, num_items)
    if cold is not None:
        mask = np.asarray(cold, bool) & per["has_target"]
        out[f"cold_start_recall@{COLD_K}"] = RM.summarise(per, mask)[f"recall@{COLD_K}"]
        out["cold_start_examples"] = int(mask.sum())
    out["num_examples"] = summary["num_examples"]
    return {k: json_value(round(v, 6) if isinstance(v, float) else v) for k, v in out.items()}


def validation_block(top: np.ndarray, split: SplitData, num_items: int) -> dict:
    """HR@10 and NDCG@10 of a validation ranking (what model selection looks at)."""
    block = metric_block(top, split.targets, num_items)
    return {k: block[k] for k in ("hr@10", "ndcg@10", "num_examples")}


def cold_start_mask(split: SplitData, counts: np.ndarray) -> np.ndarray:
    """Examples whose first target has no training interaction."""
    first = split.first_target
    return (first >= 0) & (np.asarray(counts)[np.maximum(first, 0)] <= 0)


def _bucket_name(size: int) -> Optional[str]:
    for low, high in CANDIDATE_SET_BUCKETS:
        if size >= low and (high is None or size <= high):
            return f"{low}-{high}" if high is not None else f">{low - 1}"
    return None


def slice_metrics(split: SplitData, masked_top: np.ndarray, catalog,
                  candidate_scores: Optional[Sequence[np.ndarray]] = None) -> dict:
    """Hit@5 per category of the target (full-catalogue masked ranking), and Hit@5
    within the shown candidate set by candidate-set size bucket (when the split has
    impressions and ``candidate_scores`` -- each example's scores of its candidates --
    are given).  Empty dict when the data has neither."""
    out = {}
    first = split.first_target
    names = list(getattr(catalog, "category_names", ()) or ())
    if names and 1 < len(set(catalog.category.tolist())) <= MAX_CATEGORY_SLICES:
        hits = (masked_top[:, :SLICE_K] == first[:, None]).any(axis=1) & (first >= 0)
        per_category = {}
        categories = catalog.category[np.maximum(first, 0)]
        for c in sorted(set(categories[first >= 0].tolist())):
            rows = (categories == c) & (first >= 0)
            name = names[c] if 0 <= c < len(names) else str(c)
            per_category[name] = {f"hit@{SLICE_K}": round(float(hits[rows].mean()), 6),
                                  "n": int(rows.sum())}
        out["category"] = per_category
    if candidate_scores is not None and any(len(c) for c in split.candidates):
        buckets: Dict[str, list] = defaultdict(list)
        for target, cands, scores in zip(first, split.candidates, candidate_scores):
            cands = np.asarray(cands)
            if target < 0 or not len(cands) or target not in cands:
                continue
            _, unique_at = np.unique(cands, return_index=True)
            cands, scores = cands[np.sort(unique_at)], np.asarray(scores)[np.sort(unique_at)]
            order = np.lexsort((cands, -scores))  # best first, ties to the lower index
            hit = target in cands[order[:SLICE_K]]
            buckets[_bucket_name(len(cands))].append(float(hit))
        out["candidate_set_size"] = {
            name: {f"hit@{SLICE_K}": round(float(np.mean(v)), 6), "n": len(v)}
            for name, v in sorted(buckets.items(),
                                  key=lambda kv: int(kv[0].strip(">").split("-")[0]))}
    return out
