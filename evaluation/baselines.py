"""The untrained baselines of the offline evaluation, scored as the trained models are:
popularity (the training counts), the co-occurrence generator by itself, and LambdaMART
re-ranking that generator's candidates (``cooccurrence``, ``lambdamart``)."""
from __future__ import annotations

import dataclasses
import time
from typing import List

from evaluation.protocol import K_MAX, QUICK
from evaluation.ranking import (
    cold_start_mask,
    metric_block,
    rank_by_item_scores,
    slice_metrics,
    validation_block,
)
from evaluation.splits import EvalContext


def evaluate_popularity(ctx: EvalContext, seed: int = 0) -> List[dict]:
    started = time.time()
    test = ctx.read_split("test", "popularity")
    masked, unmasked = rank_by_item_scores(ctx.counts, len(test), K_MAX, test.history)
    cold = cold_start_mask(test, ctx.counts)
    candidate_scores = [ctx.counts[c] for c in test.candidates]
    return [{
        "model": "popularity", "variant": None,
        "masked": metric_block(masked, test.targets, ctx.num_items, cold),
        "unmasked": metric_block(unmasked, test.targets, ctx.num_items, cold),
        "slices": slice_metrics(test, masked, ctx.catalog, candidate_scores),
        "seed": seed, "config": {"scores": "training interaction counts (Transform "
                                           "item_popularity vocabulary)"},
        "split_reads": dict(ctx.reads["popularity"]),
        "wall_s": round(time.time() - started, 1)}]


def evaluate_cooccurrence(ctx: EvalContext, seed: int = 0) -> List[dict]:
    """The LambdaMART baseline's candidate generator ranking the whole catalogue by
    itself; scored on the validation target too (nothing is selected on it)."""
    from evaluation import cooccurrence, lambdamart
    started = time.time()
    settings = lambdamart.Settings(seed=seed)
    generator = lambdamart.LambdaMartBaseline(ctx.catalog, ctx.counts,
                                              ctx.read_split("train", "cooccurrence"), settings)
    validation = ctx.read_split("eval", "cooccurrence")
    val_masked, _ = generator.rank_generator(validation, K_MAX)
    test = ctx.read_split("test", "cooccurrence")
    masked, unmasked = generator.rank_generator(test, K_MAX)
    cold = cold_start_mask(test, ctx.counts)
    return [{
        "model": "cooccurrence", "variant": None,
        "masked": metric_block(masked, test.targets, ctx.num_items, cold),
        "unmasked": metric_block(unmasked, test.targets, ctx.num_items, cold),
        "validation": {"masked": validation_block(val_masked, validation, ctx.num_items)},
        "slices": slice_metrics(test, masked, ctx.catalog),
        "seed": seed,
        "config": {"scores": "directed co-occurrence with the last three items (window "
                             f"{settings.window}, weights {list(cooccurrence.RECENT_WEIGHTS)}) "
                             "+ 1e-3 x popularity, from the training split"},
        "split_reads": dict(ctx.reads["cooccurrence"]),
        "wall_s": round(time.time() - started, 1)}]


def evaluate_lambdamart(ctx: EvalContext, seed: int = 0, quick: bool = False) -> List[dict]:
    from evaluation import lambdamart
    started = time.time()
    train = ctx.read_split("train", "lambdamart")
    validation = ctx.read_split("eval", "lambdamart")
    settings = lambdamart.Settings(seed=seed)
    if quick:
        settings = dataclasses.replace(settings, num_trees=QUICK.lambdamart_trees,
                                       num_candidates=QUICK.lambdamart_candidates)
    ranker = lambdamart.LambdaMartBaseline(ctx.catalog, ctx.counts, train, settings)
    fit_info = ranker.fit(validation)
    test = ctx.read_split("test", "lambdamart")
    masked, unmasked, test_info = ranker.rank(test, K_MAX)
    cold = cold_start_mask(test, ctx.counts)
    return [{
        "model": "lambdamart", "variant": None,
        "masked": metric_block(masked, test.targets, ctx.num_items, cold),
        "unmasked": metric_block(unmasked, test.targets, ctx.num_items, cold),
        "slices": slice_metrics(test, masked, ctx.catalog),
        "seed": seed,
        "config": {**dataclasses.asdict(settings), "features": list(lambdamart.FEATURES),
                   "fit": fit_info, "test": test_info},
        "split_reads": dict(ctx.reads["lambdamart"]),
        "wall_s": round(time.time() - started, 1)}]
