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
both stop and select with it.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np
import tensorflow as tf

from models import length_buckets
from stars import retrieval_metrics as RM

MONITOR = "val_ndcg@10"
K = 10
CHUNK = 2048


class ValidationRanking(tf.keras.callbacks.Callback):
    """``batches``: model-input dicts of the validation split; ``history`` and
    ``targets``: per example, in the same order, the catalogue indices to mask and
    the held-out target(s).  ``variants``: which user embeddings are ranked."""

    def __init__(self, batches: Sequence[dict], history: Sequence[np.ndarray],
                 targets: Sequence[np.ndarray], variants: Sequence[str] = ("gi", "ni")):
        super().__init__()
        if not batches:
            raise ValueError("the validation split is empty: nothing to stop on")
        unknown = set(variants) - {"gi", "ni"}
        if unknown or not variants:
            raise ValueError(f"variants must be a non-empty subset of ('gi', 'ni'), got "
                             f"{tuple(variants)}")
        self.batches = list(batches)
        self.history = [np.asarray(h, np.int64) for h in history]
        self.targets = [np.asarray(t, np.int64) for t in targets]
        if len(self.history) != len(self.targets):
            raise ValueError(f"{len(self.history)} histories for {len(self.targets)} targets")
        self.variants = tuple(variants)
        self._request_time = None
        self.epochs: List[dict] = []
        self._embed = None
        self._log_counts = None   # [N, I] log(1 + successor count), once the source is on
        # (row, item) pairs to mask, per chunk of rows.
        self._masked = []
        for start in range(0, len(self.history), CHUNK):
            chunk = self.history[start:start + CHUNK]
            rows = np.repeat(np.arange(len(chunk)), [len(h) for h in chunk])
            cols = np.concatenate(chunk) if chunk else np.zeros(0, np.int64)
            keep = cols >= 0
            self._masked.append((rows[keep], cols[keep]))

    def _rank(self, queries: np.ndarray, items: np.ndarray, variant: str) -> np.ndarray:
        """Masked top-K, ``CHUNK`` rows at a time (ties in any order: this only
        steers training; the reported figures use ``top_k_from_scores``)."""
        top = []
        for start in range(0, len(queries), CHUNK):
            scores = queries[start:start + CHUNK] @ items.T
            prior = self._item_prior(start, start + CHUNK)
            if prior is not None:
                scores += prior
            if variant == "ni":
                self._add_successor_term(scores, start)
            rows, cols = self._masked[start // CHUNK]
            scores[rows, cols] = -np.inf
            top.append(tf.math.top_k(scores, k=min(K, scores.shape[1])).indices.numpy())
        return np.concatenate(top).astype(np.int64)

    def _item_prior(self, start: int, stop: int) -> Optional[np.ndarray]:
        """The model's item-and-time logit terms (the item trend) of rows start:stop, at
        each example's request time; None for a model without them."""
        if getattr(self.model, "item_trend", None) is None:
            return None
        if self._request_time is None:
            self._request_time = np.concatenate(
                [np.asarray(b["target_timestamp"], np.int64) for b in self.batches])
        return self.model.item_prior(self._request_time[start:stop]).numpy()

    def _add_successor_term(self, scores: np.ndarray, start: int) -> None:
        """Adds NI's successor-source term γ·log(1 + count) (``models.successor_source``)
        to rows start:start + len(scores), in place; nothing while γ = 0.  The counts
        depend only on each example's latest events, so they are gathered once."""
        source = getattr(self.model, "successor_source", None)
        gamma = 0.0 if source is None else float(source.weight.numpy())
        if gamma == 0.0:
            return
        if self._log_counts is None:
            from scipy import sparse
            parts = []
            for inputs in self.batches:
                rows, items, counts = (x.numpy() for x in
                                       source.user_counts(inputs["items"], inputs["valid"]))
                parts.append(sparse.csr_matrix(
                    (np.log1p(counts), (rows, items)),
                    shape=(int(tf.shape(inputs["items"])[0]), source.num_items)))
            self._log_counts = sparse.vstack(parts).tocsr()
        block = self._log_counts[start:start + len(scores)].tocoo()
        scores[block.row, block.col] += np.float32(gamma) * block.data.astype(np.float32)

    def user_queries(self) -> dict:
        """{variant: [N, D] user embeddings} of the current weights, in ``targets`` order."""
        if self._embed is None:
            self._embed = tf.function(lambda inputs: self.model.user_embeddings(inputs),
                                      reduce_retracing=True)  # batches differ in width
        queries = {v: [] for v in self.variants}
        for inputs in self.batches:
            gen, nxt = self._embed(inputs)
            for variant, q in (("gi", gen), ("ni", nxt)):
                if variant in queries:
                    queries[variant].append(q.numpy().astype(np.float32))
        return {v: np.concatenate(parts) for v, parts in queries.items()}

    def scores(self, queries: Optional[dict] = None) -> dict:
        """{variant: (hr@10, ndcg@10)} of the current weights; ``queries`` (from
        ``user_queries``) spares the encoder when only the item side changed."""
        items = self.model.item_embeddings().numpy().astype(np.float32)
        out = {}
        for variant, q in (queries if queries is not None else self.user_queries()).items():
            if len(q) != len(self.targets):
                raise ValueError(f"the validation batches hold {len(q)} examples, "
                                 f"expected {len(self.targets)}")
            per = RM.per_example_metrics(self._rank(q, items, variant), self.targets, (K,))
            summary = RM.summarise(per)
            out[variant] = (summary[f"hit@{K}"], summary[f"ndcg@{K}"])
        return out

    def set_model(self, model):
        super().set_model(model)
        self._embed = None  # retrace for the new model
        self._log_counts = None

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
    return ValidationRanking(batches, [history[i] for i in order],
                             [targets[i] for i in order], variants)
