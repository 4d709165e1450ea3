"""Offline quality benchmark: ``stars eval`` / ``make bench-quality``.

Trains and evaluates every model in ONE harness on ONE split, with the standard
protocol of the sequential-recommendation literature (see
``shared/data/README.md``):

* **Split**: leave-one-out by time (``PipelineConfig(split_mode="leave_one_out")``):
  per user the last event is the test target, the one before it the validation
  target, the rest training.  The data half of the TFX pipeline
  (CatalogExampleGen, ItemEnricher, Transform) produces the splits under
  ``<out_dir>/pipeline``; it is run once and reused.
* **Training**: the same code as the TFX Trainer (``models.trainer``).  Early
  stopping and model selection use the validation target only: after every
  epoch the whole catalogue is ranked for each validation example
  (``validation_ranking.ValidationRanking``) and the epoch with the best masked
  NDCG@10 is kept (best weights restored).  The TEST split is opened once per
  model, after training, and only scored.
* **Ranking**: the FULL catalogue (no sampled negatives): brute-force dot
  products of the user embeddings (``StarsModel.user_embeddings``: h_gen = GI,
  h_next = NI) with every item embedding (``item_embeddings()``), in chunks;
  RR is the round-robin interleaving of GI and NI (GI first, as the pipeline's
  evaluator).  **Masked** = the items already in the user's history are
  excluded from the ranking (as the S3-Rec evaluation code does);
  **unmasked** = nothing excluded; both are reported.
* **Metrics**: HR@K, NDCG@K and Recall@K for K = 5, 10, 20 (one target per
  user: Recall@K = HR@K), MRR (within the top 20), Coverage@10 (share of the
  catalogue in at least one top-10 list), and cold-start Recall@10: the test
  examples whose target item has no training interaction (first seen after
  the user's training events -- in leave-one-out there is no global cut).
* **Baselines**: ``popularity`` (training counts, the Transform's
  ``item_popularity`` vocabulary), ``sasrec_id`` (STARS with its semantic
  parts, text and tags, off and a full-catalogue cross-entropy: an ID-only
  SASRec-style model with STARS' other parts), ``sasrec_plain`` (SASRec as
  published: item IDs and positions only),
  ``cooccurrence`` (that generator alone: items that followed the user's last
  three items in training sequences, popularity filling in -- no learning, so it
  also shows how far the validation and test targets differ by themselves),
  ``lambdamart`` (LightGBM lambdarank over the top-100 candidates of that
  popularity + co-occurrence generator, see :mod:`stars.evaluation.lambdamart`;
  skipped with a note when ``lightgbm`` is not installed) and the paper's
  ablations (``stars_no_text``, ``stars_no_tags``, ``stars_no_context``,
  ``stars_no_user``).  Every ``stars`` run also scores ``stars_cooc``: the same trained
  model's NI scores plus a weighted log co-occurrence count, a second retrieval source
  (weight chosen on the validation target; its own row, not the paper's model).
* **Slices** (data with categories and impressions, i.e. the synthetic data):
  Hit@5 per category of the test target (full-catalogue ranking, masked), and
  Hit@5 within the candidate set the user was shown (the target event's page),
  by candidate-set size bucket.

Output: a results JSON (merged per model: a later run replaces the entries
of the models it ran and keeps the others, when dataset and protocol agree)
and a Markdown report with PNG plots (matplotlib when installed, otherwise a
small Pillow renderer; tables only when neither is available).
"""
from __future__ import annotations

import dataclasses
import glob
import json
import logging
import math
import os
import shutil
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from stars import calendar_context as CC
from stars import retrieval_metrics as RM
from stars.evaluation import seed_means
from stars.interleaving import interleave_round_robin

log = logging.getLogger(__name__)

KS: Tuple[int, ...] = (5, 10, 20)
K_MAX = max(KS)
COVERAGE_K = 10
COLD_K = 10
SLICE_K = 5
MAX_CATEGORY_SLICES = 50   # more categories than that (e.g. Beauty's attribute ids): no slice
CANDIDATE_SET_BUCKETS = ((1, 5), (6, 10), (11, 20), (21, 50), (51, None))
MODEL_VARIANTS = ("stars", "sasrec_id", "sasrec_plain", "stars_no_text", "stars_no_tags",
                  "stars_no_context", "stars_no_user")
BASELINES = ("popularity", "cooccurrence", "lambdamart")
ALL_MODELS = ("popularity", "cooccurrence", "stars", "sasrec_id", "sasrec_plain", "lambdamart",
              "stars_no_text", "stars_no_tags", "stars_no_context", "stars_no_user")
# STARS with its second retrieval source (``models.successor_source``, what the ``cpu``
# and ``paper`` presets serve): the NI scores plus γ · log(1 + the co-occurrence count
# after the user's last three items), γ chosen on the validation target as the Trainer
# chooses it (0 = STARS alone).  Scored with every ``stars`` run, from the same trained
# model; a different product from the paper's single dot product (the count is a
# high-rank item-to-item signal), so it is its own row.
SECOND_SOURCE_MODEL = "stars_cooc"
RESULT_ORDER = ALL_MODELS[:3] + (SECOND_SOURCE_MODEL,) + ALL_MODELS[3:]
PIPELINE_SUBDIR = "pipeline"              # the full run's data half
QUICK_PIPELINE_SUBDIR = "pipeline-quick"  # the quick run's (a user sample): never mixed
QUICK_DATA_SUBDIR = "data-quick"
MARKER_FILE = "offline_eval_data.json"
SCHEMA_VERSION = 1
# Bumped whenever the data half's output changes meaning (2: taxonomy and brand in t_i),
# so a cached data half from older code is rebuilt, not silently reused.
DATA_HALF_VERSION = 2


@dataclasses.dataclass(frozen=True)
class QuickSettings:
    """What ``quick=True`` shrinks: small enough for CI on the tiny synthetic data."""
    preset: str = "tiny"
    epochs: int = 2
    max_users: int = 300            # users kept (seeded sample) before the data half
    lambdamart_trees: int = 40
    lambdamart_candidates: int = 50


QUICK = QuickSettings()


# ----------------------------------------------------------------------------------------
# data half
# ----------------------------------------------------------------------------------------

