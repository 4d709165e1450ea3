"""LambdaMART baseline (the paper's production ranker): LightGBM ``lambdarank`` that
re-ranks the candidates of a cheap generator.

* **Candidates** (per user, from training data only): the items that followed
  the user's last three items in the training sequences (directed
  co-occurrence within a window of three events, weights 1, 1/2, 1/3 by
  distance; the last item weighs 1, the one before 1/2, then 1/4), topped up by
  popularity, the user's history excluded: ``num_candidates`` items.  The
  user's most recent history items are added to the set so that the unmasked
  protocol can rank repeats (they are removed again for the masked figures).
* **Features** of each (user, candidate) pair -- see ``FEATURES``: popularity,
  co-occurrence with the last item(s), same category / subclass as the last
  item, text similarity (the catalogue's frozen text embeddings) to the last
  item and to the last three, item recency (days from the item's latest
  training interaction BEFORE the request to the request; nothing later is
  known at request time), whether/when/how often the user
  already had it, the generator's rank and the history length.
* **Training**: on the VALIDATION targets (the second-to-last event; groups
  whose target is not among the candidates carry no signal and are dropped),
  10% of those groups held out for LightGBM's early stopping.  The test
  targets are only ranked.

Co-occurrence, popularity and item recency come from the training split only,
as every other model's statistics.  ``lightgbm`` is optional: ``available()``
says whether it is installed.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import time
from typing import Optional, Tuple

import numpy as np

from evaluation.cooccurrence import RECENT, CooccurrenceCounts
from stars import retrieval_metrics as RM

FEATURES = ("log_popularity", "cooc_last", "cooc_last_share", "cooc_recent",
            "same_category_last", "same_subclass_last", "text_sim_last", "text_sim_recent",
            "item_recency_days", "history_steps_ago", "history_count", "generator_rank",
            "history_length")
NEVER_SEEN_DAYS = 10_000.0


def available() -> bool:
    return importlib.util.find_spec("lightgbm") is not None


@dataclasses.dataclass(frozen=True)
class Settings:
    num_candidates: int = 100
    history_candidates: int = 20    # most recent distinct history items added (unmasked)
    window: int = 3                 # co-occurrence window (events)
    num_trees: int = 300
    learning_rate: float = 0.05
    num_leaves: int = 31
    min_child_samples: int = 20
    early_stopping_rounds: int = 30
    holdout_fraction: float = 0.1
    seed: int = 0
    chunk_rows: int = 1000


class LambdaMartBaseline:
    def __init__(self, catalog, counts, train_split, settings: Settings = Settings()):
        self.settings = settings
        self.num_items = n = len(catalog)
        self.counts = np.asarray(counts, np.float64)
        self.category = np.asarray(catalog.category)
        self.subclass = np.asarray(catalog.subclass)
        text = np.asarray(catalog.text_embedding, np.float32)
        norms = np.linalg.norm(text, axis=1, keepdims=True)
        self.text = text / np.where(norms > 0, norms, 1.0)
        self.cooccurrence = CooccurrenceCounts(train_split, n, settings.window)
        event_items = [np.concatenate([h, t[:1]]).astype(np.int64)
                       for h, t in zip(train_split.history, train_split.targets)]
        event_times = [np.concatenate([h_ts, [t_ts] if len(t) else []]).astype(np.int64)
                       for h_ts, t, t_ts in zip(train_split.history_ts, train_split.targets,
                                                train_split.target_ts)]
        # Every training event as (item, time), sorted: the latest one before a request time
        # is one binary search away.
        event_items = np.concatenate(event_items) if event_items else np.zeros(0, np.int64)
        event_times = np.concatenate(event_times) if event_times else np.zeros(0, np.int64)
        # (item, time) as one sorted key: item in the high bits, time since the first event
        # in the low 32 (136 years).
        self._event_origin = int(event_times.min()) if len(event_times) else 0
        self._event_keys = np.sort((event_items << 32) | (event_times - self._event_origin))
        self.popularity = self.counts / max(1.0, float(self.counts.max(initial=0.0)))
        self.model = None

    def last_seen_before(self, items: np.ndarray, request: np.ndarray) -> np.ndarray:
        """[n, C] time of each item's latest training interaction strictly before its row's
        request time (``request`` [n]); -1 where there is none."""
        items = np.asarray(items, np.int64)
        times = np.broadcast_to(np.asarray(request, np.int64)[:, None], items.shape)
        if not len(self._event_keys):
            return np.full(items.shape, -1, np.int64)
        query = (items << 32) | np.clip(times - self._event_origin, 0, (1 << 32) - 1)
        where = np.searchsorted(self._event_keys, query, side="left") - 1  # the latest below
        key = self._event_keys[np.maximum(where, 0)]
        found = (where >= 0) & ((key >> 32) == items)
        return np.where(found, (key & 0xFFFFFFFF) + self._event_origin, -1)

    # -- candidates and features ------------------------------------------------------------
    def generator_scores(self, histories, cooc_recent: Optional[np.ndarray] = None):
        """[n, I]: the candidate generator's score of every catalogue item (co-occurrence
        with the recent items, popularity breaking ties and filling in)."""
        if cooc_recent is None:
            cooc_recent = self.cooccurrence.recent(histories)
        return cooc_recent + 1e-3 * self.popularity[None, :].astype(np.float32)

    def rank_generator(self, split, k: int) -> Tuple[np.ndarray, np.ndarray]:
        """(masked [N, k], unmasked [N, k]): the generator alone over the whole catalogue,
        the ``cooccurrence`` baseline (what the LambdaMART re-ranking starts from)."""
        masked, unmasked = [], []
        for start in range(0, len(split), self.settings.chunk_rows):
            histories = split.history[start:start + self.settings.chunk_rows]
            scores = self.generator_scores(histories)
            unmasked.append(RM.top_k_from_scores(scores, k))
            masked.append(RM.top_k_from_scores(scores, k, exclude=histories))
        if not masked:
            return np.zeros((0, k), np.int64), np.zeros((0, k), np.int64)
        return np.concatenate(masked), np.concatenate(unmasked)

    def _chunk(self, split, start: int, stop: int):
        """(candidates [n, C] (-1 = none), in-history flags, features [n, C, F])."""
        s, n_items = self.settings, self.num_items
        histories = split.history[start:stop]
        n = len(histories)
        recent = [h[::-1][:RECENT] for h in histories]          # most recent first
        cooc_recent = self.cooccurrence.recent(histories)
        generated = RM.top_k_from_scores(self.generator_scores(histories, cooc_recent),
                                         min(s.num_candidates, n_items),
                                         exclude=histories)
        width = generated.shape[1] + s.history_candidates
        candidates = np.full((n, width), -1, np.int64)
        candidates[:, :generated.shape[1]] = generated
        for i, h in enumerate(histories):
            _, first = np.unique(h[::-1], return_index=True)
            distinct = h[::-1][np.sort(first)][:s.history_candidates]
            candidates[i, generated.shape[1]:generated.shape[1] + len(distinct)] = distinct
        valid = candidates >= 0
        safe = np.maximum(candidates, 0)
        last = np.array([h[-1] if len(h) else -1 for h in histories], np.int64)
        has_last = last >= 0
        safe_last = np.maximum(last, 0)

        def gather(matrix_rows):
            return np.take_along_axis(matrix_rows, safe, axis=1)
        transitions = self.cooccurrence.transitions[safe_last]
        cooc_last = gather(np.asarray(transitions.todense(), np.float32))
        cooc_last *= has_last[:, None]
        text_last = gather(self.text[safe_last] @ self.text.T) * has_last[:, None]
        mean_recent = np.stack([self.text[r].mean(axis=0) if len(r) else
                                np.zeros(self.text.shape[1], np.float32) for r in recent])
        text_recent = gather(mean_recent @ self.text.T)
        # Position from the end of the candidate's latest occurrence in the history.
        steps = np.zeros((n, width), np.float32)
        count = np.zeros((n, width), np.float32)
        for i, h in enumerate(histories):
            if not len(h):
                continue
            where = {}
            tally = {}
            for pos, item in enumerate(h[::-1], 1):
                where.setdefault(int(item), pos)
                tally[int(item)] = tally.get(int(item), 0) + 1
            for j, c in enumerate(candidates[i]):
                if c >= 0 and int(c) in where:
                    steps[i, j] = where[int(c)]
                    count[i, j] = tally[int(c)]
        request = split.target_ts[start:stop].astype(np.int64)
        seen = self.last_seen_before(safe, request)
        recency = np.where(seen >= 0, (request[:, None] - seen) / 86400.0, NEVER_SEEN_DAYS)
        rank = np.broadcast_to(np.arange(1, width + 1, dtype=np.float32), (n, width)).copy()
        rank[:, generated.shape[1]:] = s.num_candidates + 1
        features = np.stack([
            np.log1p(self.counts[safe]),
            cooc_last,
            cooc_last / (1.0 + self.cooccurrence.out_degree[safe_last][:, None]),
            gather(cooc_recent),
            (self.category[safe] == self.category[safe_last][:, None]) & has_last[:, None],
            (self.subclass[safe] == self.subclass[safe_last][:, None]) & has_last[:, None],
            text_last,
            text_recent,
            recency,
            steps,
            count,
            rank,
            np.broadcast_to(np.array([len(h) for h in histories], np.float32)[:, None],
                            (n, width)),
        ], axis=-1).astype(np.float32)
        return np.where(valid, candidates, -1), count > 0, features

    def _all(self, split):
        parts = [self._chunk(split, a, min(len(split), a + self.settings.chunk_rows))
                 for a in range(0, len(split), self.settings.chunk_rows)]
        if not parts:
            width = self.settings.num_candidates + self.settings.history_candidates
            return (np.zeros((0, width), np.int64), np.zeros((0, width), bool),
                    np.zeros((0, width, len(FEATURES)), np.float32))
        return tuple(np.concatenate(p) for p in zip(*parts))

    # -- training and ranking ---------------------------------------------------------------
    def fit(self, validation_split) -> dict:
        """Trains the ranker on the validation targets; returns what it did."""
        import lightgbm as lgb
        started = time.time()
        s = self.settings
        candidates, _, features = self._all(validation_split)
        target = validation_split.first_target
        labels = (candidates == target[:, None]) & (candidates >= 0)
        useful = np.flatnonzero(labels.any(axis=1))
        rng = np.random.default_rng(s.seed)
        rng.shuffle(useful)
        n_hold = int(round(len(useful) * s.holdout_fraction)) if len(useful) >= 20 else 0
        hold, fit_rows = np.sort(useful[:n_hold]), np.sort(useful[n_hold:])

        def flat(rows):
            keep = candidates[rows] >= 0
            return (features[rows][keep], labels[rows][keep].astype(np.int32),
                    keep.sum(axis=1))
        X, y, group = flat(fit_rows)
        self.model = lgb.LGBMRanker(
            objective="lambdarank", n_estimators=s.num_trees, learning_rate=s.learning_rate,
            num_leaves=s.num_leaves, min_child_samples=s.min_child_samples,
            random_state=s.seed, n_jobs=2, verbose=-1)
        kwargs = {}
        if n_hold:
            Xh, yh, gh = flat(hold)
            kwargs = dict(eval_set=[(Xh, yh)], eval_group=[gh], eval_at=[10],
                          callbacks=[lgb.early_stopping(s.early_stopping_rounds, verbose=False)])
        self.model.fit(X, y, group=group, feature_name=list(FEATURES), **kwargs)
        importance = dict(zip(FEATURES, self.model.booster_.feature_importance("gain").tolist()))
        return {"validation_examples": len(validation_split),
                "groups_with_target_in_candidates": int(len(useful)),
                "candidate_recall_validation": round(len(useful) / max(1, len(validation_split)),
                                                     4),
                "groups_fit": int(len(fit_rows)), "groups_early_stopping": int(n_hold),
                "best_iteration": int(self.model.best_iteration_ or s.num_trees),
                "feature_gain": {k: round(v, 1) for k, v in importance.items()},
                "fit_s": round(time.time() - started, 1)}

    def rank(self, split, k: int) -> Tuple[np.ndarray, np.ndarray, dict]:
        """(masked [N, k], unmasked [N, k], info): candidates re-ranked by the model;
        masked drops the history items."""
        if self.model is None:
            raise RuntimeError("fit() first")
        candidates, in_history, features = self._all(split)
        n, width = candidates.shape
        scores = np.full((n, width), -np.inf, np.float64)
        valid = candidates >= 0
        if valid.any():
            scores[valid] = self.model.predict(features[valid])
        masked = np.full((n, k), -1, np.int64)
        unmasked = np.full((n, k), -1, np.int64)
        for i in range(n):
            order = np.lexsort((candidates[i], -scores[i]))
            order = order[valid[i][order]]
            unmasked[i, :min(k, len(order))] = candidates[i][order[:k]]
            kept = order[~in_history[i][order]]
            masked[i, :min(k, len(kept))] = candidates[i][kept[:k]]
        target = split.first_target
        in_set = ((candidates == target[:, None]) & valid).any(axis=1)
        in_generated = ((candidates == target[:, None]) & valid & ~in_history).any(axis=1)
        return masked, unmasked, {
            "test_examples": int(n),
            "candidate_recall_test": round(float(in_set.mean()) if n else 0.0, 4),
            "generator_recall_test_masked": round(float(in_generated.mean()) if n else 0.0, 4)}
