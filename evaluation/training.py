"""The trained models of the offline evaluation (STARS, its ablations, the ID-only
SASRecs): trained with the Trainer's own code (``models.trainer``), stopped and selected on
the validation ranking, then scored once on the test split -- GI, NI, their round-robin RR,
and ``stars_cooc`` (STARS with its successor source) from the same trained model."""
from __future__ import annotations

import dataclasses
import time
from typing import List, Mapping, Optional

import numpy as np

from evaluation.protocol import K_MAX, QUICK, SECOND_SOURCE_MODEL
from evaluation.ranking import (
    cold_start_mask,
    metric_block,
    rank_full_catalogue,
    slice_metrics,
    validation_block,
)
from evaluation.splits import EvalContext, SplitData
from stars.interleaving import interleave_round_robin


def _interleave(gi: np.ndarray, ni: np.ndarray) -> np.ndarray:
    return interleave_round_robin(gi, ni, gi.shape[1])[0]


def _score_split(ctx: EvalContext, model, adapter, split: str, name: str, variants,
                 with_candidates: bool = False):
    """(SplitData, {variant: (masked, unmasked)}, {variant: candidate scores})."""
    items = model.item_embeddings().numpy().astype(np.float32)
    parts, tops = [], {v: ([], []) for v in ("gi", "ni")}
    candidate_scores = {v: [] for v in ("gi", "ni")}
    for inputs, raw in ctx.dataset(split, name, adapter):
        data = ctx.to_split_data(raw)
        parts.append(data)
        gen, nxt = model.user_embeddings(inputs)
        prior = model.item_prior(inputs["target_timestamp"])
        prior = None if prior is None else prior.numpy()
        for variant, queries in (("gi", gen.numpy().astype(np.float32)),
                                 ("ni", nxt.numpy().astype(np.float32))):
            masked, unmasked = rank_full_catalogue(queries, items, K_MAX, data.history,
                                                   item_prior=prior)
            tops[variant][0].append(masked)
            tops[variant][1].append(unmasked)
            if with_candidates:
                candidate_scores[variant] += [
                    items[c] @ q + (0.0 if prior is None else prior[row, c])
                    for row, (q, c) in enumerate(zip(queries, data.candidates))]
    data = SplitData.concat(parts)
    ranked = {v: (np.concatenate(m), np.concatenate(u)) for v, (m, u) in tops.items()}
    ranked["rr"] = (_interleave(ranked["gi"][0], ranked["ni"][0]),
                    _interleave(ranked["gi"][1], ranked["ni"][1]))
    return data, {v: ranked[v] for v in variants}, candidate_scores


def _rank_second_source(ctx: EvalContext, model, adapter, split: str):
    """(SplitData, (masked, unmasked)): NI ranked over the whole catalogue with the model's
    successor source at its current weight (one read of the split)."""
    items = model.item_embeddings().numpy().astype(np.float32)
    parts, masked, unmasked = [], [], []
    for inputs, raw in ctx.dataset(split, SECOND_SOURCE_MODEL, adapter):
        data = ctx.to_split_data(raw)
        parts.append(data)
        _, nxt = model.user_embeddings(inputs)
        terms = [t.numpy() for t in (model.item_prior(inputs["target_timestamp"]),
                                     model.next_prior(inputs)) if t is not None]
        top = rank_full_catalogue(nxt.numpy().astype(np.float32), items, K_MAX, data.history,
                                  item_prior=sum(terms) if terms else None)
        masked.append(top[0])
        unmasked.append(top[1])
    return SplitData.concat(parts), (np.concatenate(masked), np.concatenate(unmasked))


def evaluate_second_source(ctx: EvalContext, model, adapter, ranking, stars_entry: dict) -> dict:
    """The ``stars_cooc`` entry of a trained STARS: its successor source's weight chosen on
    the validation ranking as the Trainer chooses it (``successor_source.choose_weight``),
    then the test split ranked once: what a pipeline with ``successor_source`` serves."""
    from models import successor_source
    started = time.time()
    choice = successor_source.choose_weight(model, ranking)
    val_data, (val_masked, _) = _rank_second_source(ctx, model, adapter, "eval")
    test, (masked, unmasked) = _rank_second_source(ctx, model, adapter, "test")
    cold = cold_start_mask(test, ctx.counts)
    config = {**stars_entry["config"], "successor_source": True}
    config["training"] = {**config["training"], "second_source": {
        "scores": "NI + weight x log(1 + directed co-occurrence count after the last three "
                  "items), the training split's counts (models.successor_source)",
        "weight": choice["chosen"],
        "val_ndcg@10": {str(t["weight"]): t["val_ndcg@10"] for t in choice["tried"]}}}
    return {"model": SECOND_SOURCE_MODEL, "variant": "ni",
            "masked": metric_block(masked, test.targets, ctx.num_items, cold),
            "unmasked": metric_block(unmasked, test.targets, ctx.num_items, cold),
            "validation": {"masked": validation_block(val_masked, val_data, ctx.num_items)},
            "slices": slice_metrics(test, masked, ctx.catalog),
            "seed": stars_entry["seed"], "config": config,
            "split_reads": dict(ctx.reads[SECOND_SOURCE_MODEL]),
            "wall_s": round(stars_entry["wall_s"] + time.time() - started, 1)}


def validation_ranking(ctx: EvalContext, model: str, adapter, variants):
    """The early-stopping callback over the validation split (inputs kept in memory)."""
    from models import validation_ranking as VR
    batches, parts = [], []
    for inputs, raw in ctx.dataset("eval", model, adapter):
        batches.append(inputs)
        parts.append(ctx.to_split_data(raw))
    data = SplitData.concat(parts)
    return VR.by_span(batches, data.history, data.targets, adapter.max_history, variants)