def _table_file(data_dir: Path, name: str) -> Optional[Path]:
    from stars.data import contract
    return contract.find_table_file(data_dir, contract.TABLES[name])


def _read_any(path: Path):
    import pandas as pd
    if path.name.endswith(".parquet"):
        return pd.read_parquet(path)
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def subsample_users(data_dir, out_dir, max_users: int, seed: int = 0) -> Tuple[str, dict]:
    """A copy of ``data_dir`` with at most ``max_users`` users (a seeded sample; the
    whole catalogue is kept).  Returns ``(directory, info)``; ``data_dir`` itself when
    it has no more users than that."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    interactions_path = _table_file(data_dir, "interactions")
    interactions = _read_any(interactions_path)
    users = np.array(sorted(interactions["user_id"].astype(str).unique()))
    if len(users) <= max_users:
        return str(data_dir), {"users": int(len(users)), "subsampled": False}
    keep = set(np.random.default_rng(seed).choice(users, max_users, replace=False).tolist())
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    interactions[interactions["user_id"].astype(str).isin(keep)].to_csv(
        out_dir / "interactions.csv", index=False)
    for name in ("items", "impressions", "users"):
        path = _table_file(data_dir, name)
        if path is None:
            continue
        if name == "users":
            frame = _read_any(path)
            frame[frame["user_id"].astype(str).isin(keep)].to_csv(out_dir / "users.csv",
                                                                   index=False)
        else:
            shutil.copyfile(path, out_dir / path.name)
    return str(out_dir), {"users": max_users, "users_in_source": int(len(users)),
                          "subsampled": True, "seed": seed}


def pipeline_root(out_dir, quick: bool = False) -> Path:
    return Path(out_dir) / (QUICK_PIPELINE_SUBDIR if quick else PIPELINE_SUBDIR)


def _latest(root: str, component: str, output: str) -> Optional[str]:
    uris = glob.glob(os.path.join(root, component, output, "*"))
    uris = [u for u in uris if os.path.basename(u).isdigit()]
    return max(uris, key=lambda u: int(os.path.basename(u))) if uris else None


def _data_half_done(root: str) -> bool:
    te = _latest(root, "Transform", "transformed_examples")
    return bool(te) and all(glob.glob(os.path.join(te, f"Split-{s}", "*.gz"))
                            for s in ("train", "eval", "test")) \
        and bool(_latest(root, "CatalogTransform", "transformed_examples"))


def prepare_data(data_dir, out_dir, quick: bool = False, encoder: str = "minilm",
                 tagger: str = "keyword", seed: int = 0, max_history: int = 200) -> dict:
    """Runs the data half with ``split_mode="leave_one_out"`` under ``<out_dir>/pipeline``
    (``pipeline-quick`` in quick mode) unless it is already there for the same inputs;
    returns the data description."""
    out_dir = Path(out_dir)
    root = pipeline_root(out_dir, quick)
    fingerprint = {"data_dir": os.path.abspath(data_dir), "quick": bool(quick),
                   "quick_max_users": QUICK.max_users if quick else None,
                   "encoder": encoder, "tagger": tagger, "seed": seed if quick else None,
                   "max_history": max_history, "split_mode": "leave_one_out",
                   "data_half_version": DATA_HALF_VERSION}
    marker = root / MARKER_FILE
    if _data_half_done(str(root)) and marker.is_file():
        recorded = json.loads(marker.read_text())
        old = dict(recorded.get("fingerprint") or {})
        if old.get("data_half_version") != DATA_HALF_VERSION and \
                {**old, "data_half_version": DATA_HALF_VERSION} == fingerprint:
            log.warning("%s was made by an older data half (version %s, now %s): rebuilding",
                        root, old.get("data_half_version"), DATA_HALF_VERSION)
        elif recorded.get("fingerprint") != fingerprint:
            raise ValueError(f"{root} holds the data half of another configuration "
                             f"({recorded.get('fingerprint')}); use another --out directory "
                             f"or delete it")
        else:
            log.info("data half already in %s: reused", root)
            return {**recorded, "reused": True}
    if root.exists():  # an unfinished or unmarked run: start again
        shutil.rmtree(root)
    started = time.time()
    source, sample = str(data_dir), {"subsampled": False}
    if quick:
        source, sample = subsample_users(data_dir, out_dir / QUICK_DATA_SUBDIR, QUICK.max_users,
                                         seed)
    from pipeline.configs import PipelineConfig
    from pipeline.runners import local
    local.run(PipelineConfig(data_dir=os.path.abspath(source), pipeline_root=str(root),
                             encoder=encoder, tagger=tagger, split_mode="leave_one_out",
                             max_history=max_history, train_model=False))
    if not _data_half_done(str(root)):
        raise RuntimeError(f"the data half did not produce train/eval/test splits in {root}")
    recorded = {"fingerprint": fingerprint, "source_dir": os.path.abspath(source),
                "sample": sample, "wall_s": round(time.time() - started, 1)}
    marker.write_text(json.dumps(recorded, indent=1, sort_keys=True))
    return {**recorded, "reused": False}


# ----------------------------------------------------------------------------------------
# reading the splits
# ----------------------------------------------------------------------------------------

RAW_FEATURES = ("user_id", "item_id", "timestamp", "target_item_id", "target_timestamp",
                "target_page_item_id")


@dataclasses.dataclass
class SplitData:
    """One split in catalogue indices; one row per example (user)."""
    user_ids: List[str]
    history: List[np.ndarray]        # int64 item indices, oldest first (unknown ids dropped)
    history_ts: List[np.ndarray]     # int64 unix seconds, aligned with ``history``
    targets: List[np.ndarray]        # int64 item indices (leave-one-out: one)
    target_ts: np.ndarray            # int64 [N]
    candidates: List[np.ndarray]     # the target page's shown items (may be empty)

    def __len__(self) -> int:
        return len(self.user_ids)

    @property
    def first_target(self) -> np.ndarray:
        return np.array([t[0] if len(t) else -1 for t in self.targets], np.int64)

    @staticmethod
    def concat(parts: Sequence["SplitData"]) -> "SplitData":
        return SplitData([u for p in parts for u in p.user_ids],
                         [h for p in parts for h in p.history],
                         [h for p in parts for h in p.history_ts],
                         [t for p in parts for t in p.targets],
                         np.concatenate([p.target_ts for p in parts]) if parts
                         else np.zeros(0, np.int64),
                         [c for p in parts for c in p.candidates])


class EvalContext:
    """The data half's artifacts, the catalogue and split readers (counted per model)."""

    def __init__(self, pipeline_root: str):
        import tensorflow_transform as tft

        from models import trainer as T
        self.root = pipeline_root
        self.transform_graph = _latest(pipeline_root, "Transform", "transform_graph")
        self.examples = _latest(pipeline_root, "Transform", "transformed_examples")
        catalog_examples = _latest(pipeline_root, "CatalogTransform", "transformed_examples")
        catalog_graph = _latest(pipeline_root, "CatalogTransform", "transform_graph")
        self.tft_output = tft.TFTransformOutput(self.transform_graph)
        self.meta = T.build_meta(self.tft_output, self.transform_graph, catalog_examples,
                                 catalog_graph)
        self.catalog = T.load_catalog(self.meta)
        self.accessor = T.local_data_accessor()
        self.counts = np.asarray(self.catalog.counts, np.float64)
        self.reads: Dict[str, Counter] = defaultdict(Counter)  # model -> split -> opened
        self._table = None

    @property
    def num_items(self) -> int:
        return len(self.catalog)

    def files(self, split: str) -> List[str]:
        files = sorted(glob.glob(os.path.join(self.examples, f"Split-{split}", "*.gz")))
        if not files:
            raise FileNotFoundError(f"no Split-{split} in {self.examples}")
        return files

    def _lookup(self, ids):
        import tensorflow as tf
        if self._table is None:
            self._table = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(
                    tf.constant([str(i) for i in self.catalog.item_ids], tf.string),
                    tf.range(self.num_items, dtype=tf.int64)), default_value=-1)
        return self._table.lookup(ids)

    def dataset(self, split: str, model: str, adapter=None, batch_size: int = 256):
        """Batches of ``(model inputs or {}, raw features)`` over a split, in file order.
        Every call is recorded in ``reads[model][split]``."""
        from tfx_bsl.public import tfxio
        self.reads[model][split] += 1
        options = tfxio.TensorFlowDatasetOptions(batch_size=batch_size, shuffle=False,
                                                 num_epochs=1)
        data = self.accessor.tf_dataset_factory(self.files(split), options,
                                                self.tft_output.transformed_metadata.schema)

        def split_features(features):
            raw = {k: features[k] for k in RAW_FEATURES if k in features}
            return (adapter(features) if adapter is not None else {}), raw
        return data.map(split_features).prefetch(2)

    def to_split_data(self, raw: Mapping) -> SplitData:
        import tensorflow as tf

        from models.inputs import numpy_rows

        def indices(name):
            if name not in raw:
                return None
            x = raw[name]
            if isinstance(x, tf.SparseTensor):
                x = tf.SparseTensor(x.indices, self._lookup(x.values), x.dense_shape)
            elif isinstance(x, tf.RaggedTensor):
                x = x.with_flat_values(self._lookup(x.flat_values))
            else:
                x = self._lookup(x)
            return numpy_rows(x)
        items = indices("item_id")
        times = numpy_rows(raw["timestamp"])
        history, history_ts = [], []
        for row_items, row_ts in zip(items, times):
            known = row_items >= 0
            history.append(row_items[known].astype(np.int64))
            history_ts.append(np.asarray(row_ts, np.int64)[known])
        targets = [t[t >= 0].astype(np.int64) for t in indices("target_item_id")]
        pages = indices("target_page_item_id")
        pages = [p[p >= 0].astype(np.int64) for p in pages] if pages is not None else \
            [np.zeros(0, np.int64) for _ in targets]
        target_ts = np.array([r[0] if len(r) else 0
                              for r in numpy_rows(raw["target_timestamp"])],
                             np.int64)
        users = [r[0].decode() if len(r) else "" for r in numpy_rows(raw["user_id"])]
        return SplitData(users, history, history_ts, targets, target_ts, pages)

    def read_split(self, split: str, model: str) -> SplitData:
        return SplitData.concat([self.to_split_data(raw)
                                 for _, raw in self.dataset(split, model, batch_size=1024)])


