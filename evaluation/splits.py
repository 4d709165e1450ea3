"""The leave-one-out splits of the offline evaluation: the pipeline's data half, run once
under ``<out>/pipeline`` and reused (``prepare_data``), and its artefacts read back in
catalogue indices (``EvalContext``, ``SplitData``), every opening of a split counted per
model, so the test split is provably read once, after training."""
from __future__ import annotations

import dataclasses
import glob
import json
import logging
import os
import shutil
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from evaluation.protocol import QUICK

log = logging.getLogger(__name__)

PIPELINE_SUBDIR = "pipeline"              # the full run's data half
QUICK_PIPELINE_SUBDIR = "pipeline-quick"  # the quick run's (a user sample): never mixed
QUICK_DATA_SUBDIR = "data-quick"
MARKER_FILE = "offline_eval_data.json"
# Bumped whenever the data half's output changes meaning (2: taxonomy and brand in t_i),
# so a cached data half from older code is rebuilt, not silently reused.
DATA_HALF_VERSION = 2


def _table_file(data_dir: Path, name: str) -> Optional[Path]:
    """The table's file (the evaluation harness works on a local copy of the data)."""
    from stars.data import contract
    found = contract.find_table_file(data_dir, contract.TABLES[name])
    return Path(found) if found is not None else None


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