def model_config(variant: str, preset: str, seed: int, quick: bool,
                 overrides: Optional[Mapping] = None):
    """The ModelConfig of one model: preset + ablation + overrides.

    ``overrides`` holds ModelConfig fields applied to every model, and optionally
    per-model dicts keyed by the model name (``{"epochs": 20, "sasrec_id":
    {"dropout": 0.5}}``), applied last.  ``quick`` caps the epochs.
    """
    from models.config import make_config
    overrides = dict(overrides or {})
    common = {k: v for k, v in overrides.items() if not isinstance(v, Mapping)}
    specific = dict(overrides.get(variant, {}) or {})
    fields = {"seed": seed, **common, **specific}
    if quick:
        fields["epochs"] = min(int(fields.get("epochs", QUICK.epochs)), QUICK.epochs)
    return make_config(preset, variant, **fields)


def train_and_evaluate(ctx: EvalContext, variant: str, preset: str = "benchmark", seed: int = 0,
                       quick: bool = False, overrides: Optional[Mapping] = None) -> List[dict]:
    """Trains one STARS variant with ``models.trainer`` (validation split = early
    stopping), then scores the validation split (model selection) and, once, the test
    split.  Returns one result entry per retrieval (GI, NI, RR; NI only when the GI
    head is not trained)."""
    import tensorflow as tf

    from models import trainer as T
    from models import validation_ranking as VR
    started = time.time()
    # Every row but stars_cooc is scored without the successor source (the paper's model);
    # stars runs carry its table, and stars_cooc adds it (evaluate_second_source).
    config = T.fit_user_token(model_config(variant, preset, seed, quick, overrides),
                              ctx.meta).replace(successor_source=False)
    adapter = T.make_adapter(ctx.catalog, config, ctx.meta)
    # The Trainer's input pipeline (shuffled), over the same files and schema.
    ctx.reads[variant]["train"] += 1
    train_inputs, steps = T.training_dataset(ctx.files("train"), ctx.accessor, ctx.tft_output,
                                             adapter, config)
    if steps == 0:
        raise ValueError("the training split is empty")
    tf.keras.backend.clear_session()
    set_precision = getattr(T, "set_precision", None)  # as the Trainer's run_fn does
    if set_precision is not None:
        set_precision(config)
    second_source = variant == "stars"
    # The tables from the training split, as the Trainer's run_fn builds them.
    trend = T.training_trend(ctx.tft_output, ctx.catalog) if config.item_trend else None
    successors = T.training_successors(ctx.tft_output, ctx.catalog) if second_source else None
    model = T.build_model(ctx.catalog, config, ctx.meta.with_trend(trend), trend, successors)
    # Build the item tower before fit: DeltaUnfreeze opens the δ gate in
    # on_epoch_begin(0) when delta_frozen_epochs = 0 (the ID-only models), before
    # any forward pass would have created it.
    model.item_embeddings(tf.constant([0]))
    model.items.build(None)
    trained = T.user_embedding_variants(config)
    variants = trained + ("rr",) if "gi" in trained else trained  # rr interleaves gi and ni
    ranking = validation_ranking(ctx, variant, adapter, trained)
    history = T.train(model, config, train_inputs, None, steps * config.epochs,
                      validation_callbacks=[ranking],
                      monitor=VR.MONITOR, monitor_mode="max")
    selection = [float(x) for x in history.history.get(VR.MONITOR, [])]
    selected = T.select_after_training(model, ranking, ctx.counts, config)
    train_s = time.time() - started
    val_data, val_ranked, _ = _score_split(ctx, model, adapter, "eval", variant, variants)
    validation_blocks = {v: validation_block(val_ranked[v][0], val_data, ctx.num_items)
                         for v in variants}
    test, ranked, candidate_scores = _score_split(ctx, model, adapter, "test", variant,
                                                  variants, with_candidates=True)
    cold = cold_start_mask(test, ctx.counts)
    if set_precision is not None:
        tf.keras.mixed_precision.set_global_policy("float32")
    wall = round(time.time() - started, 1)
    training = {"preset": preset, "train_batches_per_epoch": steps,
                "epochs_run": len(history.epoch), "epochs_max": config.epochs,
                "best_epoch": int(np.argmax(selection)) + 1 if selection else None,
                "val_ndcg@10": [round(x, 5) for x in selection],
                "early_stopping": f"{VR.MONITOR} (masked full-catalogue ranking of the "
                                  "validation target, best retrieval), best weights restored",
                **selected,
                "train_s": round(train_s, 1)}
    entries = []
    for v in variants:
        masked, unmasked = ranked[v]
        scores = candidate_scores.get("gi" if v == "gi" else "ni")
        entries.append({
            "model": variant, "variant": v,
            "masked": metric_block(masked, test.targets, ctx.num_items, cold),
            "unmasked": metric_block(unmasked, test.targets, ctx.num_items, cold),
            "validation": {"masked": validation_blocks[v]},
            "slices": slice_metrics(test, masked, ctx.catalog, None if v == "rr" else scores),
            "seed": seed, "config": {**dataclasses.asdict(config), "training": training},
            "split_reads": dict(ctx.reads[variant]), "wall_s": wall})
    if second_source:
        entries.append(evaluate_second_source(
            ctx, model, adapter, ranking, next(e for e in entries if e["variant"] == "ni")))
    return entries