# ----------------------------------------------------------------------------------------
# ranking and metrics
# ----------------------------------------------------------------------------------------

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


def _clean(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (np.floating,)):
        return _clean(float(value))
    if isinstance(value, (np.integer,)):
        return int(value)
    return value


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
    return {k: _clean(round(v, 6) if isinstance(v, float) else v) for k, v in out.items()}


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
            for name, v in sorted(buckets.items(), key=lambda kv: int(kv[0].strip(">").split("-")[0]))}
    return out


# ----------------------------------------------------------------------------------------
# models
# ----------------------------------------------------------------------------------------

def _interleave(gi: np.ndarray, ni: np.ndarray) -> np.ndarray:
    return interleave_round_robin(gi, ni, gi.shape[1])[0]


def _validation_block(top: np.ndarray, split: SplitData, num_items: int) -> dict:
    block = metric_block(top, split.targets, num_items)
    return {k: block[k] for k in ("hr@10", "ndcg@10", "num_examples")}


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
            "validation": {"masked": _validation_block(val_masked, val_data, ctx.num_items)},
            "slices": slice_metrics(test, masked, ctx.catalog),
            "seed": stars_entry["seed"], "config": config,
            "split_reads": dict(ctx.reads[SECOND_SOURCE_MODEL]),
            "wall_s": round(stars_entry["wall_s"] + time.time() - started, 1)}


