"""Early stopping and model selection on the validation target's full-catalogue ranking.

The validation loss is a poor stopping signal under leave-one-out: a validation
example's history positions are training events, so its next-item loss keeps
falling while the model memorises them, long after the ranking of the one held-out
target (what the test measures) has started to get worse.  This callback ranks
the WHOLE catalogue for every validation example at the end of each epoch (items
already in the history masked, as in the test) and logs masked HR@10 / NDCG@10
per retrieval (``val_ni_ndcg@10``, ``val_gi_ndcg@10``) and their best
(``val_ndcg@10``), which ``EarlyStopping`` then monitors.  The test target is
never read here.  The Trainer's ``run_fn`` and the offline evaluation (``stars eval``)
both stop and select with it.  It holds one batch of the split at a time, so the Trainer
streams the split from its files at every pass (memory bounded by the batch, not the split).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence

import numpy as np
import tensorflow as tf

from models import length_buckets
from stars import retrieval_metrics as RM

MONITOR = "val_ndcg@10"
K = 10


@dataclasses.dataclass(frozen=True)
class RankingBatch:
    """Model inputs of some validation examples with, per example in the same order, the
    catalogue indices to mask (its history) and its held-out target(s)."""
    inputs: dict
    history: List[np.ndarray]
    targets: List[np.ndarray]


Split = Callable[[], Iterable[RankingBatch]]


class ValidationRanking(tf.keras.callbacks.Callback):
    """``split()`` yields the validation split as ``RankingBatch``es, in the same order at
    every call: the callback holds one batch at a time (the Trainer streams the split from
    its files each epoch; ``from_batches`` keeps it in memory).  ``variants``: which user
    embeddings are ranked."""

    def __init__(self, split: Split, variants: Sequence[str] = ("gi", "ni")):
        super().__init__()
        unknown = set(variants) - {"gi", "ni"}
        if unknown or not variants:
            raise ValueError(f"variants must be a non-empty subset of ('gi', 'ni'), got "
                             f"{tuple(variants)}")
        self.split = split
        self.variants = tuple(variants)
        self.epochs: List[dict] = []
        self._embed = None

    @classmethod
    def from_batches(cls, batches: Sequence[dict], history: Sequence[np.ndarray],
                     targets: Sequence[np.ndarray],
                     variants: Sequence[str] = ("gi", "ni")) -> "ValidationRanking":
        """Over model-input ``batches`` held in memory, with ``history`` and ``targets`` per
        example in the batches' order."""
        if not batches:
            raise ValueError("the validation split is empty: nothing to stop on")
        if len(history) != len(targets):
            raise ValueError(f"{len(history)} histories for {len(targets)} targets")
        batches = list(batches)
        history = [np.asarray(h, np.int64) for h in history]
        targets = [np.asarray(t, np.int64) for t in targets]
        sizes = [int(tf.shape(next(iter(b.values())))[0]) for b in batches]
        if sum(sizes) != len(targets):
            raise ValueError(f"the validation batches hold {sum(sizes)} examples, "
                             f"expected {len(targets)}")
        starts = np.cumsum([0] + sizes)

        def split() -> Iterator[RankingBatch]:
            for inputs, a, b in zip(batches, starts[:-1], starts[1:]):
                yield RankingBatch(inputs, history[a:b], targets[a:b])
        return cls(split, variants)

    def _rank(self, queries: np.ndarray, items: np.ndarray, variant: str,
              batch: RankingBatch) -> np.ndarray:
        """Masked top-K of one batch's rows (ties in any order: this only steers training;
        the reported figures use ``top_k_from_scores``)."""
        scores = queries @ items.T
        if getattr(self.model, "item_trend", None) is not None:
            # the model's item-and-time logit terms at each example's request time
            scores += self.model.item_prior(
                np.asarray(batch.inputs["target_timestamp"], np.int64)).numpy()
        if variant == "ni":
            self._add_successor_term(scores, batch.inputs)
        rows = np.repeat(np.arange(len(batch.history)), [len(h) for h in batch.history])
        cols = (np.concatenate(batch.history) if batch.history else np.zeros(0, np.int64))
        keep = cols >= 0
        scores[rows[keep], cols[keep]] = -np.inf
        return tf.math.top_k(scores, k=min(K, scores.shape[1])).indices.numpy().astype(np.int64)

    def _add_successor_term(self, scores: np.ndarray, inputs: dict) -> None:
        """Adds NI's successor-source term γ·log(1 + count) (``models.successor_source``)
        to one batch's rows, in place; nothing while γ = 0."""
        source = getattr(self.model, "successor_source", None)
        gamma = 0.0 if source is None else float(source.weight.numpy())
        if gamma == 0.0:
            return
        rows, items, counts = (x.numpy() for x in
                               source.user_counts(inputs["items"], inputs["valid"]))
        scores[rows, items] += np.float32(gamma) * np.log1p(counts).astype(np.float32)

    def _user_embeddings(self, inputs: dict) -> Dict[str, np.ndarray]:
        if self._embed is None:
            self._embed = tf.function(lambda inputs: self.model.user_embeddings(inputs),
                                      reduce_retracing=True)  # batches differ in width
        gen, nxt = self._embed(inputs)
        return {v: q.numpy().astype(np.float32) for v, q in (("gi", gen), ("ni", nxt))
                if v in self.variants}

    def user_queries(self) -> dict:
        """{variant: [N, D] user embeddings} of the current weights, in the split's order."""
        queries: Dict[str, list] = {v: [] for v in self.variants}
        for batch in self.split():
            for variant, q in self._user_embeddings(batch.inputs).items():
                queries[variant].append(q)
        if not queries[self.variants[0]]:
            raise ValueError("the validation split is empty: nothing to stop on")
        return {v: np.concatenate(parts) for v, parts in queries.items()}

    def scores(self, queries: Optional[dict] = None) -> dict:
        """{variant: (hr@10, ndcg@10)} of the current weights; ``queries`` (from
        ``user_queries``) spares the encoder when only the item side changed."""
        items = self.model.item_embeddings().numpy().astype(np.float32)
        variants = tuple(queries) if queries is not None else self.variants
        per: Dict[str, list] = {v: [] for v in variants}
        row = 0
        for batch in self.split():
            n = len(batch.targets)
            encoded = self._user_embeddings(batch.inputs) if queries is None else None
            for variant in variants:
                q = encoded[variant] if encoded is not None else queries[variant][row:row + n]
                if len(q) != n:
                    raise ValueError(f"{len(queries[variant])} user queries for a validation "
                                     "split of more examples")
                per[variant].append(RM.per_example_metrics(
                    self._rank(q, items, variant, batch), batch.targets, (K,)))
            row += n
        if row == 0:
            raise ValueError("the validation split is empty: nothing to stop on")
        out = {}
        for variant, parts in per.items():
            if queries is not None and len(queries[variant]) != row:
                raise ValueError(f"the validation split holds {row} examples, "
                                 f"expected {len(queries[variant])}")
            summary = RM.summarise({key: np.concatenate([p[key] for p in parts])
                                    for key in parts[0]})
            out[variant] = (summary[f"hit@{K}"], summary[f"ndcg@{K}"])
        return out

    def set_model(self, model):
        super().set_model(model)
        self._embed = None  # retrace for the new model

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        scores = self.scores()
        for variant, (hr, ndcg) in scores.items():
            logs[f"val_{variant}_hr@{K}"] = hr
            logs[f"val_{variant}_ndcg@{K}"] = ndcg
        logs[MONITOR] = max(ndcg for _, ndcg in scores.values())
        self.epochs.append({k: float(v) for k, v in logs.items() if k.startswith("val_")})


def by_span(batches: Sequence[dict], history: Sequence[np.ndarray],
            targets: Sequence[np.ndarray], max_history: int,
            variants: Sequence[str]) -> ValidationRanking:
    """The ranking over inference ``batches`` regrouped by history span and cut to it
    (``models.length_buckets.by_span``: the encoder then runs on events, not on the
    window's padding), with ``history`` and ``targets`` realigned to the new order."""
    batches, order = length_buckets.by_span(list(batches), max_history, 256)
    return ValidationRanking.from_batches(batches, [history[i] for i in order],
                                          [targets[i] for i in order], variants)