def validation_ranking(ctx: EvalContext, model: str, adapter, variants,
                       verbose: bool = False):
    """The early-stopping callback over the validation split (inputs kept in memory)."""
    from models import validation_ranking as VR
    batches, parts = [], []
    for inputs, raw in ctx.dataset("eval", model, adapter):
        batches.append(inputs)
        parts.append(ctx.to_split_data(raw))
    data = SplitData.concat(parts)
    return VR.by_span(batches, data.history, data.targets, adapter.max_history, variants,
                      verbose=verbose)


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
                       quick: bool = False, overrides: Optional[Mapping] = None,
                       verbose: int = 0) -> List[dict]:
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
    examples = None
    if config.item_trend or second_source:  # from the training split, as the Trainer's run_fn
        ctx.reads[variant]["train"] += 1
        examples = T.training_examples(ctx.files("train"), ctx.accessor, ctx.tft_output,
                                       adapter)
    trend = T.training_trend(examples, ctx.num_items) if config.item_trend else None
    successors = T.training_successors(examples, ctx.num_items) if second_source else None
    model = T.build_model(ctx.catalog, config, ctx.meta.with_trend(trend), trend, successors)
    # Build the item tower before fit: DeltaUnfreeze opens the δ gate in
    # on_epoch_begin(0) when delta_frozen_epochs = 0 (the ID-only models), before
    # any forward pass would have created it.
    model.item_embeddings(tf.constant([0]))
    model.items.build(None)
    trained = T.user_embedding_variants(config)
    variants = trained + ("rr",) if "gi" in trained else trained  # rr interleaves gi and ni
    ranking = validation_ranking(ctx, variant, adapter, trained, verbose=bool(verbose))
    history = T.train(model, config, train_inputs, None, steps * config.epochs,
                      verbose=verbose, validation_callbacks=[ranking],
                      monitor=VR.MONITOR, monitor_mode="max")
    selection = [float(x) for x in history.history.get(VR.MONITOR, [])]
    selected = T.select_after_training(model, ranking, ctx.counts, config)
    train_s = time.time() - started
    val_data, val_ranked, _ = _score_split(ctx, model, adapter, "eval", variant, variants)
    validation_blocks = {v: _validation_block(val_ranked[v][0], val_data, ctx.num_items)
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


def evaluate_cooccurrence(ctx: EvalContext, seed: int = 0) -> List[dict]:
    """The LambdaMART baseline's candidate generator ranking the whole catalogue by
    itself; scored on the validation target too (nothing is selected on it)."""
    from stars.evaluation import cooccurrence, lambdamart
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
        "validation": {"masked": _validation_block(val_masked, validation, ctx.num_items)},
        "slices": slice_metrics(test, masked, ctx.catalog),
        "seed": seed,
        "config": {"scores": "directed co-occurrence with the last three items (window "
                             f"{settings.window}, weights {list(cooccurrence.RECENT_WEIGHTS)}) "
                             "+ 1e-3 x popularity, from the training split"},
        "split_reads": dict(ctx.reads["cooccurrence"]),
        "wall_s": round(time.time() - started, 1)}]


def evaluate_lambdamart(ctx: EvalContext, seed: int = 0, quick: bool = False) -> List[dict]:
    from stars.evaluation import lambdamart
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


# ----------------------------------------------------------------------------------------
# results file and report
# ----------------------------------------------------------------------------------------

def _protocol(ctx: EvalContext, test_examples: int, quick: bool, data_info: dict,
              calendar_context_reason: str = "") -> dict:
    return {
        "split": "leave_one_out by time: last event = test target, second-to-last = "
                 "validation target (early stopping / model selection), rest = training",
        "ranking": "full catalogue, brute-force dot products (no sampled negatives)",
        "masked": "items in the user's history excluded from the ranking (S3-Rec)",
        "unmasked": "nothing excluded",
        "ks": list(KS), "coverage_k": COVERAGE_K,
        "cold_start": f"Recall@{COLD_K} over test targets with zero training count",
        "rr": "round-robin interleaving of GI and NI, GI first",
        "calendar_context": calendar_context_reason,
        "num_items": ctx.num_items, "test_examples": test_examples,
        "quick": bool(quick), "data": {k: data_info.get(k) for k in ("sample", "fingerprint")},
    }


def _same_run(old: dict, dataset: str, protocol: dict) -> bool:
    """Same dataset and protocol; a run that scored nothing (``test_examples`` None: every
    model skipped) cannot tell its test size and matches on the other keys."""
    keys = ("num_items", "test_examples", "quick", "ks")
    return old.get("dataset") == dataset and all(
        old.get("protocol", {}).get(k) == protocol.get(k) for k in keys
        if not (k == "test_examples" and protocol.get(k) is None))


def merge_results(path, dataset: str, protocol: dict, entries: List[dict],
                  dropped: Iterable[str] = ()) -> dict:
    """Writes ``{"dataset", "protocol", "results"}``; entries of models run now replace
    the same (model, seed) entries of an earlier compatible run, and that model's other
    seeds are kept only if they were trained with the same settings (a mean over seeds
    must not mix presets); the rest are kept except those of the ``dropped`` models (no
    longer meaningful in this run)."""
    path = Path(path)
    old = {}
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except ValueError:
            old = {}
    kept = []
    if old and _same_run(old, dataset, protocol):
        if protocol.get("test_examples") is None:
            protocol = {**protocol, "test_examples": old["protocol"].get("test_examples")}
        replaced = {(e["model"], e.get("seed")) for e in entries}
        current = {e["model"]: seed_means.settings(e) for e in entries}
        dropped = set(dropped)
        kept = [e for e in old.get("results", []) if (e["model"], e.get("seed")) not in replaced
                and e["model"] not in dropped
                and current.get(e["model"], seed_means.settings(e)) == seed_means.settings(e)]
    elif old:
        log.warning("%s holds results of another dataset/protocol: overwritten", path)
    order = {m: i for i, m in enumerate(RESULT_ORDER)}
    variants = {None: 0, "gi": 1, "ni": 2, "rr": 3}
    results = sorted(kept + entries, key=lambda e: (order.get(e["model"], 99), e["model"],
                                                    variants.get(e.get("variant"), 9),
                                                    e.get("seed") or 0))
    document = {"dataset": dataset, "protocol": protocol, "results": results,
                "schema_version": SCHEMA_VERSION}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(document, indent=1, sort_keys=False, default=_clean,
                              allow_nan=False))
    os.replace(tmp, path)
    return document


# Published full-ranking, history-masked results on Amazon Beauty (shared/data/README.md).
PUBLISHED_BEAUTY = (
    ("SASRec (as reported by S3-Rec)", "0.0605", "0.0318"),
    ("BERT4Rec", "0.0347", "0.0170"),
    ("S3-Rec", "0.0647", "0.0327"),
    ("TIGER (Table 1)", "0.0648", "0.0384"),
    ("SASRec, full cross-entropy (reimplementations)", "~0.081-0.086", "~0.046-0.050"),
)
SASREC_TARGET = {"hr@10": 0.095, "ndcg@10": 0.056}
STARS_TARGET = {"hr@10": 0.110, "ndcg@10": 0.066}
STARS_VS_SASREC_NDCG = 1.15     # STARS NDCG@10 >= 1.15 x the ID-only SASRec's
STARS_VS_LAMBDAMART_HIT5 = 1.75  # the paper's +75% Hit@5 over LambdaMART
ABLATIONS_OF_STARS = ("stars_no_text", "stars_no_tags", "stars_no_context", "stars_no_user")
NO_USER_FEATURES = ("the data has no user features, so stars runs without the [USER] token "
                    "(models.trainer.fit_user_token)")
# Ablations of a part the data can switch off in stars itself: (the config fields that
# make up the part, why n/a when stars runs with all of them off).
SWITCHED_OFF_BY_DATA = {
    "stars_no_context": (("use_context", "item_trend"),
                         "stars itself runs without calendar context or item trend on this data"),
    "stars_no_user": (("use_user_token",), "stars itself runs without a [USER] token on this "
                                           "data: it has no user features"),
}


def _best(entries: List[dict], model: str) -> Optional[dict]:
    """The model's entry with the best masked NDCG@10 (over its GI/NI/RR variants)."""
    mine = [e for e in entries if e["model"] == model]
    return max(mine, key=lambda e: e["masked"].get("ndcg@10") or 0.0) if mine else None


def settings_apart_from_ablation(stars_entry: dict, ablated_entry: dict, ablation: str) -> list:
    """The ModelConfig fields (besides those the ablation switches, and the ablated
    variant's own tuning under the preset it ran with) on which two result entries
    differ: an ablation only measures its switch when nothing else moved."""
    from models.config import ABLATIONS, completed, variant_tuning
    preset = ((ablated_entry.get("config") or {}).get("training") or {}).get("preset")
    ignored = (set(ABLATIONS.get(ablation, {})) | set(variant_tuning(preset, ablation))
               | set(seed_means.PER_RUN_FIELDS))
    a, b = completed(stars_entry.get("config") or {}), completed(ablated_entry.get("config") or {})
    return sorted(k for k in set(a) | set(b) if k not in ignored and a.get(k) != b.get(k))


def _within_spread(difference: float, entry: dict) -> Optional[str]:
    """A note when ``difference`` is smaller than the entry's seed-to-seed NDCG@10 range:
    such a difference is not evidence either way."""
    low, high = (entry.get("spread") or {}).get("ndcg@10") or (None, None)
    if low is None or abs(difference) >= high - low:
        return None
    return f"within stars' seed-to-seed range {_fmt(low)}–{_fmt(high)}"


def target_checks(entries: List[dict], dataset: str = "beauty") -> List[dict]:
    """Each quality target of the benchmark with the figures it compares:
    ``{"target", "value", "bar", "reached"}``; targets whose models were not run are
    left out, and the absolute HR/NDCG bars (set for Amazon Beauty) are checked on
    Beauty only.  Figures are masked test-split figures of each model's best variant,
    averaged over the model's seeds when it was run with several (``seed_means``)."""
    from models.config import completed
    entries = seed_means.mean_entries(entries)
    checks = []
    absolute = "beauty" in dataset.lower()

    def add(target, value, bar, strict=False, note=None):
        reached = value > bar if strict else value >= bar
        checks.append({"target": target, "value": round(float(value), 5),
                       "bar": round(float(bar), 4), "reached": bool(reached),
                       **({"note": note} if note else {})})
    stars_e, lambdamart = _best(entries, "stars"), _best(entries, "lambdamart")
    # The bar is the ID-only baseline's; the published SASRec is held to it too,
    # since the bar is what a plain SASRec with full softmax is said to reach.
    baselines = {name: _best(entries, name) for name in ("sasrec_id", "sasrec_plain")}
    sasrec = baselines["sasrec_id"]
    for name, baseline in baselines.items():
        if baseline is not None and absolute:
            for k, bar in SASREC_TARGET.items():
                add(f"{name} {k.upper()} (honest tuning)", baseline["masked"][k], bar)
    if stars_e is not None:
        m = stars_e["masked"]
        for k, bar in (STARS_TARGET.items() if absolute else ()):
            add(f"stars {k.upper()} ({_label(stars_e)})", m[k], bar)
        if sasrec is not None:
            add("stars NDCG@10 / sasrec_id NDCG@10", m["ndcg@10"] / max(
                sasrec["masked"]["ndcg@10"], 1e-12), STARS_VS_SASREC_NDCG)
        if lambdamart is not None:
            add("stars HR@5 / lambdamart HR@5", m["hr@5"] / max(
                lambdamart["masked"]["hr@5"], 1e-12), STARS_VS_LAMBDAMART_HIT5)
        for name in ABLATIONS_OF_STARS:
            ablated = _best(entries, name)
            target = f"{name} lowers NDCG@10 (stars minus ablation > 0)"
            switched_off = SWITCHED_OFF_BY_DATA.get(name)
            recorded = completed(stars_e.get("config") or {})
            if switched_off and not any(recorded.get(f, True) for f in switched_off[0]):
                # stars itself runs without the part: not run, or left from an earlier run
                checks.append({"target": target, "value": None, "bar": 0.0, "reached": None,
                               "note": switched_off[1]})
                continue
            if ablated is None:
                continue
            drop = m["ndcg@10"] - ablated["masked"]["ndcg@10"]
            differing = settings_apart_from_ablation(stars_e, ablated, name)
            if differing:  # e.g. an ablation kept from a run with an older preset
                checks.append({"target": target, "value": round(float(drop), 4), "bar": 0.0,
                               "reached": None,
                               "note": "not comparable: trained with other "
                                       + ", ".join(differing)})
                continue
            add(target, drop, 0.0, strict=True, note=_within_spread(drop, stars_e))
        cold = m.get("cold_start_recall@10")
        if cold is not None and m.get("cold_start_examples"):
            add("stars cold-start Recall@10 > 0", cold, 0.0, strict=True)
    return checks


def _chosen(selection: Optional[dict]) -> str:
    """A choice made after training (``config.training``): what was kept, "–" where the
    model has no such part, "off" where it was tried and 0 / None won."""
    if not selection:
        return "–"
    return "off" if selection.get("chosen") in (None, 0, 0.0) else str(selection["chosen"])


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _verdict(check: dict) -> str:
    if check["reached"] is None:
        return f"n/a ({check.get('note', 'not comparable')})"
    verdict = "yes" if check["reached"] else "**no**"
    return verdict + (f" ({check['note']})" if check.get("note") else "")


def _label(entry: dict, seeds: bool = True) -> str:
    """"stars NI"; ", N seeds" added for an entry averaged over N seeds."""
    label = entry["model"] + (f" {entry['variant'].upper()}" if entry.get("variant") else "")
    n = len(entry.get("seeds") or [])
    return label + (f", {n} seeds" if seeds and n > 1 else "")


def _plots(document: dict, stem: Path) -> Tuple[List[Tuple[str, str]], str]:
    """PNG bar charts next to the report: [(title, file name)], and the renderer used."""
    from stars.evaluation import plots
    entries = document["results"]
    charts = []
    for key, title in (("hr@10", "HR@10"), ("ndcg@10", "NDCG@10")):
        bars = [(_label(e), e["masked"].get(key) or 0.0, e["unmasked"].get(key) or 0.0)
                for e in seed_means.mean_entries(entries)]  # one bar per model, not per seed
        name = f"{stem.name}_{key.replace('@', '')}.png"
        if plots.grouped_bars(stem.parent / name, f"{title} (full catalogue)", bars,
                              ("masked", "unmasked")):
            charts.append((f"{title}, masked vs unmasked", name))
    best = _headline(entries)
    if best is not None:
        for slice_name, title in (("category", f"Hit@{SLICE_K} per target category"),
                                  ("candidate_set_size",
                                   f"Hit@{SLICE_K} by candidate-set size")):
            rows = best.get("slices", {}).get(slice_name)
            if not rows:
                continue
            bars = [(name, v[f"hit@{SLICE_K}"], None) for name, v in rows.items()]
            name = f"{stem.name}_{slice_name}.png"
            if plots.grouped_bars(stem.parent / name, f"{title} ({_label(best)})", bars,
                                  ("masked",)):
                charts.append((title, name))
    return charts, plots.renderer()


def _headline(entries: List[dict]) -> Optional[dict]:
    """STARS' best variant of its first seed (the slices are one run's breakdown; picking
    the best seed would flatter them)."""
    stars_entries = [e for e in entries if e["model"] == "stars"]
    if not stars_entries:
        return None
    first = min(e.get("seed") or 0 for e in stars_entries)
    return max((e for e in stars_entries if (e.get("seed") or 0) == first),
               key=lambda e: e["masked"].get("hr@10") or 0.0)


def write_report(document: dict, path, wall_s: Optional[float] = None,
                 notes: Sequence[str] = ()) -> str:
    """Markdown report (tables + PNG plots when a renderer is available)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    entries, protocol = document["results"], document["protocol"]
    lines = [f"# Offline quality: {document['dataset']}", ""]
    lines += [f"- split: {protocol['split']}", f"- ranking: {protocol['ranking']}",
              f"- masked: {protocol['masked']}; unmasked beside it",
              f"- catalogue: {protocol['num_items']} items; test examples: "
              f"{_fmt(protocol['test_examples'])}; quick mode: {protocol['quick']}",
              f"- cold start: {protocol['cold_start']}", f"- RR: {protocol['rr']}"]
    if protocol.get("calendar_context"):
        lines.append(f"- {protocol['calendar_context']}")
    if wall_s is not None:
        lines.append(f"- wall time of this run: {wall_s:.0f} s ({os.cpu_count()} CPU cores)")
    lines.append("")
    header = ["model", "seed", "HR@5", "NDCG@5", "HR@10", "NDCG@10", "HR@20", "NDCG@20", "Cov@10",
              "cold R@10 (n)", "HR@10 unmasked", "NDCG@10 unmasked", "val HR@10", "wall s"]
    lines += ["## Test split (masked unless stated)", "", "| " + " | ".join(header) + " |",
              "|" + "---|" * len(header)]
    for e in entries:
        m, u = e["masked"], e["unmasked"]
        val = (e.get("validation") or {}).get("masked", {}).get("hr@10")
        lines.append("| " + " | ".join([
            _label(e), _fmt(e.get("seed")), _fmt(m["hr@5"]), _fmt(m["ndcg@5"]),
            _fmt(m["hr@10"]), _fmt(m["ndcg@10"]), _fmt(m["hr@20"]), _fmt(m["ndcg@20"]),
            _fmt(m.get("coverage@10")),
            f"{_fmt(m.get('cold_start_recall@10'))} ({m.get('cold_start_examples', 0)})",
            _fmt(u["hr@10"]), _fmt(u["ndcg@10"]), _fmt(val), _fmt(e.get("wall_s"), 0)]) + " |")
    lines.append("")
    walls = [e.get("wall_s") or 0.0 for e in entries if e.get("variant") in (None, "ni")]
    lines += [f"Sum of the models' wall times: {sum(walls):.0f} s (data half not included).",
              ""]
    if seed_means.several_seeds(entries):
        lines += ["## Mean over seeds (what the targets compare)", "",
                  "| model | seeds | HR@5 | HR@10 | NDCG@10 | NDCG@10 min–max | val NDCG@10 |",
                  "|---|---|---|---|---|---|---|"]
        for e in seed_means.mean_entries(entries):
            m, spread = e["masked"], e.get("spread", {}).get("ndcg@10")
            val = (e.get("validation") or {}).get("masked", {}).get("ndcg@10")
            lines.append(f"| {_label(e, seeds=False)} | {', '.join(str(s) for s in e['seeds'])}"
                         f" | {_fmt(m['hr@5'])} | "
                         f"{_fmt(m['hr@10'])} | {_fmt(m['ndcg@10'])} | "
                         f"{'–' if not spread else _fmt(spread[0]) + '–' + _fmt(spread[1])} | "
                         f"{_fmt(val)} |")
        lines.append("")
    checks = target_checks(entries, document["dataset"])
    if checks:
        lines += ["## Targets (masked, test split)", "", "| target | value | bar | reached |",
                  "|---|---|---|---|"]
        lines += [f"| {c['target']} | {_fmt(c['value'], 5)} | {_fmt(c['bar'])} | "
                  f"{_verdict(c)} |" for c in checks]
        lines.append("")
    if "beauty" in document["dataset"].lower():
        lines += ["## Published full-ranking results on Beauty (masked)", "",
                  "| model | HR@10 | NDCG@10 |", "|---|---|---|"]
        lines += [f"| {n} | {h} | {g} |" for n, h, g in PUBLISHED_BEAUTY]
        lines += ["", "Numbers from 99-sampled-negative protocols are not comparable.", ""]
    best = _headline(entries)
    if best is not None and best.get("slices"):
        lines += [f"## Slices ({_label(best)}, test split)", ""]
        for slice_name, rows in best["slices"].items():
            lines += [f"### Hit@{SLICE_K} by {slice_name.replace('_', ' ')}", "",
                      f"| {slice_name} | Hit@{SLICE_K} | n |", "|---|---|---|"]
            lines += [f"| {k} | {_fmt(v[f'hit@{SLICE_K}'])} | {v['n']} |"
                      for k, v in rows.items()]
            lines.append("")
        note = "Category slices rank the full catalogue (masked)."
        if "candidate_set_size" in best["slices"]:
            note += (" Candidate-set slices rank the items shown on the target's page (Hit@5 "
                     "is 1 by construction for sets of at most 5 items).")
        lines += [note, ""]
    charts, renderer = _plots(document, path.with_suffix(""))
    if charts:
        lines += ["## Plots", ""] + [f"![{t}]({n})" for t, n in charts] + [""]
        lines.append(f"(plots drawn with {renderer})")
    else:
        lines.append("(no plots: neither matplotlib nor Pillow is installed)")
    lines.append("")
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    lines += ["## Training details", "",
              "| model | seed | epochs run / max | best epoch | semantic match η (validation) "
              "| cold-item quantile | train s |", "|---|---|---|---|---|---|---|"]
    sources = []
    for e in entries:
        t = e.get("config", {}).get("training")
        if t and t.get("second_source"):  # stars' own training, listed under stars
            sources.append(e)
        elif t and e.get("variant") in ("ni",):
            lines.append(f"| {e['model']} | {_fmt(e.get('seed'))} | "
                         f"{t['epochs_run']} / {t['epochs_max']} | "
                         f"{t['best_epoch']} | {_chosen(t.get('semantic_match'))} | "
                         f"{_chosen(t.get('cold_item_norm'))} | {t['train_s']} |")
    if sources:
        lines += ["", f"## Second source ({SECOND_SOURCE_MODEL}: the same seed's stars model)",
                  "", sources[0]["config"]["training"]["second_source"]["scores"] + ".", "",
                  "| seed | weight kept | validation NDCG@10 by weight |", "|---|---|---|"]
        for e in sources:
            source = e["config"]["training"]["second_source"]
            tried = ", ".join(f"{w}: {_fmt(v)}" for w, v in source["val_ndcg@10"].items())
            lines.append(f"| {_fmt(e.get('seed'))} | {source['weight']} | {tried} |")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


# ----------------------------------------------------------------------------------------
# entry point
# ----------------------------------------------------------------------------------------

def _has_dynamic_context(preset: str, quick: bool, overrides: Optional[Mapping]) -> bool:
    """Whether stars runs with a part of the "− dynamic context" ablation: calendar
    context (data-decided) or the item trend."""
    config = model_config("stars", preset, 0, quick, overrides)
    return any(getattr(config, f) for f in SWITCHED_OFF_BY_DATA["stars_no_context"][0])


def _has_user_features(ctx: EvalContext) -> bool:
    from models.trainer import has_user_features
    return has_user_features(ctx.meta)


def run_offline_eval(data_dir, out_dir, models: Iterable[str] = ALL_MODELS, quick: bool = False,
                     preset: str = "benchmark", seed: int = 0, encoder: str = "minilm",
                     overrides: Optional[Mapping] = None, results_path=None, report_path=None,
                     dataset: Optional[str] = None, tagger: str = "keyword",
                     context: str = "auto", verbose: int = 0,
                     seeds: Optional[Sequence[int]] = None) -> dict:
    """Data half (leave-one-out) -> each model trained and scored -> results JSON + report.

    ``seeds`` (default: ``seed`` alone) scores every model once per seed; the targets then
    compare each model's mean (``seed_means``).  ``seed`` also draws the quick-mode users.

    Returns the results document (``{"dataset", "protocol", "results"}``) with
    ``"paths"`` (results, report), ``"skipped"`` ({model: reason}) and ``"wall_s"``.
    ``context`` (auto | on | off) decides the STARS models' calendar context
    (``stars.calendar_context``); with it and the item trend off, ``stars_no_context``
    would repeat ``stars`` and is not run (its earlier entries are dropped).  Likewise ``stars_no_user`` on data
    without user features, where STARS has no [USER] token (``models.trainer.fit_user_token``).
    """
    started = time.time()
    models = list(dict.fromkeys(models))
    unknown = [m for m in models if m not in ALL_MODELS]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; choose from {list(ALL_MODELS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results_path = Path(results_path or out_dir / "quality.json")
    report_path = Path(report_path or results_path.with_suffix(".md"))
    dataset = dataset or Path(os.path.abspath(data_dir)).name
    if quick:
        preset = QUICK.preset
    data_info = prepare_data(data_dir, out_dir, quick=quick, encoder=encoder, tagger=tagger,
                             seed=seed)
    use_context, context_reason = CC.calendar_context(data_info.get("source_dir") or data_dir,
                                                   context)
    ctx = EvalContext(str(pipeline_root(out_dir, quick)))
    entries, skipped, notes = [], {}, [context_reason]

    def skip(name: str, reason: str, note: str) -> None:
        """Once per model, whatever the number of seeds."""
        if name not in skipped:
            skipped[name] = reason
            notes.append(f"{name} {note}: {reason}")

    runs = [(name, s) for s in dict.fromkeys(seeds if seeds else [seed]) for name in models]
    for name, seed in runs:
        log.info("offline eval: %s (seed %d)", name, seed)
        if name == "popularity":
            entries += evaluate_popularity(ctx, seed)
        elif name == "cooccurrence":
            entries += evaluate_cooccurrence(ctx, seed)
        elif name == "lambdamart":
            from stars.evaluation import lambdamart
            if lambdamart.available():
                entries += evaluate_lambdamart(ctx, seed, quick)
            else:
                skip(name, "lightgbm is not installed (pip install lightgbm)", "skipped")
        elif name == "stars_no_context" and not _has_dynamic_context(
                preset, quick, CC.context_overrides("stars", use_context, overrides)):
            skip(name, f"the same model as stars here ({context_reason}; no item trend)",
                 "not run")
        elif name == "stars_no_user" and not _has_user_features(ctx):
            skip(name, f"the same model as stars here ({NO_USER_FEATURES})", "not run")
        else:
            entries += train_and_evaluate(ctx, name, preset, seed, quick,
                                          CC.context_overrides(name, use_context, overrides),
                                          verbose)
    test_examples = next((e["masked"]["num_examples"] for e in entries), None)
    protocol = _protocol(ctx, test_examples, quick, data_info, context_reason)
    document = merge_results(results_path, dataset, protocol, entries, dropped=skipped)
    wall = round(time.time() - started, 1)
    if data_info.get("wall_s") and not data_info.get("reused"):
        notes.append(f"data half (leave-one-out, encoder {encoder}): {data_info['wall_s']} s")
    write_report(document, report_path, wall_s=wall, notes=notes)
    return {**document, "paths": {"results": str(results_path), "report": str(report_path)},
            "skipped": skipped, "wall_s": wall, "data": data_info}


# ----------------------------------------------------------------------------------------
# command line (``python -m benchmarks.quality``; ``stars eval`` wires the same two calls)
# ----------------------------------------------------------------------------------------

def default_dataset_name(data_dir) -> str:
    """``out/beauty/data`` -> ``beauty``; ``/x/amazon-beauty`` -> ``amazon-beauty``."""
    path = Path(os.path.abspath(data_dir))
    return path.parent.name if path.name in ("data", "data-quick") else path.name


def add_arguments(parser) -> None:
    """The options of ``stars eval`` / ``benchmarks.quality`` on an argparse parser."""
    parser.add_argument("--data-dir", required=True, help="data directory in the contract "
                        "(e.g. from `stars data import-amazon`)")
    parser.add_argument("--out", default="out/quality",
                        help="work directory: <out>/pipeline holds the leave-one-out data half "
                             "(reused when present)")
    parser.add_argument("--results", default="",
                        help="results JSON (default benchmarks/results/quality_<dataset>.json); "
                             "entries of the models run replace earlier ones")
    parser.add_argument("--report", default="", help="Markdown report (default: the results "
                        "path with .md; PNG plots beside it)")
    parser.add_argument("--dataset", default="", help="dataset name in the results "
                        "(default from --data-dir)")
    parser.add_argument("--models", default=",".join(ALL_MODELS),
                        help=f"comma-separated subset of {','.join(ALL_MODELS)}")
    parser.add_argument("--quick", action="store_true",
                        help=f"CI size: preset {QUICK.preset}, {QUICK.epochs} epochs, "
                             f"at most {QUICK.max_users} users")
    parser.add_argument("--preset", default="benchmark",
                        help="model preset (models.config.PRESETS): benchmark | cpu | paper | tiny")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", default="",
                        help="comma-separated seeds (e.g. 0,1,2): every model is trained and "
                             "scored once per seed and the targets compare its mean")
    parser.add_argument("--encoder", default="minilm", help="item text encoder of the data half")
    parser.add_argument("--tagger", default="keyword")
    parser.add_argument("--context", default="auto", choices=CC.CHOICES,
                        help="calendar context of the STARS models: auto = on only when the "
                             "timestamps tell the time of day (off for day-granular review "
                             "dates)")
    parser.add_argument("--overrides", default="",
                        help='JSON of ModelConfig fields for every model, with optional '
                             'per-model dicts: \'{"epochs": 30, "sasrec_id": {"dropout": 0.5}}\'')
    parser.add_argument("--verbose", type=int, default=2, help="Keras fit verbosity (0, 1, 2)")


def parse_seeds(text: str) -> Optional[List[int]]:
    """``"0,1,2"`` -> [0, 1, 2]; "" -> None (the single ``--seed``)."""
    parts = [p.strip() for p in (text or "").split(",") if p.strip()]
    try:
        seeds = [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"--seeds takes comma-separated integers, got {text!r}") from None
    return seeds or None


def run_from_args(args) -> dict:
    dataset = args.dataset or default_dataset_name(args.data_dir)
    results = args.results or os.path.join("benchmarks", "results", f"quality_{dataset}.json")
    return run_offline_eval(
        args.data_dir, args.out, models=[m.strip() for m in args.models.split(",") if m.strip()],
        quick=args.quick, preset=args.preset, seed=args.seed, seeds=parse_seeds(args.seeds),
        encoder=args.encoder, tagger=args.tagger, context=args.context,
        overrides=json.loads(args.overrides) if args.overrides else None,
        results_path=results, report_path=args.report or None, dataset=dataset,
        verbose=args.verbose)


def summary_lines(document: dict) -> List[str]:
    """One line per result entry, for the console."""
    lines = []
    for e in document["results"]:
        m, u = e["masked"], e["unmasked"]
        lines.append(f"{_label(e):24s} masked HR@10 {_fmt(m['hr@10'])} NDCG@10 "
                     f"{_fmt(m['ndcg@10'])} | unmasked HR@10 {_fmt(u['hr@10'])} NDCG@10 "
                     f"{_fmt(u['ndcg@10'])} | cov@10 {_fmt(m.get('coverage@10'))} | "
                     f"{_fmt(e.get('wall_s'), 0)} s")
    return lines
